"""_udpio (recvmmsg/sendmmsg) against what it stands in for, socket.recvfrom and socket.sendto,
on real loopback sockets: every datagram arrives once with its bytes and the address recvfrom
would give (v4, v6, v4 clients of a dual-stack socket as ::ffff:a.b.c.d, link-local with its
scope in a private network namespace), whatever the address cache holds; send_batch sends what
sendto would, counts what the kernel refuses, and on a malformed item raises and sends nothing.
(fuzz/fuzz_udpio.py drives the same contract with chosen inputs under ASan/UBSan.)"""

import collections
import errno
import os
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest

from edgeway.http import _udpio

V4_MAX = 65507                   # 65535 - 20 (IPv4 header) - 8 (UDP header)
V6_MAX = 65527                   # 65535 - 8: the IPv6 payload length excludes its own header
BUFFER = 1 << 22                 # receive buffers: large datagrams must not be dropped by the kernel


def udp(family=socket.AF_INET, host="127.0.0.1", dual=False):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def sockets():
    made = []

    def make(*args, **kwargs):
        made.append(udp(*args, **kwargs))
        return made[-1]
    yield make
    for sock in made:
        sock.close()


def mapped(name):
    """The address a dual-stack AF_INET6 socket gives (recvfrom) for a client's getsockname()."""
    if len(name) == 2:
        return ("::ffff:" + name[0], name[1], 0, 0)
    return name


