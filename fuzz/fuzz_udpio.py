"""_udpio (recvmmsg/sendmmsg for the DNS server's UDP sockets) on real loopback sockets, held to
what it stands in for, socket.recvfrom and socket.sendto.

The sockets are made once per process (not per input, to keep executions per second up): two
servers, AF_INET on 127.0.0.1, a dual-stack AF_INET6 one on ::ffff:127.0.0.1 (its v4 clients
appear as ::ffff:127.0.0.x; bound there, not to "::", to stay on loopback) and an AF_INET6 one
on ::1, and up to 80 clients (127.0.0.1-3 and ::1, each on its own port), more than
the 64 slots of _udpio's address cache, so slots are replaced. The input picks a server and then
a sequence of:
  - clients sending datagrams of chosen sizes (0, 1, 512, 1500, ..., the largest of the family)
    and contents, one or a burst from many clients;
  - recv_batch with a chosen count (0, 65, -1 and others: ValueError / OverflowError / TypeError);
  - send_batch of replies of chosen sizes to chosen clients, some too large for the family
    (refused by the kernel: counted, the others still go), some with a namedtuple address or a
    bytes subclass (accepted); or the same batch with one malformed item (tests/unit/dns/
    test_udpio.py's table: bool port, bytes host, str subclass, embedded NUL, non-numeric host,
    ...), too many items, a tuple instead of a list, a bad family: the exception the contract
    names, and nothing sent.
The oracle: every datagram a client sent arrives exactly once, bytes equal, with the address
socket.recvfrom gives for that client (its getsockname(), mapped on the dual-stack server),
each client's in the order sent; send_batch's count is the number of datagrams larger than
the destination's limit (and sendto refuses each of those too); each client receives exactly
its replies, in order, before a marker the server then sends it with sendto.

The kernel's own limits are kept out of the oracle: receive buffers are 8 MiB and the queued
bytes are bounded, so no datagram is dropped for want of buffer space.

    python fuzz/fuzz_udpio.py [libFuzzer flags] [corpus dirs]   (run.py sets up the sanitizers)
"""

import collections
import select
import socket
import struct
import sys
import time

import atheris

import fuzz_support  # first: it swaps in the sanitizer builds

from edgeway.http import _udpio  # noqa: E402  (the sanitizer build, see fuzz_support)
from tests.unit.dns.test_udpio import V4_MAX, V6_MAX, bad_items, udp  # noqa: E402  (the unit tests' sockets and malformed items)

MAX_CLIENTS = 80
SIZES = [0, 1, 2, 4, 12, 100, 512, 1232, 1500, 4096, 9000, 65507]
QUEUED_MAX = 3 << 20                   # bytes (with overhead) left queued on one socket at most
OVERHEAD = 2048                        # per datagram queued, beyond its bytes (the skb; measured ~1 KiB)
WAIT = 2.0                             # seconds a datagram still missing is waited for


class Failure(AssertionError):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


class Address(tuple):
    """A tuple subclass address (as a namedtuple): accepted, the tuple's items used."""


class Data(bytes):
    pass


class Client:
    def __init__(self, index):
        self.v6 = index % 4 == 3
        host = "::1" if self.v6 else f"127.0.0.{1 + index % 3}"
        self.sock = udp(socket.AF_INET6 if self.v6 else socket.AF_INET, host)
        self.name = self.sock.getsockname()

    def address_on(self, server):
        """What recvfrom on `server` gives for this client (and what sendto takes to reach it)."""
        if server.family == socket.AF_INET6 and not self.v6:
            return ("::ffff:" + self.name[0], self.name[1], 0, 0)
        return self.name

    def limit_from(self, server):
        return V6_MAX if self.v6 else V4_MAX


class Sockets:
    """Made once per process; every input leaves them empty."""

    def __init__(self):
        # (v4 clients talk to the first two, v6 clients to the third: see Run.pick_client)
        self.servers = [udp(socket.AF_INET, "127.0.0.1"), udp(socket.AF_INET6, "::ffff:127.0.0.1", dual=True),
                        udp(socket.AF_INET6, "::1")]
        self.clients = [None] * MAX_CLIENTS

    def client(self, index):
        if self.clients[index] is None:
            self.clients[index] = Client(index)
        return self.clients[index]


SOCKETS = None


