"""The runtime API (`admin:` in the config) and its command-line client, `edgeway ctl`.

    api.AdminApi      sans-IO: Request(method, path, query, headers, body) -> Response
    server.AdminService   the asyncio HTTP/1.1 listener around it (start/stop/reload/drain)
    token             reading the token file; constant-time comparison
    ctl               `edgeway ctl`: the API from the terminal
    dashboard         `GET /dashboard`: the page and its files (dashboard/), no token needed

docs/operations.md ("Runtime API", "edgeway ctl", "Dashboard") lists the endpoints.
"""

from __future__ import annotations

__all__ = ["AdminService"]


def __getattr__(name: str):
    # Lazy: the config model imports edgeway.admin.token, and must not pull in asyncio servers.
    if name == "AdminService":
        from edgeway.admin.server import AdminService

        return AdminService
    raise AttributeError(name)
