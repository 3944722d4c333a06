"""Where the packets of a client connection are cut must not matter (RFC 9112 has no notion
of packets): any sequence of requests -- valid, invalid, with Content-Length and chunked
bodies, with trailers, over the limits, pipelined -- cut into packets gives the server the
same requests and the client the same bytes as the same sequence in one packet.

The proxy runs in-process on fake transports (as tests/unit/http/test_fastpath.py), its C
fast path switched on; the fake server answers each request once the whole of it has
arrived. Client reading is paused as the proxy asks, so pipelining behaves as on a socket.

The server's requests are compared head for head, byte for byte, and body for body once
chunked framing is taken off: a chunked body is re-chunked by the proxy as its pieces
arrive, so its framing (not its content) depends on the packets."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeway.config import load_config_text
from edgeway.http import proxy as proxy_module
from edgeway.http import request_id as request_id_module
from tests.unit.http.test_request_id import counted_id
from edgeway.http.listener import ListenerContext
from edgeway.http.pool import UpstreamConnection
from edgeway.http.proxy import ClientConnection
from edgeway.upstream import build_upstreams

MAX_HEADER = 512
MAX_URI = 200
CONFIG = f"""
upstreams:
  api: {{servers: [{{address: "127.0.0.1:9001"}}]}}
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:8080"
    limits: {{max_header_size: {MAX_HEADER}, max_uri_length: {MAX_URI}}}
    routes:
      - match: {{path_prefix: /}}
        upstream: api
