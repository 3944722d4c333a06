"""HttpListenerService: the runtime's handle on one http/https listener (start, reload,
drain, stop).

A reload never touches the listening socket: `prepare_reload` builds what can fail (the
router, the TLS contexts from the certificate files as they are now) and the plan's commit
swaps it into the ListenerContext that every connection reads for each request
(ListenerContext.apply). Drain (SIGTERM, or the listener left the config): the socket
closes at once, idle keep-alive connections close, a request in flight is answered with
`Connection: close` and its connection closes after it (docs/http.md, "Reload and drain").
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping

from edgeway.config.model import ListenerConfig
from edgeway.errors import EdgewayError
from edgeway.http.listener import ListenerContext
from edgeway.http.proxy import ClientConnection
from edgeway.http.rawio import PlainListener
from edgeway.http.routing import Router, compile_hash_key
from edgeway.http.tls import TlsSetup
from edgeway.listening import inherited, raise_fd_limit

log = logging.getLogger("edgeway.http")

DRAIN_POLL = 0.05   # seconds between looks at the connections left while draining


class HttpReloadPlan:
    """What `prepare_reload` built; `commit()` applies it (cannot fail), `abort()` drops it.
    Nothing opened here needs closing: abort only forgets."""

    def __init__(self, service: "HttpListenerService", config: ListenerConfig,
                 upstreams: Mapping[str, object], router: Router, tls: TlsSetup | None):
        self.service = service
        self.config = config
        self.upstreams = upstreams
        self.router = router
        self.tls = tls
        self.changes: list[str] = []   # (the runtime says "listener NAME: updated" itself)
        self.done = False

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        self.service._commit(self)

    def abort(self) -> None:
        self.done = True


class HttpListenerService:
    def __init__(self, config: ListenerConfig, upstreams: Mapping[str, object]):
        self.config = config
        self.upstreams = upstreams
        # Built here (not in start) so that `edgeway check` refuses a bad certificate too.
        self.tls = TlsSetup(config.tls, config.name) if config.protocol == "https" else None
        # The context the listening socket was made with: it stays for the socket's life, and
        # a reload's certificates are reached from it through its SNI callback (_commit)
        self._listen_tls = self.tls.context if self.tls is not None else None
        self.ctx: ListenerContext | None = None
        self.server: asyncio.AbstractServer | None = None    # https: asyncio's SSL transports
        self.plain: PlainListener | None = None              # http: our own epoll set (rawio.py)
        self.draining = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self.ctx = ctx = ListenerContext(config, self.upstreams, "https" if self.tls else "http", loop)
        factory = functools.partial(ClientConnection, ctx)
        # a client, and its server connection while a request is in flight
        raise_fd_limit(2 * config.limits.max_connections + 64, f"http listener {config.name}")
        if self.tls is not None:
            shared = inherited("tcp", str(config.listen))   # a worker: the supervisor's sockets
            if shared:
                self.server = _Servers([await loop.create_server(factory, sock=sock, ssl=self.tls.context,
                                                                 backlog=1024) for sock in shared])
            else:
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
        log.info("listener %s: %s on %s (%s)", config.name, config.protocol, config.listen, _what(config))

    # ------------------------------------------------------------------ reload

    async def prepare_reload(self, config: ListenerConfig, upstreams: Mapping[str, object]) -> HttpReloadPlan:
        """Build what the new `config` needs; change nothing. `upstreams`: the mapping as it
        will be after the reload. Raises EdgewayError (TlsError: a certificate or key that
        cannot be served, named) and leaves the listener as it was."""
        if config.protocol != self.config.protocol:
            raise EdgewayError(f"listener {self.config.name}: a reload keeps the protocol "
                               f"({self.config.protocol}); got {config.protocol}")
        missing = sorted({r.upstream for r in config.routes if r.upstream is not None} - set(upstreams))
        if missing:
            raise EdgewayError(f"listener {config.name}: routes name upstream(s) {', '.join(missing)} "
                           f"not in the new config")
        router = Router(config.routes, upstreams)
        for route in router.routes:   # what ListenerContext.apply does at commit, where it must not fail
            up = route.upstream
            if up is not None and up.algorithm in ("hash", "ip_hash"):
                try:
                    compile_hash_key(up.config.hash_key, up.algorithm)
                except ValueError as exc:
                    raise EdgewayError(f"listener {config.name}: upstream {up.name}: {exc}") from None
        # Certificates are read again even when the paths stay: a renewed file is the usual reason
        tls = TlsSetup(config.tls, config.name) if config.protocol == "https" else None
        return HttpReloadPlan(self, config, upstreams, router, tls)

    def _commit(self, plan: HttpReloadPlan) -> None:
        config = plan.config
        self.config = config
        self.upstreams = plan.upstreams
        if plan.tls is not None:
            # The listening socket's context stays; its SNI callback now moves each new
            # handshake to the new certificates (also without SNI: the callback runs for
            # every ClientHello). Handshakes done keep their certificate.
            self.tls = plan.tls
            self._listen_tls.sni_callback = plan.tls._sni
            self._listen_tls.minimum_version = plan.tls.context.minimum_version
        if self.ctx is None:   # not started: start() builds the context from self.config
            return
        raise_fd_limit(2 * config.limits.max_connections + 64, f"http listener {config.name}")
        self.ctx.apply(config, plan.router)
        self._close_pooled_to_removed(plan.upstreams)
        log.info("listener %s: reloaded (%s)", config.name, _what(config))

    def _close_pooled_to_removed(self, upstreams: Mapping[str, object]) -> None:
        """Idle pooled connections to servers that are in no upstream any more: closed now
        (one busy with a request at the commit goes back to the pool afterwards and is
        closed by the pool's idle timeout: no request asks for that server any more)."""
        live = {server for up in upstreams.values() for server in up.servers}
        pool = self.ctx.pool
        for server in [s for s in pool.idle if s not in live]:
            for conn in list(pool.idle.get(server, ())):
                conn.close()
            pool.idle.pop(server, None)

    # ------------------------------------------------------------------ drain, stop

    async def drain(self, deadline: float) -> None:
        """Stop taking connections now, close idle ones, let requests in flight finish (their
        responses say Connection: close); return when no connection is left or at `deadline`
        (loop.time()). stop() closes whatever is left."""
        loop = asyncio.get_running_loop()
        self.draining = True
        # synchronously, before the first await: the runtime may bind this address again
        # right after calling drain() (a listener replaced by one of another protocol)
        if self.server is not None:
            self.server.close()
        if self.plain is not None:
            self.plain.close()
        ctx = self.ctx
        if ctx is None:
            return
        ctx.draining = True
        for conn in list(ctx.connections):
            conn.drain()
        if ctx.connections:
            log.info("listener %s: draining %d connection(s)", self.config.name, len(ctx.connections))
        while any(map(_in_progress, ctx.connections)) and loop.time() < deadline:
            await asyncio.sleep(min(DRAIN_POLL, max(0.0, deadline - loop.time())))
        ctx.pool.close_all()
        ctx.access.flush()

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


class _Servers:
    """asyncio servers of one listener on inherited sockets (one per address its host name
    resolves to), closed as one."""

    def __init__(self, servers: list) -> None:
        self.servers = servers

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def wait_closed(self) -> None:
        for server in self.servers:
            await server.wait_closed()


def _in_progress(conn) -> bool:
    """Whether the drain waits for this client connection: it is open, or closed by the proxy
    with bytes still to send. A closed TLS connection stays in `connections` until the client
    answers the close_notify, which a client that is not reading (a pool's idle connection)
    never does: nothing is owed to it, so the drain does not wait for it (stop() ends it)."""
    return not conn.closed or conn.transport.get_write_buffer_size() > 0


def _what(config: ListenerConfig) -> str:
    return "redirect to " + config.redirect_https if config.redirect_https else f"{len(config.routes)} route(s)"