def receive(server, expected, count=64, timeout=2.0):
    """recv_batch until `expected` datagrams came (or the time is up), then once more: nothing."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        batch = _udpio.recv_batch(server.fileno(), count)
        assert len(batch) <= count
        got += batch
        if len(got) < expected:
            select.select([server], [], [], 0.05)
    assert _udpio.recv_batch(server.fileno(), 64) == []
    return got


def drain(sock, timeout=0.5, until=None):
    """What sock received (recvfrom), waiting at most `timeout` for the first datagram; with
    `until`, stop after that datagram (sent last, so nothing of interest can follow it)."""
    got = []
    while select.select([sock], [], [], timeout if not got else 0.05)[0]:
        got.append(sock.recvfrom(1 << 17))
        if got[-1][0] == until:
            break
    return got


def test_v4_every_datagram_once_with_recvfrom_address(sockets):
    server = sockets()
    clients = [sockets() for _ in range(3)]
    sent = collections.defaultdict(list)
    for i in range(30):
        client = clients[i % 3]
        data = bytes([i]) * (i * 7)
        client.sendto(data, server.getsockname())
        sent[client.getsockname()].append(data)
    got = receive(server, 30, count=7)
    assert len(got) == 30
    by_address = collections.defaultdict(list)
    for data, address in got:
        assert type(data) is bytes and type(address) is tuple
        by_address[address].append(data)
    assert by_address == sent           # the address of each (as recvfrom), per-client order, bytes


def test_v6_address_has_four_fields(sockets):
    server = sockets(socket.AF_INET6, "::1")
    client = sockets(socket.AF_INET6, "::1")
    client.sendto(b"q", server.getsockname())
    client.sendto(b"r", server.getsockname())
    select.select([server], [], [], 1)
    first = server.recvfrom(100)                  # the reference, for the same client
    [(data, address)] = receive(server, 1)
    assert first == (b"q", client.getsockname())
    assert (data, address) == (b"r", first[1])


def test_dual_stack_gives_mapped_addresses(sockets):
    # (bound to the mapped loopback address, not "::": tests stay on loopback; v6 clients of
    # an AF_INET6 server are test_v6_address_has_four_fields' case)
    server = sockets(socket.AF_INET6, "::ffff:127.0.0.1", dual=True)
    port = server.getsockname()[1]
    v4 = sockets()
    v4.sendto(b"four", ("127.0.0.1", port))
    reference = sockets(socket.AF_INET6, "::ffff:127.0.0.1", dual=True)
    v4.sendto(b"ref", ("127.0.0.1", reference.getsockname()[1]))
    got = dict(receive(server, 1))
    assert got == {b"four": mapped(v4.getsockname())}
    assert got[b"four"] == reference.recvfrom(100)[1]          # what recvfrom gives the same client
    assert got[b"four"][0] == "::ffff:127.0.0.1"
    # and the reply goes back through send_batch, with the address as received
    assert _udpio.send_batch(server.fileno(), socket.AF_INET6, [(b"to4", got[b"four"])]) == 0
    assert drain(v4) == [(b"to4", ("127.0.0.1", port))]


@pytest.mark.parametrize("family,host,largest", [(socket.AF_INET, "127.0.0.1", V4_MAX),
                                                 (socket.AF_INET6, "::1", V6_MAX)])
def test_empty_and_largest_datagrams(sockets, family, host, largest):
    server, client = sockets(family, host), sockets(family, host)
    big = os.urandom(largest)
    for data in (b"", big, b"", b"\0"):
        client.sendto(data, server.getsockname())
    got = receive(server, 4, count=64)
    assert [data for data, _ in got] == [b"", big, b"", b"\0"]
    assert {address for _, address in got} == {client.getsockname()}


def test_count_limits(sockets):
    server, client = sockets(), sockets()
    for bad in (0, -1, 65, 1 << 20):
        with pytest.raises(ValueError, match="count must be 1 to 64"):
            _udpio.recv_batch(server.fileno(), bad)
    with pytest.raises(OverflowError):
        _udpio.recv_batch(server.fileno(), 1 << 40)
    assert _udpio.recv_batch(server.fileno(), 64) == []        # nothing waiting: [] (EAGAIN)
    for i in range(70):
        client.sendto(b"%d" % i, server.getsockname())
    select.select([server], [], [], 1)
    assert len(_udpio.recv_batch(server.fileno(), 1)) == 1
    assert len(_udpio.recv_batch(server.fileno(), 64)) == 64   # never more than count
    assert [d for d, _ in _udpio.recv_batch(server.fileno(), 64)] == [b"65", b"66", b"67", b"68", b"69"]
    assert _udpio.recv_batch(server, 64) == []                 # a socket object is a file descriptor too


def test_recv_errors_are_oserror(sockets):
    with pytest.raises(ValueError):                             # as socket functions: a negative fd
        _udpio.recv_batch(-5, 1)
    r, w = os.pipe()
    try:
        with pytest.raises(OSError):                            # not a socket: ENOTSOCK
            _udpio.recv_batch(r, 4)
    finally:
        os.close(r)
        os.close(w)


def test_send_batch_on_no_socket_raises(sockets):
    """A descriptor that is no socket is the caller's error, not datagrams the kernel refused:
    OSError as sendto raises (not every item counted as failed)."""
    item = (b"x", ("127.0.0.1", 9))
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as caught:
            _udpio.send_batch(w, socket.AF_INET, [item] * 3)
        assert caught.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
    os.close(closed)
    with pytest.raises(OSError) as caught:
        _udpio.send_batch(closed, socket.AF_INET, [item])
    assert caught.value.errno == errno.EBADF
    with pytest.raises(OSError):
        _udpio.recv_batch(closed, 1)
    assert _udpio.send_batch(closed, socket.AF_INET, []) == 0   # nothing to send: no system call


def test_cache_more_clients_than_slots(sockets):
    """80 clients (more than the 64 slots, so slots are replaced), three rounds: every address
    is right every time, and one client's repeated datagrams within a round share one tuple."""
    server = sockets()
    clients = [sockets() for _ in range(80)]
    for _ in range(3):
        for client in clients:
            client.sendto(b"a", server.getsockname())
            client.sendto(b"b", server.getsockname())
        got = receive(server, 160)
        assert len(got) == 160
        seen = collections.defaultdict(list)
        for data, address in got:
            seen[address].append((data, address))
        assert sorted(seen) == sorted(c.getsockname() for c in clients)
        assert all([d for d, _ in pairs] == [b"a", b"b"] for pairs in seen.values())


def test_same_client_same_tuple_object(sockets):
    server, client = sockets(), sockets()
    for data in (b"1", b"2", b"3"):
        client.sendto(data, server.getsockname())
    got = receive(server, 3)
    assert got[0][1] == client.getsockname()
    assert got[0][1] is got[1][1] is got[2][1]
    client.sendto(b"4", server.getsockname())
    assert receive(server, 1)[0][1] is got[0][1]               # across calls too


def test_send_batch_as_sendto(sockets):
    server = sockets()
    clients = [sockets() for _ in range(3)]
    items = [(b"%d" % i * (i * 100), clients[i % 3].getsockname()) for i in range(64)]
    assert _udpio.send_batch(server.fileno(), socket.AF_INET, items) == 0
    for k, client in enumerate(clients):
        expected = [(data, server.getsockname()) for data, address in items if address == client.getsockname()]
        assert drain(client) == expected
    assert _udpio.send_batch(server.fileno(), socket.AF_INET, []) == 0