"""


class Transport:
    def __init__(self):
        self.out = b""
        self.closing = False
        self.paused = False

    def write(self, data):
        assert not self.closing or not data, "written after close"
        self.out += data

    def close(self):
        self.closing = True

    def is_closing(self):
        return self.closing

    def get_extra_info(self, name, default=None):
        return ("192.0.2.5", 40000) if name == "peername" else default

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    # what lingering close (lingering.py) uses: our side shut for writing counts as closed
    def set_protocol(self, protocol):
        self.protocol = protocol

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.closing = True

    def get_write_buffer_size(self):
        return 0

    def abort(self):
        self.closing = True


def run(packets: list[bytes], fast: bool = True) -> tuple[list, bytes, bool]:
    """The packets through one client connection: the complete requests the server got (head,
    body without chunked framing), the bytes the client got, and whether it was closed. New
    request ids are counted from 1, so that two runs make the same ones."""
    loop = asyncio.new_event_loop()
    saved = proxy_module.scan_request, request_id_module.new_id
    if not fast:
        proxy_module.scan_request = None
    ids = itertools.count(1)
    request_id_module.new_id = lambda: counted_id(next(ids))
    try:
        config = load_config_text(CONFIG)
        upstreams = build_upstreams(config.upstreams)
        ctx = ListenerContext(config.listeners[0], upstreams, "http", loop)
        server = upstreams["api"].servers[0]
        conns: list[UpstreamConnection] = []
        answered = [0]

        def refill():   # one idle server connection, always
            if not ctx.pool.idle.get(server):
                conn = UpstreamConnection(ctx.pool, server)
                conn.connection_made(Transport())
                ctx.pool.put(conn)
                conns.append(conn)

        def serve() -> bool:
            """The fake server answers the active request once all of it has arrived."""
            queue = client.queue
            if not queue:
                return False
            ex = queue[0]
            assert ex.connect_task is None, "the pool should always have had a connection"
            conn = ex.conn
            if conn is None or ex.done or not ex.request_complete or conn.transport.closing:
                return False
            answered[0] += 1
            body = b"r%d" % answered[0]
            refill()
            conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            return True

        client = ClientConnection(ctx)
        transport = Transport()
        client.connection_made(transport)
        pending = list(packets)
        for _ in range(10 * len(packets) + 100):
            refill()
            if serve():
                continue
            if pending and not transport.paused and not client.closed:
                client.data_received(pending.pop(0))
                continue
            break
        requests = [req for conn in conns for req in complete_requests(conn.transport.out)]
        return requests, transport.out, transport.closing
    finally:
        proxy_module.scan_request, request_id_module.new_id = saved
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.close()


def complete_requests(stream: bytes) -> list[tuple[bytes, bytes]]:
    """The whole requests in what a server connection was sent (a cut one at the end left out)."""
    out = []
    while (end := stream.find(b"\r\n\r\n")) >= 0:
        head, rest = stream[:end + 4], stream[end + 4:]
        fields = {line.split(b":", 1)[0].lower(): line.split(b":", 1)[1].strip()
                  for line in head.split(b"\r\n")[1:] if b":" in line}
        if fields.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                line_end = rest.find(b"\r\n")
                if line_end < 0:
                    return out
                size = int(rest[:line_end], 16)
                if size == 0:
                    if rest[line_end + 2:line_end + 4] != b"\r\n":
                        return out
                    rest = rest[line_end + 4:]
                    break
                chunk = rest[line_end + 2:line_end + 2 + size]
                if len(chunk) < size or rest[line_end + 2 + size:line_end + 4 + size] != b"\r\n":
                    return out
                body += chunk
                rest = rest[line_end + 4 + size:]
        else:
            size = int(fields.get(b"content-length", b"0"))
            if len(rest) < size:
                return out
            body, rest = rest[:size], rest[size:]
        out.append((head, body))
        stream = rest
    return out


# --------------------------------------------------------------------------- requests

names = st.sampled_from(["X-A", "Accept", "User-Agent", "X-Long-Name-Here", "Cookie"])
# values that are request lines too: cut where such a value starts, the rest of the head is
# a whole request head to a reader that does not know it is in the middle of one
values = (st.text(alphabet="abcXYZ019 -_/;=,", min_size=0, max_size=40).map(str.strip)
          | st.sampled_from(["GET /admin HTTP/1.1", "POST /admin HTTP/1.1"]))
paths = st.text(alphabet="abc/019-_.", min_size=0, max_size=30).map(lambda p: "/" + p)


@st.composite
def fields(draw, size=None):
    """Some field lines; now and then one long enough to pass the head limit on its own (or
    to come near it: the callbacks' count decides there, the early count must not)."""
    lines = [f"{draw(names)}: {draw(values)}\r\n".encode() for _ in range(draw(st.integers(0, 3)))]
    if draw(st.integers(0, 5)) == 0:
        n = draw(size if size is not None else st.one_of(st.integers(MAX_HEADER - 40, MAX_HEADER + 10), st.integers(600, 3000)))
        lines.insert(draw(st.integers(0, len(lines))), b"X-Big: " + b"v" * n + b"\r\n")
    return b"".join(lines)


@st.composite
def bodies(draw):
    """Body bytes that look like requests too: a desync would show."""
    return draw(st.binary(max_size=40) | st.sampled_from([b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n",
                                                          b"\r\n\r\n", b"0\r\n\r\n"]))


@st.composite
def request(draw):
    kind = draw(st.sampled_from(["get", "get", "get", "cl", "chunked", "bad", "uri", "v10", "close"]))
    path = draw(paths).encode()
    head = draw(fields()) + b"Host: h\r\n" + draw(fields())
    if kind in ("get", "close", "v10"):
        version = b"HTTP/1.0" if kind == "v10" else b"HTTP/1.1"
        extra = b"Connection: close\r\n" if kind == "close" else b""
        method = draw(st.sampled_from([b"GET", b"DELETE", b"OPTIONS"]))
        return b"%b %b %b\r\n%b%b\r\n" % (method, path, version, head, extra)
    if kind == "uri":
        return b"GET /" + b"u" * draw(st.integers(MAX_URI - 5, MAX_URI + 300)) + b" HTTP/1.1\r\n" + head + b"\r\n"
    if kind == "cl":
        body = draw(bodies())
        return b"POST %b HTTP/1.1\r\n%bContent-Length: %d\r\n\r\n%b" % (path, head, len(body), body)
    if kind == "chunked":
        out = b"PUT %b HTTP/1.1\r\n%bTransfer-Encoding: chunked\r\n\r\n" % (path, head)
        for _ in range(draw(st.integers(0, 3))):
            data = draw(bodies().filter(bool))
            ext = draw(st.sampled_from([b"", b";a=b", b";name"]))
            out += b"%x%b\r\n%b\r\n" % (len(data), ext, data)
        trailers = b""
        if draw(st.booleans()):
            trailers = draw(fields(st.one_of(st.integers(MAX_HEADER - 40, MAX_HEADER + 10),
                                             st.integers(600, 3000))))
        return out + b"0\r\n" + trailers + b"\r\n"
    return draw(st.sampled_from([
        b"GET /x HTTP/1.1\nHost: h\n\n",                                        # bare LF
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n",                         # space in a name
        b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX: b\r\n\r\n",                                      # no Host
    ]))


@st.composite
def scenario(draw):
    """Requests, and where to cut them: anywhere, and often where a request ends (so that a
    whole plain request makes a packet of its own, the fast path's case)."""
    requests = draw(st.lists(request(), min_size=1, max_size=5))
    data = b"".join(requests)
    mode = draw(st.sampled_from(["anywhere", "where requests and values start", "both"]))
    points = set()
    if mode != "where requests and values start":
        points |= draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12))
    if mode != "anywhere":
        start = 0
        for req in requests:   # where it starts, and where one of its field values starts
            values = [i + 2 for i in range(len(req)) if req.startswith(b": ", i)]
            points |= {start} if draw(st.booleans()) else set()
            points |= {start + draw(st.sampled_from(values))} if values and draw(st.booleans()) else set()
            start += len(req)
        points.discard(0)
    points = sorted(points)
    return data, [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if data[a:b]]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario())
