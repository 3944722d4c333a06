"""The L7 HTTP proxy (issue 4): listeners, routing, balancing, health, sticky cookies, TLS.

Sans-IO: routing.py (routes, hash keys), messages.py (request checks, header rewriting),
responses.py (our own answers). Adapters: proxy.py (client side), pool.py (server side),
listener.py (shared state, timeouts, access log), tls.py, service.py.
"""
