"""The L7 HTTP proxy (issue 4): listeners, routing, balancing, health, sticky cookies, TLS.

Sans-IO: routing.py (routes, hash keys), messages.py (request checks, header rewriting),
responses.py (our own answers). Adapters: proxy.py (client connections), forward.py (their
server side: pick, connect, relay, retry), exchange.py (per-request state), pool.py (server
connections), lingering.py (lingering close), listener.py (shared state, timeouts, access
log), tls.py, service.py.
"""
