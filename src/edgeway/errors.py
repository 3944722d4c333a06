"""The root of edgeway's error hierarchy. Each area defines its own subclasses where raised."""


class EdgewayError(Exception):
    """An error with a message fit for a person: what was wrong, where, and what to do."""


class ConfigError(EdgewayError):
    """The config is invalid; the message names file, line and key (one error per line)."""