@pytest.mark.parametrize("family,host,too_big", [(socket.AF_INET, "127.0.0.1", V4_MAX + 1),
                                                 (socket.AF_INET6, "::1", V6_MAX + 1)])
def test_send_batch_partial_failure_counted(sockets, family, host, too_big):
    server = sockets(family, host)
    a, b = sockets(family, host), sockets(family, host)
    items = [(b"one", a.getsockname()), (b"x" * too_big, a.getsockname()), (b"two", b.getsockname()),
             (b"y" * (too_big + 1000), b.getsockname()), (b"x" * too_big, a.getsockname()),
             (b"three", a.getsockname()), (b"z" * (too_big - 1), b.getsockname())]
    # the oracle: sendto refuses exactly those (EMSGSIZE)
    with pytest.raises(OSError):
        server.sendto(b"x" * too_big, a.getsockname())
    assert _udpio.send_batch(server.fileno(), family, items) == 3
    assert [d for d, _ in drain(a)] == [b"one", b"three"]
    assert [d for d, _ in drain(b)] == [b"two", b"z" * (too_big - 1)]


def test_send_batch_tuple_subclass_and_bytes_subclass(sockets):
    server, client = sockets(), sockets()
    Address = collections.namedtuple("Address", "host port")

    class Data(bytes):
        pass
    assert _udpio.send_batch(server.fileno(), socket.AF_INET, [(Data(b"d"), Address(*client.getsockname()))]) == 0
    assert drain(client) == [(b"d", server.getsockname())]


class Text(str):
    pass


class Port(int):
    pass


def bad_items(good, v6=False):
    """(items, exception) pairs, each with good items before (and after) the bad one."""
    host, port = good[:2]
    address = lambda *fields: fields   # noqa: E731
    cases = [
        ((b"x", address(host, True)), TypeError),                  # bool port (sendto would take it)
        ((b"x", address(host, Port(port))), TypeError),
        ((b"x", address(host, float(port))), TypeError),
        ((b"x", address(host, str(port))), TypeError),
        ((b"x", address(host.encode(), port)), TypeError),         # bytes host
        ((b"x", address(Text(host), port)), TypeError),
        ((b"x", address(None, port)), TypeError),
        ((b"x", address(host + "\0", port)), ValueError),          # embedded NUL
        ((b"x", address("\0" + host, port)), ValueError),
        ((b"x", address("localhost", port)), ValueError),          # numeric hosts only
        ((b"x", address("", port)), ValueError),
        ((b"x", address("\udc80", port)), ValueError),             # (UnicodeEncodeError)
        ((b"x", address(host, -1)), OverflowError),
        ((b"x", address(host, 65536)), OverflowError),
        ((b"x", address(host, 1 << 70)), OverflowError),
        ((b"x", address(host,)), TypeError),
        ((b"x", address(host, port, 0)), TypeError),
        ((b"x", [host, port]), TypeError),
        ((b"x", host), TypeError),
        ((bytearray(b"x"), good), TypeError),
        (("x", good), TypeError),
        ((b"x", good, 1), TypeError),
        ([b"x", good], TypeError),
        (b"x", TypeError),
        (None, TypeError),
    ]
    if v6:
        cases += [
            ((b"x", address(host, port, 1 << 20, 0)), OverflowError),  # flowinfo
            ((b"x", address(host, port, -1, 0)), OverflowError),
            ((b"x", address(host, port, 0, 1 << 32)), OverflowError),  # scope_id
            ((b"x", address(host, port, 0, True)), TypeError),
            ((b"x", address("127.0.0.1", port)), ValueError),
            ((b"x", address("::1%", port)), ValueError),
            ((b"x", address("::1%nosuchif", port)), ValueError),
        ]
    else:
        cases += [((b"x", address("::1", port)), ValueError),
                  ((b"x", address(host, port, 0, 0)), TypeError),
                  ((b"x", address("127.1", port)), ValueError),
                  ((b"x", address("127.0.0.1 ", port)), ValueError)]
    return cases


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_malformed_item_raises_and_sends_nothing(sockets, family, host):
    server, client = sockets(family, host), sockets(family, host)
    good = client.getsockname()
    for bad, error in bad_items(good, v6=family == socket.AF_INET6):
        for position in (0, 1, 5):
            items = [(b"good%d" % i, good) for i in range(position)] + [bad] + [(b"after", good)]
            with pytest.raises(error):
                _udpio.send_batch(server.fileno(), family, items)
            # a datagram on loopback from one socket to another keeps its order: if the marker
            # comes first, nothing of the failed batch went
            server.sendto(b"marker", good)
            assert drain(client, until=b"marker") == [(b"marker", server.getsockname())], (bad, position)


