"""Upstream queries over UDP (TCP when the answer is truncated): the resolver's only sockets.

Anti-spoofing (RFC 5452): every query gets a fresh random ID from the system's CSPRNG and its
own UDP socket on a random source port, connected to the server (the kernel then drops
datagrams from any other address or port, and an ICMP refusal surfaces at once as
"unreachable"). A datagram is accepted only if it comes from the server's address and port,
carries the query's ID, has QR set and repeats the question exactly (name, type, class);
anything else is counted in `rejected` and the wait goes on until the query's timeout. TC=1
repeats the query over TCP with a new ID (RFC 7766).

Spare sockets: a few query sockets are created ahead (`socket()` and their epoll registration,
a third of a query's set-up and several times more in the first question after an idle spell)
when the loop starts and once a resolution has settled (`replenish`, after its answer has left).
A spare is neither bound nor connected: it has no port until its query takes it, draws a random
one and binds it, so nothing about the next query's source port exists before the query does.
Each socket serves one query and is then closed; the spares are bounded (SPARES per address
family) and closed with the transport.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.rdatatype

from edgeway.dns.resolver.resolution import ERROR, TIMEOUT, UNREACHABLE, Request
from edgeway.dns.resolver.wire import parse

_HEADER = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_OPT = struct.Struct("!BHHIH")       # root owner, type OPT, payload size, ext-rcode/flags, rdlen
PORT_RANGE = (1024, 65535)
SPARES = 4           # unbound query sockets kept ready per address family (see the module's docstring)
# The query sockets are the C type under `socket.socket`: the Python class adds an __init__, a
# close() and reference counting for makefile() that a one-datagram socket never uses, on every
# hop of a resolution. (A module attribute, so that a test can watch every socket opened.)
_udp_socket = _socket.socket
_QR, _TC, _RD, _OPCODE = int(dns.flags.QR), int(dns.flags.TC), int(dns.flags.RD), 0x7800


def _name_wire(name: dns.name.Name) -> bytes:
    """`name.to_wire()` (uncompressed), without dnspython's per-label writes."""
    if not name.is_absolute():
        return name.to_wire()   # (raises NeedAbsoluteNameOrOrigin, as before)
    return b"".join([bytes((len(label),)) + label for label in name.labels])


@dataclass
class TransportStats:
    sent_udp: int = 0
    sent_tcp: int = 0
    rejected: int = 0      # datagrams that did not match the query (spoofing attempts, stray answers)
    timeouts: int = 0
    unreachable: int = 0


def parse_response(data: bytes, rdtype: int | None = None) -> dns.message.Message:
    """Parse an upstream response, skipping the sections nobody will read.

    Parsing is most of a resolution's CPU time (dnspython hashes every rdata it reads).
    - In a response with answers the additional section is never read (glue only matters in
      a referral): its count is zeroed and its bytes left unparsed.
    - If the answer section holds an RRset of the asked type (`rdtype`), the answer is final
      and the authority section (typically the zone's NS set) is not read either. Otherwise
      (a CNAME chain that ends elsewhere, a negative answer) authority is parsed: the SOA.
    The common case (A, AAAA, NS, CNAME, DNAME, SOA, OPT) is read by `wire.parse`, a
    hand-written parser about three times faster; anything else goes to dnspython.
    """
    if len(data) < 12 or data[6:8] == b"\0\0" or data[8:12] == b"\0\0\0\0":
        return parse(data) or dns.message.from_wire(data, ignore_trailing=True)
    if rdtype is not None and rdtype != dns.rdatatype.ANY:
        answer_only = parse(data, 1) or dns.message.from_wire(data[:8] + b"\0\0\0\0" + data[12:],
                                                              ignore_trailing=True)
        if any(rrset.rdtype == rdtype for rrset in answer_only.answer):
            return answer_only
    return parse(data, 2) or dns.message.from_wire(data[:10] + b"\0\0" + data[12:], ignore_trailing=True)


