"""The reload plan of an L4 listener (tcp.py, udp.py): nothing to prepare beyond checking the
new config, so commit() hands config and upstream to the service once, abort() forgets them."""

from __future__ import annotations


class L4ReloadPlan:
    def __init__(self, service, config, upstream):
        self.service, self.config, self.upstream = service, config, upstream
        self.changes: list[str] = []
        self.done = False

    def commit(self) -> None:
        if not self.done:
            self.done = True
            self.service._commit(self.config, self.upstream)

    def abort(self) -> None:
        self.done = True