def test_cutting_requests_into_packets_changes_nothing(case):
    data, packets = case
    whole = run([data])
    assert run(packets) == whole
    assert whole[1].startswith(b"HTTP/1.1 ")     # answered (not a test of nothing)


@st.composite
def nested(draw):
    """A request whose head, cut where a field value starts, leaves a whole plain request head
    in the next packet (the issue's case, generalised): after whatever came before it."""
    before = b"".join(draw(st.lists(request(), max_size=2)))
    plain = b"GET /x%d HTTP/1.1\r\nHost: h\r\n\r\n" % draw(st.integers(0, 9))
    outer = b"%b /b HTTP/1.1\r\n%b%b: " % (draw(st.sampled_from([b"GET", b"POST", b"DELETE"])),
                                            draw(fields()), draw(names).encode())
    inner = b"GET /admin HTTP/1.1\r\n%bHost: h\r\n%b\r\n" % (draw(fields()), draw(fields()))
    after = b"".join(draw(st.lists(request(), max_size=2)))
    packets = [p for p in (before, plain, outer, inner, after) if p]
    return packets


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(nested())
def test_a_field_value_that_looks_like_a_request_stays_a_field_value(packets):
    whole = run([b"".join(packets)])
    assert run(packets) == whole
    assert not any(head.split(b" ")[1] == b"/admin" for head, _ in whole[0])


@pytest.mark.parametrize("data", [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyz"
    b"GET /c HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n",
    b"PUT /d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"
    b"GET /e HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /f HTTP/1.1\r\nHost: h\r\n\r\nGET /g HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 600 + b"\r\n\r\n",
])
def test_every_single_cut_and_every_byte_alone(data):
    """Cut once anywhere; and, after a first request in a packet of its own, once anywhere in
    the rest; and byte by byte."""
    whole = run([data])
    assert whole[1].startswith(b"HTTP/1.1 ")
    first = data.index(b"\r\n\r\n") + 4
    for point in range(1, len(data)):
        assert run([data[:point], data[point:]]) == whole, point
        if point > first:
            assert run([data[:first], data[first:point], data[point:]]) == whole, point
    assert run([data[i:i + 1] for i in range(len(data))]) == whole


SMUGGLE = [b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /b HTTP/1.1\r\nX: ", b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n"]


@pytest.mark.parametrize("fast", [True, False])
def test_a_head_cut_after_a_whole_request_is_one_request(fast):
    """The issue's case: the third packet is the value of field X of request /b, not a
    request of its own (RFC 9112); the fast path must not read it as one."""
    requests, out, closed = run(SMUGGLE, fast)
    targets = [head.split(b" ")[1] for head, _ in requests]
    assert targets == [b"/a", b"/b"]
    assert b"\r\nX: GET /admin HTTP/1.1\r\n" in requests[1][0]
    assert out.count(b"HTTP/1.1 200 OK") == 2 and not closed
    assert (requests, out, closed) == run([b"".join(SMUGGLE)], fast)


def test_the_fast_path_still_takes_the_next_packet_once_the_parser_is_between_messages(monkeypatch):
    taken = []
    real = proxy_module.scan_request

    def spy(*args):
        result = real(*args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(proxy_module, "scan_request", spy)
    chunked = b"PUT /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    run([b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",                # the fast path
         chunked, b"1\r\na\r\n", b"0\r\nT: v", b"\r\n\r\n",    # httptools, with trailers
         b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"], fast=True)    # the fast path again
    assert taken == [True, False, True]
