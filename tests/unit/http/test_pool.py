"""UpstreamConnection's response parsing, driven with bytes through its real httptools parser:
the fields each response head hands to the client side (forwarded lines, framing, Connection,
Upgrade), without sockets."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeway.http.messages import RESPONSE_FIELDS, client_response_head, forward_response
from edgeway.http.pool import is_chunked
from tests.support.http_fakes import feed_httptools as feed


def test_hop_by_hop_fields_and_those_connection_names_are_dropped():
    client = feed(b"HTTP/1.1 200 OK\r\nConnection: close, X-H\r\nX-H: 1\r\nKeep-Alive: t=1\r\nX-Ok: y\r\n"
                  b"\r\nbody", b"")
    (head,) = client.heads
    assert head.status == 200 and head.reason == b"OK" and not head.keep_alive
    assert head.connection == b"close, X-H" and head.content_length is None and not head.chunked
    assert head.lines == [b"X-H: 1\r\n", b"X-Ok: y\r\n"]   # X-H goes when the client head is made
    data, mode, framing = client_response_head(head, "GET", "1.1", True)
    assert framing == "close" and mode == "chunked" and b"Transfer-Encoding: chunked\r\n" in data
    assert b"X-Ok: y" in data
    assert b"X-H:" not in data and b"Keep-Alive" not in data and b"Connection" not in data
    data, mode, framing = client_response_head(head, "GET", "1.0", True)
    assert mode == "raw" and b"Connection: close\r\n" in data


def test_upgrade_fields_are_read_not_forwarded():
    client = feed(b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nTE: x\r\n"
                  b"Trailer: y\r\nSec-WebSocket-Accept: abc\r\n\r\nframes")
    (head,) = client.heads
    assert head.status == 101 and head.reason == b"Switching"
    assert head.upgrade == b"websocket" and head.connection == b"Upgrade"
    assert head.lines == [b"Sec-WebSocket-Accept: abc\r\n"]
    assert client.upgraded == b"frames"


def test_framing_fields_in_any_spelling_and_split_packets():
    client = feed(b"HTTP/1.1 200 OK\r\ntransfer-ENCODING: chunked\r\nX-A:", b" 1\r\nSERVER: s\r\n\r\n",
                  b"2\r\nok\r\n0\r\n\r\n")
    (head,) = client.heads
    assert head.chunked and head.content_length is None and head.keep_alive
    assert head.lines == [b"X-A: 1\r\n", b"SERVER: s\r\n"]
    assert client.body == b"ok" and client.complete == 1
    client = feed(b"HTTP/1.1 204 No Content\r\nCONTENT-length: 0\r\nConnection: keep-alive\r\n\r\n")
    assert client.heads[0].content_length == 0 and client.heads[0].lines == []


def test_interim_response_then_final_on_one_connection():
    client = feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert [h.status for h in client.heads] == [100, 200]
    assert client.body == b"ok" and client.complete == 1   # the 100 does not complete the exchange


_NAMES = st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Connection", b"connection",
                          b"Keep-Alive", b"keep-alive", b"TE", b"Te", b"te", b"Trailer", b"Proxy-Connection",
                          b"Upgrade", b"Server", b"server", b"Date", b"Set-Cookie", b"X-Custom", b"Transfer-Encodin"])


@given(st.lists(st.tuples(_NAMES, st.sampled_from([b"1", b"abc", b"close"])), max_size=6))
def test_every_field_is_forwarded_unless_it_is_hop_by_hop_or_framing(fields):
    # the one rule, whatever the spelling: a field goes on as it came unless its lower-case
    # name is one the proxy reads or drops (RESPONSE_FIELDS)
    seen_length = False
    head = b"HTTP/1.1 200 OK\r\n"
    kept = []
    for name, value in fields:
        if name.lower() == b"content-length":
            if seen_length:
                continue   # llhttp refuses a second Content-Length
            seen_length = True
            value = b"1"
        head += name + b": " + value + b"\r\n"
        if name.lower() not in RESPONSE_FIELDS:
            kept.append(name + b": " + value + b"\r\n")
    client = feed(head + b"\r\n")
    assert client.failed is None
    assert client.heads[0].lines == kept
    assert client.heads[0].content_length == (1 if seen_length else None)


# ------------------------------------------------------------------ bytes after the end

_INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"


@pytest.mark.parametrize("packets", [
    [b"HTTP/1.1 204 No Content\r\n\r\n" + _INJECTED],                  # a "body" on a 204
    [b"HTTP/1.1 304 Not Modified\r\n\r\n" + _INJECTED[:30]],           # the start of another head
    [b"HTTP/1.1 204 No Content\r\n\r\nxyz"],                           # garbage: a parse error
    [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok" + _INJECTED],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + _INJECTED],
])
def test_a_connection_with_bytes_after_its_response_is_never_pooled(packets):
    client = feed(*packets)
    assert client.failed is None and client.complete == 1 and len(client.heads) == 1
    assert client.reusable is False
    assert b"EVIL" not in client.body


@pytest.mark.parametrize("packets", [
    [b"HTTP/1.1 204 No Content\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"],
    [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\r\n"],   # CRLF between messages: llhttp skips it
])
def test_a_connection_whose_response_filled_its_packets_is_pooled(packets):
    client = feed(*packets)
    assert client.failed is None and client.complete == 1 and client.reusable is True


# ------------------------------------------------------------------ Transfer-Encoding as llhttp frames it

_CODINGS = st.lists(st.sampled_from([b"chunked", b"Chunked", b"CHUNKED", b"gzip", b"x", b" ", b"\t", b",", b";",
                                     b"identity"]), min_size=1, max_size=5).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(st.lists(_CODINGS, min_size=1, max_size=2))
def test_the_response_is_chunked_exactly_when_llhttp_reads_it_chunked(values):
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"Transfer-Encoding: " + v + b"\r\n" for v in values) + b"\r\n"
    client = feed(head + b"2\r\nok\r\n0\r\n\r\n")
    if client.failed is not None:
        return   # refused by llhttp (an empty value): nothing is forwarded
    dechunked = client.complete == 1 and client.body == b"ok"
    assert client.heads[0].chunked == dechunked, values
    if not dechunked:   # read until the server closes, and forwarded so (re-chunked, or raw to 1.0)
        assert client.body == b"2\r\nok\r\n0\r\n\r\n" and client.complete == 0
        _, mode, framing = client_response_head(client.heads[0], "GET", "1.1", True)
        assert framing == "close" and mode == "chunked"


@pytest.mark.parametrize("value, chunked", [(b"gzip, chunked", True), (b"xchunked", False), (b"chunked, gzip", False),
                                            (b"chunked\t", False), (b" chunked ", True), (b"x-chunked", False)])
def test_transfer_encoding_examples(value, chunked):
    assert is_chunked(value) is chunked
    client = feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert client.heads[0].chunked is chunked and (client.body == b"ok") is chunked


# ------------------------------------------------------------------ the response head limit

def test_a_response_head_over_the_limit_fails_the_exchange():
    # counted: the status line 2 + 15, "X" 1 + 978 + 4, "Content-Length" 14 + 1 + 4: 1019
    head = b"HTTP/1.1 200 OK\r\nX: " + b"v" * 978 + b"\r\nContent-Length: 0\r\n\r\n"
    client = feed(head, max_head=1019)
    assert client.failed is None and client.complete == 1
    client = feed(head, max_head=1018)
    assert "larger than max_response_header_size (1018 bytes)" in client.failed and not client.heads
    assert client.failed_kind == "invalid"   # the metrics' cause


def test_one_endless_field_is_cut_while_it_arrives():
    client = feed(b"HTTP/1.1 200 OK\r\nX-Big: ", *[b"a" * 1000] * 10, max_head=4096)
    assert "larger than max_response_header_size (4096 bytes)" in client.failed and not client.heads
    assert client.failed_kind == "invalid"


def test_the_whole_response_scanner_counts_the_head_as_the_parser_does():
    data = b"HTTP/1.1 200 OK\r\nX: " + b"v" * 978 + b"\r\nContent-Length: 2\r\n\r\nok"   # head 17 + 983 + 19
    assert forward_response(data, b"", True, False, 1019) is not None
    assert forward_response(data, b"", True, False, 1018) is None
