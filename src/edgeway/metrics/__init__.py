"""Metrics: counted in the hot path as plain integers on the objects that own them, rendered in
the Prometheus text format (prometheus-client) only when scraped (docs/operations.md)."""
