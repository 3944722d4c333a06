"""The head and trailer limits hold while bytes arrive, not only when a field completes:
httptools joins the pieces of a field and hands it over at its end, so a field that never
ends would otherwise grow without bound (and answer 408 after client_header, not 431).
Driven in-process as tests/unit/http/test_packets.py."""

from __future__ import annotations

import pytest

from tests.unit.http.test_packets import MAX_HEADER, MAX_URI, run

READ = 64 * 1024
STREAM = 200     # packets of READ bytes: 12.5 MiB, were all of them taken


def streamed(start: bytes, filler: bytes = b"a") -> tuple[list, bytes, bool, int]:
    """`start`, then up to STREAM packets of filler: what run() gives, and how many filler
    packets the proxy had taken when it closed."""
    packets = [start] + [filler * READ] * STREAM
    taken = []

    class Counting(list):
        def pop(self, i=-1):
            taken.append(1)
            return super().pop(i)

    requests, out, closed = run(Counting(packets))
    return requests, out, closed, len(taken) - 1


@pytest.mark.parametrize("start,status", [
    (b"GET / HTTP/1.1\r\nX: ", 431),                                        # a field value
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-", 431),                              # a field name
    (b"GET / HTTP/1.1\r\nX:", 431),                                        # whitespace before a value
    (b"GET /", 414),                                                         # the target
    (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nX: ", 431),   # after a whole request
    (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nT: ", 431),  # a trailer
    (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;e=", 431),        # a chunk extension
])
def test_a_field_that_never_ends_is_refused_once_past_the_limit(start, status):
    filler = b" " if start.endswith(b"X:") else b"a"
    requests, out, closed, taken = streamed(start, filler)
    assert closed and b"HTTP/1.1 %d " % status in out
    # refused by the first read past the limit (the limit and one read are all it holds)
    assert taken <= (max(MAX_HEADER, MAX_URI) + READ) // READ + 1
    assert all(b"/b " not in head for head, _ in requests)


def test_trailers_over_the_limit_in_one_packet_are_refused():
    trailer = b"T: " + b"v" * MAX_HEADER + b"\r\n"
    data = b"PUT /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + trailer + b"\r\n"
    requests, out, closed = run([data])
    assert out.startswith(b"HTTP/1.1 431 ") and closed
    assert requests == []
    ok = data.replace(trailer, b"T: " + b"v" * (MAX_HEADER - 10) + b"\r\n")
    assert run([ok])[1].startswith(b"HTTP/1.1 200 ")


def test_many_small_chunks_are_not_framing_over_the_limit():
    chunks = b"".join(b"1;x=y\r\n%c\r\n" % c for c in b"abcdefghij" * 100)   # 10 bytes of framing per data byte
    data = b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    for packets in ([data], [data[i:i + 7] for i in range(0, len(data), 7)]):
        requests, out, closed = run(packets)
        assert out.startswith(b"HTTP/1.1 200 ") and requests[0][1] == b"abcdefghij" * 100