def _random_port() -> int:
    """Uniform in PORT_RANGE from the system CSPRNG (two bytes, drawn again below 1024)."""
    while True:
        port = int.from_bytes(os.urandom(2), "big")
        if PORT_RANGE[0] <= port <= PORT_RANGE[1]:
            return port


def _bind_random_port(sock: socket.socket, family: int, port: int = 0) -> None:
    """Bind to a random port of PORT_RANGE; `port`, a random 16-bit number already drawn, is
    the first try when it falls in the range."""
    host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    for _ in range(10):
        if not PORT_RANGE[0] <= port <= PORT_RANGE[1]:
            port = _random_port()
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            port = 0
    sock.bind((host, 0))   # the kernel's choice is randomised too (Linux ephemeral ports)


class _Poller:
    """The query sockets of one transport in an epoll set of its own, which the event loop
    watches as a single descriptor.

    Why: `loop.add_reader` gives every socket a libuv poll handle (an allocation, four epoll
    calls with libuv's checks, a deferred close): 7-10 us a query against about 1 us for one
    `epoll_ctl` here. A socket leaves the set when it is closed (the kernel drops a closed
    descriptor from every epoll set), so removal is only forgetting its callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.readers: dict[int, object] = {}
        # Spare sockets by family: created, non-blocking, in the epoll set; no port, no peer.
        self.spares: dict[int, list] = {socket.AF_INET: [], socket.AF_INET6: []}
        self.used6 = False
        loop.add_reader(self.epoll.fileno(), self._ready)

    def take(self, family: int):
        """A fresh socket of `family`, already in the epoll set: a spare, or a new one."""
        spares = self.spares[family]
        if spares:
            return spares.pop()
        if family == socket.AF_INET6:
            self.used6 = True    # (IPv6 spares only for a resolver that has used IPv6)
        return self._fresh(family)

    def _fresh(self, family: int):
        """A new non-blocking socket of `family` in the epoll set (closed again if that fails)."""
        sock = _udp_socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)   # (no ioctl)
        try:
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        except BaseException:
            sock.close()
            raise
        return sock

    def refill(self, family: int) -> None:
        """Bring the spares of `family` back to SPARES (off a query's path: after its answer
        has been handed on). A failure (out of descriptors) only means no spare."""
        spares = self.spares[family]
        if self.epoll.closed:
            return
        while len(spares) < SPARES:
            try:
                spares.append(self._fresh(family))
            except OSError:
                return

    def add(self, fd: int, callback) -> None:
        """Watch `fd` (a socket from `take`: already in the epoll set)."""
        self.readers[fd] = callback

    def remove(self, fd: int) -> None:
        """Forget `fd` (the caller closes it next, which takes it out of the epoll set)."""
        self.readers.pop(fd, None)

    def _ready(self) -> None:
        for fd, _events in self.epoll.poll(0):   # (readable, or an error such as an ICMP refusal)
            callback = self.readers.get(fd)
            if callback is not None:
                callback()

    def close(self) -> None:
        for spares in self.spares.values():
            while spares:
                spares.pop().close()
        if not self.epoll.closed:
            if not self.loop.is_closed():
                self.loop.remove_reader(self.epoll.fileno())
            self.epoll.close()


class Transport:
    def __init__(self, payload: int = 1232) -> None:
        self.payload = payload
        self.stats = TransportStats()
        self._pollers: dict[asyncio.AbstractEventLoop, _Poller] = {}

    def _poller(self, loop: asyncio.AbstractEventLoop) -> _Poller:
        poller = self._pollers.get(loop)
        if poller is None:
            for old in [old for old in self._pollers if old.is_closed()]:
                self._pollers.pop(old).close()
            poller = self._pollers[loop] = _Poller(loop)
        return poller

    def prepare(self) -> None:
        """Create the running loop's epoll set and its IPv4 spare sockets now rather than on
        the first query."""
        self._poller(asyncio.get_running_loop()).refill(socket.AF_INET)

    def replenish(self) -> None:
        """Bring the running loop's spare sockets back to SPARES per family used. The resolver
        calls this once a resolution has settled (its answer sent): off every query's path. (A
        query that finds no spare makes its socket itself, as before.)"""
        poller = self._pollers.get(asyncio.get_running_loop())
        if poller is not None:
            poller.refill(socket.AF_INET)
            if poller.used6:
                poller.refill(socket.AF_INET6)

    def close(self) -> None:
        """Close the epoll sets (queries still in flight must have been cancelled)."""
        for poller in self._pollers.values():
            poller.close()
        self._pollers.clear()

    def _query(self, request: Request, qid: int | None = None) -> tuple[int, bytes]:
        """(ID, wire) of the query: built by hand, it is on every hop of a cold resolution
        (dnspython's make_query + to_wire cost ten times more for these fixed 12 + n + 15 bytes).
        `qid`: a random ID already drawn from the system CSPRNG; else one is drawn here."""
        if qid is None:
            qid = int.from_bytes(os.urandom(2), "big")     # (the system CSPRNG, as SystemRandom)
        flags = _RD if request.recursion_desired else 0
        wire = (_HEADER.pack(qid, flags, 1, 0, 0, 1) + _name_wire(request.qname)
                + _QTAIL.pack(request.rdtype, request.rdclass) + _OPT.pack(0, 41, self.payload, 0, 0))
        return qid, wire

    @staticmethod
    def _matches(response: dns.message.Message, qid: int, request: Request) -> bool:
        """ID, QR, opcode QUERY and exactly our question (RFC 5452 section 9.1)."""
        flags = int(response.flags)     # (dnspython's flag enums have Python-level operators)
        if response.id != qid or not flags & _QR or flags & _OPCODE:
            return False
        if len(response.question) != 1:
            return False
        question = response.question[0]
        # (The same labels is the usual case and needs no case-insensitive Name comparison.)
        return ((question.name.labels == request.qname.labels or question.name == request.qname)
                and question.rdtype == request.rdtype and question.rdclass == request.rdclass)

    def send(self, request: Request, done, timeout: float | None = None,
             loop: asyncio.AbstractEventLoop | None = None) -> "_Exchange":
        """Send `request`; `done(response, error, rtt)` is called once, later, from the event
        loop: (response, None, rtt) or (None, TIMEOUT|UNREACHABLE|ERROR, elapsed). `timeout`
        (the resolution's time left) shortens the request's own when it is smaller.

        Callbacks, not a coroutine: the resolver handles a response and sends its next query
        from the socket's readable callback, with no task to wake in between (that wake-up, its
        future and the coroutine frames above it were a tenth of an upstream query's cost).
        `.cancel()` on the returned exchange abandons it (socket closed, `done` never called).
        `loop`: the running loop, when the caller has it (CPython 3.11's get_running_loop()
        makes a getpid() system call each time)."""
        exchange = _Exchange(self, request, done, timeout, loop)
        exchange.start()
        return exchange

    async def query(self, request: Request, timeout: float | None = None
                    ) -> tuple[dns.message.Message | None, str | None, float]:
        """`send` as a coroutine: (response, None, rtt) or (None, TIMEOUT|UNREACHABLE|ERROR, elapsed)."""
        future = asyncio.get_running_loop().create_future()
        exchange = self.send(request, lambda *outcome: future.done() or future.set_result(outcome), timeout)
        try:
            return await future
        finally:
            exchange.cancel()

    async def _tcp(self, request: Request, deadline: float):
        qid, wire = self._query(request)
        writer = None
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, TIMEOUT
            async with asyncio.timeout(remaining):
                reader, writer = await asyncio.open_connection(request.address, request.port)
                writer.write(len(wire).to_bytes(2, "big") + wire)
                self.stats.sent_tcp += 1
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
            response = parse_response(data, request.rdtype)
            if not self._matches(response, qid, request):
                self.stats.rejected += 1
                return None, ERROR
            return response, None
        except TimeoutError:
            return None, TIMEOUT
        except ConnectionRefusedError:
            return None, UNREACHABLE
        except (OSError, asyncio.IncompleteReadError, dns.exception.DNSException):
            return None, ERROR
        finally:
            if writer is not None:
                writer.close()


class _Exchange:
    """One upstream query over UDP (then TCP if truncated), driven by loop callbacks."""

    __slots__ = ("transport", "request", "done", "started", "deadline", "loop", "qid", "wire", "sock",
                 "fd", "poller", "timer", "tcp", "finished")

    def __init__(self, transport: Transport, request: Request, done, timeout: float | None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.transport, self.request, self.done = transport, request, done
        self.started = time.monotonic()
        self.deadline = self.started + (request.timeout if timeout is None else min(timeout, request.timeout))
        self.loop = loop or asyncio.get_running_loop()
        self.sock = self.timer = self.tcp = None
        self.fd = -1
        self.finished = False

    def start(self) -> None:
        request, loop = self.request, self.loop
        # One draw from the system CSPRNG for both the ID and the source port (RFC 5452).
        draw = os.urandom(4)
        self.qid, self.wire = self.transport._query(request, int.from_bytes(draw[:2], "big"))
        port = int.from_bytes(draw[2:], "big")
        family = socket.AF_INET6 if ":" in request.address else socket.AF_INET
        try:
            self.poller = poller = self.transport._poller(loop)
            self.sock = sock = poller.take(family)    # (fresh: no port yet, never used before)
            _bind_random_port(sock, family, port)
            sock.connect((request.address, request.port))
            sock.send(self.wire)
            self.transport.stats.sent_udp += 1
            self.fd = fd = sock.fileno()
            poller.add(fd, self._readable)
            self.timer = loop.call_later(max(0.0, self.deadline - time.monotonic()), self._finish, None, TIMEOUT)
        except OSError as exc:
            error = UNREACHABLE if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                                                 errno.EADDRNOTAVAIL) else ERROR
            self._close()
            self.timer = loop.call_soon(self._finish, None, error)   # `done` never runs inside send()

    def _readable(self) -> None:
        sock, request, stats = self.sock, self.request, self.transport.stats
        while not self.finished:
            try:
                data, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # ICMP port/host unreachable on the connected socket
                self._finish(None, UNREACHABLE if isinstance(exc, ConnectionError)
                             or exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else ERROR)
                return
            if peer[0] != request.address or peer[1] != request.port or data[:2] != self.wire[:2]:
                stats.rejected += 1
                continue
            try:
                response = parse_response(data, request.rdtype)
            except Exception:
                stats.rejected += 1
                continue
            if not Transport._matches(response, self.qid, request):
                stats.rejected += 1
                continue
            if int(response.flags) & _TC:
                self._close()
                self.tcp = self.loop.create_task(self._over_tcp())
                return
            self._finish(response, None)

    async def _over_tcp(self) -> None:
        response, error = await self.transport._tcp(self.request, self.deadline)
        self._finish(response, error)

    def _close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.fd >= 0:
            self.poller.remove(self.fd)
            self.fd = -1
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _finish(self, response, error) -> None:
        if self.finished:
            return
        self.finished = True
        stats = self.transport.stats
        if error == TIMEOUT:
            stats.timeouts += 1
        elif error == UNREACHABLE:
            stats.unreachable += 1
        # `done` first (it sends the next query, or the client's answer), then the socket is
        # closed: the close is off the critical path. (`finished` is set: nothing runs twice.)
        try:
            self.done(response, error, time.monotonic() - self.started)
        finally:
            self._close()

    def cancel(self) -> None:
        """Abandon the query: nothing is counted or reported."""
        if not self.finished:
            self.finished = True
            self._close()
            if self.tcp is not None:
                self.tcp.cancel()
