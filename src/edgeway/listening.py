"""Listening TCP sockets for the listeners that keep their sockets in an epoll set of their
own (the L4 relay, the plain-HTTP listener): one per address the host name resolves to."""

from __future__ import annotations

import socket


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
