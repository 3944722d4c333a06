"""UpstreamConnection's response parsing, driven with bytes through its real httptools parser:
the fields each response head hands to the client side (forwarded lines, framing, Connection,
Upgrade), without sockets."""

from hypothesis import given
from hypothesis import strategies as st

from edgeway.http.messages import RESPONSE_FIELDS, client_response_head
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