def test_send_batch_arguments(sockets):
    server, client = sockets(), sockets()
    item = (b"x", client.getsockname())
    with pytest.raises(ValueError, match="at most 64"):
        _udpio.send_batch(server.fileno(), socket.AF_INET, [item] * 65)
    with pytest.raises(TypeError, match="must be a list"):
        _udpio.send_batch(server.fileno(), socket.AF_INET, (item,))
    with pytest.raises(TypeError):
        _udpio.send_batch(server.fileno(), socket.AF_INET, iter([item]))
    with pytest.raises(ValueError, match="family"):
        _udpio.send_batch(server.fileno(), socket.AF_UNIX, [item])
    with pytest.raises(ValueError):
        _udpio.send_batch(-1, socket.AF_INET, [item])
    server.sendto(b"marker", client.getsockname())
    assert drain(client) == [(b"marker", server.getsockname())]
    assert _udpio.send_batch(server.fileno(), socket.AF_INET, [item] * 64) == 0
    assert len(drain(client)) == 64


NETNS_CHECK = r"""
import socket, sys
from edgeway.http import _udpio
lo = socket.if_nametoindex("lo")
def udp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("fe80::1", 0, 0, lo))
    s.setblocking(False)
    return s
server, client = udp(), udp()
client.sendto(b"a", server.getsockname())
client.sendto(b"b", server.getsockname())
import select
select.select([server], [], [], 1)
reference = server.recvfrom(100)
got = _udpio.recv_batch(server.fileno(), 4)
assert reference == (b"a", client.getsockname()), reference
assert got == [(b"b", reference[1])], (got, reference)
assert _udpio.send_batch(server.fileno(), socket.AF_INET6, [(b"c", got[0][1])]) == 0
select.select([client], [], [], 1)
assert client.recvfrom(100) == (b"c", server.getsockname())
print("ok", got)
"""


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare and ip")
def test_link_local_address_as_recvfrom():
    """A link-local client: recvfrom gives ('fe80::1', port, 0, scope) (CPython formats with
    inet_ntop since 3.7); the scope must not also appear as 'fe80::1%lo' (getnameinfo's form).
    Run in a private network namespace (unshare -rn) whose lo gets fe80::1."""
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user/network namespaces here: {probe.stderr.decode().strip()}")
    src = os.path.dirname(os.path.dirname(os.path.abspath(_udpio.__file__)))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(src))
    script = (f"ip link set lo up && ip addr add fe80::1/64 dev lo nodad && "
              f"exec {sys.executable} -c '{NETNS_CHECK}'")
    result = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, env=env,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_a_call_from_a_finalizer_inside_recv_batch_reads_its_own_socket(sockets):
    # Building the result allocates objects the cyclic GC tracks, so a collection, and with it
    # a finalizer, may run inside recv_batch; a nested call there must neither read into the
    # outer call's buffers nor hand it the nested socket's datagrams.
    import gc

    outer_server, outer_client = sockets(), sockets()
    inner_server, inner_client = sockets(), sockets()
    for i in range(8):
        outer_client.sendto(b"outer-%d" % i, outer_server.getsockname())
        inner_client.sendto(b"inner-%d-padding" % i, inner_server.getsockname())
    nested = []
    inside = [False]

    class Finalizer:
        def __del__(self):
            nested.append((inside[0], _udpio.recv_batch(inner_server.fileno(), 64)))

    gc.collect()
    threshold = gc.get_threshold()
    gc.disable()
    try:
        garbage = Finalizer()
        garbage.cycle = garbage          # only the cycle collector frees it
        del garbage
        fd = outer_server.fileno()
        # A collection a few tracked objects into the call: past the call's own argument
        # tuple, inside the building of the result (its list, then a tuple or two per datagram).
        gc.set_threshold(gc.get_count()[0] + 4)
        gc.enable()
        inside[0] = True
        got = _udpio.recv_batch(fd, 64)
        inside[0] = False
    finally:
        gc.set_threshold(*threshold)
        gc.enable()
    assert nested and nested[0][0], "the finalizer did not run inside recv_batch: the test proves nothing"
    assert got == [(b"outer-%d" % i, outer_client.getsockname()) for i in range(8)]
    assert nested[0][1] == [(b"inner-%d-padding" % i, inner_client.getsockname()) for i in range(8)]