class Run:
    def __init__(self, fdp, server):
        self.fdp = fdp
        self.server = server
        self.family = server.family
        self.v6_clients = server.getsockname()[0] == "::1"     # the server v6 clients reach
        self.pending = collections.defaultdict(collections.deque)    # address -> data not yet received
        self.queued = 0
        self.serial = 0

    def pick_client(self):
        index = self.fdp.ConsumeIntInRange(0, MAX_CLIENTS - 1)
        if self.v6_clients:
            index = index - index % 4 + 3     # (v6 clients are those with index % 4 == 3)
            if index >= MAX_CLIENTS:
                index -= 4
        elif index % 4 == 3:
            index -= 1
        return SOCKETS.client(index)

    def payload(self, size):
        self.serial += 1
        pattern = self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 8)) or b"\xa5"
        data = struct.pack("!I", self.serial) + pattern * (size // len(pattern) + 1)
        return data[:size]

    def size(self, limit):
        if self.fdp.ConsumeIntInRange(0, 7) == 0:
            return self.fdp.ConsumeIntInRange(0, limit)
        return min(self.fdp.PickValueInList(SIZES + [limit]), limit)

    # -- clients -> server, checked through recv_batch
    def client_send(self, client, size):
        if self.queued + size + OVERHEAD > QUEUED_MAX:
            self.receive_all()
        data = self.payload(size)
        sent = client.sock.sendto(data, ("::1" if client.v6 else "127.0.0.1", self.server.getsockname()[1]))
        check(sent == len(data), "sendto sent part of a datagram")
        self.pending[client.address_on(self.server)].append(data)
        self.queued += size + OVERHEAD

    def receive(self, count):
        got = _udpio.recv_batch(self.server.fileno(), count)
        check(type(got) is list and len(got) <= count, f"recv_batch({count}) gave {len(got)} items")
        for item in got:
            check(type(item) is tuple and len(item) == 2, f"item {item!r:.100}")
            data, address = item
            check(type(data) is bytes and type(address) is tuple, f"item types {type(data)} {type(address)}")
            queue = self.pending.get(address)
            check(queue, f"a datagram from {address!r}, which sent nothing (more) (a wrong address?)")
            expected = queue.popleft()
            check(data == expected, f"from {address}: {len(data)} bytes {data[:8]!r}, expected {len(expected)}"
                  f" bytes {expected[:8]!r} (lost, duplicated, reordered or corrupted)")
            self.queued -= len(data) + OVERHEAD
        return got

    def waiting(self):
        return sum(len(q) for q in self.pending.values())

    def receive_all(self):
        deadline = time.monotonic() + WAIT
        while self.waiting() and time.monotonic() < deadline:
            if not self.receive(self.fdp.PickValueInList([1, 16, 64]) if self.fdp.remaining_bytes() else 64):
                select.select([self.server], [], [], 0.05)
        missing = {a: len(q) for a, q in self.pending.items() if q}
        check(not missing, f"datagrams never received: {missing}")
        check(_udpio.recv_batch(self.server.fileno(), 64) == [], "a datagram more than was sent")
        self.queued = 0

    def recv_op(self):
        count = self.fdp.PickValueInList([1, 2, 3, 7, 32, 63, 64, 0, 65, -1, 1000, -(1 << 31), 1 << 31, 1.0])
        if isinstance(count, float):
            expected = TypeError
        elif count > (1 << 31) - 1:
            expected = OverflowError
        elif 1 <= count <= 64:
            self.receive(count)
            return
        else:
            expected = ValueError
        try:
            _udpio.recv_batch(self.server.fileno(), count)
        except expected:
            return
        raise Failure(f"recv_batch(fd, {count!r}) did not raise {expected.__name__}")

    # -- server -> clients through send_batch
    def reply_op(self):
        fdp = self.fdp
        items, expected = [], []
        for _ in range(fdp.ConsumeIntInRange(0, 64 if fdp.ConsumeBool() else 8)):
            client = self.pick_client()
            limit = client.limit_from(self.server)
            size = self.size(limit)
            if fdp.ConsumeIntInRange(0, 5) == 0:
                size = fdp.PickValueInList([limit + 1, limit + 2, limit + 1000, 1 << 17])
            data = self.payload(size)
            address = client.address_on(self.server)
            kind = fdp.ConsumeIntInRange(0, 15)
            if kind == 0:
                address = Address(address)
            elif kind == 1:
                data = Data(data)
            items.append((data, address))
            expected.append((client, data, size > limit))
        how = fdp.ConsumeIntInRange(0, 9)
        if how == 0 and items:                # one malformed item: raises, nothing sent
            good = items[0][1]
            bad, error = fdp.PickValueInList(bad_items(tuple(good), v6=self.family == socket.AF_INET6))
            position = fdp.ConsumeIntInRange(0, len(items) - 1)
            items[position] = bad
            self.refused(items, error, expected)
        elif how == 1:                         # too many
            first = SOCKETS.client(3 if self.v6_clients else 0)    # (one this server can reach)
            items += [(b"x", first.address_on(self.server))] * (fdp.ConsumeIntInRange(65, 70) - len(items))
            self.refused(items, ValueError, expected + [(first, b"x", True)])
        elif how == 2:
            self.refused(tuple(items), TypeError, expected)
        elif how == 3:
            self.refused(items, ValueError, expected, family=fdp.PickValueInList([0, socket.AF_UNIX, 99, -1]))
        else:
            failed = _udpio.send_batch(self.server.fileno(), self.family, items)
            refused = sum(1 for _, _, too_big in expected if too_big)
            check(failed == refused, f"send_batch said {failed} failed, {refused} were too large")
            for client, data, too_big in expected:
                if too_big:                    # the oracle: sendto refuses it too
                    try:
                        self.server.sendto(data, client.address_on(self.server))
                    except OSError:
                        pass
                    else:
                        raise Failure(f"sendto took {len(data)} bytes: the size oracle is wrong")
            self.delivered(expected)

    def refused(self, items, error, expected, family=None):
        try:
            _udpio.send_batch(self.server.fileno(), self.family if family is None else family, items)
        except error:
            pass
        else:
            raise Failure(f"send_batch did not raise {error.__name__} for {items!r:.300}")
        self.delivered([(c, d, True) for c, d, _ in expected])

    def delivered(self, expected):
        """Each client got exactly its datagrams that were not refused, in order, then the marker."""
        wanted = {}
        for client, data, refused in expected:
            wanted.setdefault(client, [])
            if not refused:
                wanted[client].append(bytes(data))
        for client, datagrams in wanted.items():
            marker = b"marker-%d" % self.serial
            self.server.sendto(marker, client.address_on(self.server))
            got = []
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                if not select.select([client.sock], [], [], 0.2)[0]:
                    continue
                data, source = client.sock.recvfrom(1 << 17)
                check(source[1] == self.server.getsockname()[1], f"a datagram from {source}, not the server")
                if data == marker:
                    break
                got.append(data)
            else:
                raise Failure(f"the marker never reached {client.name}")
            check(got == datagrams, f"{client.name} received {[len(d) for d in got]} bytes,"
                  f" expected {[len(d) for d in datagrams]}")

    def op(self):
        fdp = self.fdp
        op = fdp.ConsumeIntInRange(0, 7)
        if op <= 2:
            client = self.pick_client()
            self.client_send(client, self.size(client.limit_from(self.server)))
        elif op == 3:                          # a burst from many clients: the cache's slots replaced
            start = fdp.ConsumeIntInRange(0, MAX_CLIENTS - 1)
            size = fdp.PickValueInList([0, 1, 12, 100])
            for k in range(fdp.ConsumeIntInRange(1, MAX_CLIENTS)):
                index = (start + k) % MAX_CLIENTS
                if (index % 4 == 3) != self.v6_clients:
                    continue
                self.client_send(SOCKETS.client(index), size)
        elif op <= 5:
            self.recv_op()
        else:
            self.reply_op()


def one_input(data: bytes) -> None:
    global SOCKETS
    if SOCKETS is None:
        SOCKETS = Sockets()
    fdp = atheris.FuzzedDataProvider(data)
    run = Run(fdp, SOCKETS.servers[fdp.ConsumeIntInRange(0, 2)])
    try:
        for _ in range(fdp.ConsumeIntInRange(1, 32)):
            if fdp.remaining_bytes() == 0:
                break
            run.op()
        run.receive_all()
    except Failure as exc:
        fuzz_support.mismatch(f"_udpio: {exc}", data)
        raise


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
