"""Listening TCP sockets for the listeners that keep their sockets in an epoll set of their
own (the L4 relay, the plain-HTTP listener): one per address the host name resolves to; the
descriptor limit every listener lifts before it listens; and, in a worker process, the
sockets it inherited from the supervisor (`inherited`), which every service takes before it
would bind one of its own (edgeway.workers.sockets)."""

from __future__ import annotations

import logging
import resource
import socket

log = logging.getLogger("edgeway.listening")

# In a worker (edgeway.workers.worker): (kind, listen text) -> the inherited sockets; None in
# a single process, where every service binds its own.
_inherited: dict[tuple[str, str], list[socket.socket]] | None = None


def set_inherited(sockets: dict[tuple[str, str], list[socket.socket]] | None) -> None:
    """The worker's registry, from the supervisor's `init` and `reload` messages."""
    global _inherited
    _inherited = sockets


# In a worker: its index in the group (0 is the first); None in a single process. Work that
# one process of the group must do, and only one (a zone's NOTIFYs), is done by worker 0.
_worker_index: int | None = None


def set_worker_index(index: int | None) -> None:
    global _worker_index
    _worker_index = index


def leads_group() -> bool:
    """Whether this process does the group's one-process work: a single process, or worker 0."""
    return _worker_index in (None, 0)


def in_worker() -> bool:
    """Whether this process is a worker of a group (an L4 udp listener then binds with
    SO_REUSEPORT beside its siblings)."""
    return _inherited is not None


def inherited(kind: str, listen: str) -> list[socket.socket] | None:
    """The sockets the supervisor opened for `listen` (the config's text of the address) as
    `kind` ("tcp" or "udp"), or None when this process binds its own. Each call returns new
    descriptors (dup) in non-blocking mode: the service owns and closes them, the registry
    keeps its own, so a listener replaced by another on the same address (a reload) finds
    the socket still there."""
    if _inherited is None:
        return None
    sockets = _inherited.get((kind, listen))
    if not sockets:
        return None
    out = []
    for sock in sockets:
        copy = sock.dup()
        copy.setblocking(False)
        out.append(copy)
    return out


def raise_fd_limit(wanted: int, name: str) -> None:
    """Lift the soft file descriptor limit towards `wanted` (a proxied TCP connection or an
    HTTP client with a request in flight takes two descriptors, a UDP flow one), as nginx's
    worker_rlimit_nofile does: a login shell's or systemd's soft limit of 1024 would refuse
    the 1,000th client while the hard limit allows far more. Warn when even the hard limit
    is clearly too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted and soft != resource.RLIM_INFINITY:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < 0.9 * wanted:
        log.warning("%s: the file descriptor limit (%d) is below the %d that max_connections "
                    "needs; raise `ulimit -n`", name, soft, wanted)


def unique_addresses(infos):
    """getaddrinfo's results, each socket address once (it may list one several times)."""
    seen = set()
    for info in infos:
        if info[4] not in seen:
            seen.add(info[4])
            yield info


def listening_sockets(infos, what: str, where, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for getaddrinfo's `infos` (each address once;
    SO_REUSEADDR; an IPv6 socket takes IPv6 only). OSError naming `what` ("tcp listener web")
    and `where` if one cannot be bound; none is left open then."""
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, sockaddr in unique_addresses(infos):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise OSError(exc.errno, f"{what}: cannot listen on {where}: {exc.strerror}") from exc
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
