"""Listening TCP sockets for the listeners that keep their sockets in an epoll set of their
own (the L4 relay, the plain-HTTP listener): one per address the host name resolves to; and
the descriptor limit every listener lifts before it listens."""

from __future__ import annotations

import logging
import resource
import socket

log = logging.getLogger("edgeway.listening")


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
