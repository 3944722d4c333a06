"""edgeway: the whole path a request takes to reach a server."""

__version__ = "0.1.0"
