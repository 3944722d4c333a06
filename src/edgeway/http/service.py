"""HttpListenerService: the runtime's handle on one http/https listener (start, stop)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping

from edgeway.config.model import ListenerConfig
from edgeway.http.listener import ListenerContext
from edgeway.http.proxy import ClientConnection
from edgeway.http.rawio import PlainListener
from edgeway.http.tls import TlsSetup
from edgeway.listening import raise_fd_limit

log = logging.getLogger("edgeway.http")


class HttpListenerService:
    def __init__(self, config: ListenerConfig, upstreams: Mapping[str, object]):
        self.config = config
        self.upstreams = upstreams
        # Built here (not in start) so that `edgeway check` refuses a bad certificate too.
        self.tls = TlsSetup(config.tls, config.name) if config.protocol == "https" else None
        self.ctx: ListenerContext | None = None
        self.server: asyncio.AbstractServer | None = None    # https: asyncio's SSL transports
        self.plain: PlainListener | None = None              # http: our own epoll set (rawio.py)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self.ctx = ctx = ListenerContext(config, self.upstreams, "https" if self.tls else "http", loop)
        factory = functools.partial(ClientConnection, ctx)
        # a client, and its server connection while a request is in flight
        raise_fd_limit(2 * config.limits.max_connections + 64, f"http listener {config.name}")
        if self.tls is not None:
            self.server = await loop.create_server(factory, config.listen.host, config.listen.port,
                                                   ssl=self.tls.context, reuse_address=True, backlog=1024)
        else:
            self.plain = PlainListener(loop, config.name, factory)
            try:
                self.plain.listen(config.listen.host, config.listen.port, str(config.listen), backlog=1024)
            except BaseException:
                self.plain.close_poller()
                self.plain = None
                raise
        ctx.start()
        what = "redirect to " + config.redirect_https if config.redirect_https else \
            f"{len(config.routes)} route(s)"
        log.info("listener %s: %s on %s (%s)", config.name, config.protocol, config.listen, what)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.plain is not None:
            self.plain.close()
        if self.ctx is not None:
            self.ctx.stop()
        if self.plain is not None:
            self.plain.close_poller()
            self.plain = None
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
            self.server = None
