"""The admin listener's HTTP framing (RequestReader over httptools) and response rendering,
without sockets: bytes in, requests or an HttpError out."""

from __future__ import annotations

import json

import pytest

from edgeway.admin.api import Response
from edgeway.admin.server import HttpError, RequestReader, exposed, render
from edgeway.config.types import parse_address


def feed(*chunks: bytes, **limits) -> RequestReader:
    reader = RequestReader(**limits)
    for chunk in chunks:
        reader.feed(chunk)
    return reader


def test_one_request_with_a_body_byte_by_byte():
    raw = (b"POST /api/v1/upstreams/a/servers/x%3A1/state?x=1 HTTP/1.1\r\nHost: h\r\n"
           b"Authorization: Bearer t\r\nContent-Length: 17\r\n\r\n{\"state\":\"drain\"}")
    reader = feed(*(raw[i:i + 1] for i in range(len(raw))))
    (request, keep_alive), = reader.requests
    assert (request.method, request.path, request.query) == ("POST", "/api/v1/upstreams/a/servers/x%3A1/state", "x=1")
    assert request.headers["authorization"] == b"Bearer t"
    assert request.body == b'{"state":"drain"}'
    assert keep_alive and reader.idle


def test_pipelined_requests_come_out_in_order_and_http10_closes():
    reader = feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert [(r.path, keep) for r, keep in reader.requests] == [("/a", True), ("/b", False)]
    reader = feed(b"GET /c HTTP/1.0\r\n\r\n")
    assert [(r.path, keep) for r, keep in reader.requests] == [("/c", False)]


def test_bytes_after_connection_close_are_an_error_after_the_requests_before():
    # the listener answers /a and closes: the error is never sent (the adapter's order)
    reader = RequestReader()
    with pytest.raises(HttpError):
        reader.feed(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert [(r.path, keep) for r, keep in reader.requests] == [("/a", False)]


def test_chunked_body():
    reader = feed(b"POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"n\r\n5\r\name\"}\r\n0\r\n\r\n")
    assert reader.requests[0][0].body == b'{"name"}'


def test_repeated_authorization_fields_are_joined_so_they_never_match():
    reader = feed(b"GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n")
    assert reader.requests[0][0].headers["authorization"] == b"Bearer a, Bearer b"


def test_a_head_over_the_limit_is_431_even_when_one_field_never_ends():
    with pytest.raises(HttpError) as err:
        feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 5000, b"a" * 5000, max_head=8192)
    assert err.value.status == 431
    with pytest.raises(HttpError) as err:       # complete fields, many of them
        feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3000 + b"\r\n", max_head=8192)
    assert err.value.status == 431


def test_a_long_url_is_431():
    with pytest.raises(HttpError) as err:
        feed(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", max_head=8192)
    assert err.value.status == 431


def test_a_body_over_the_limit_is_413_announced_or_not():
    with pytest.raises(HttpError) as err:
        feed(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", max_body=65536)
    assert err.value.status == 413
    chunk = b"%x\r\n%s\r\n" % (40000, b"a" * 40000)
    with pytest.raises(HttpError) as err:
        feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", chunk, chunk, max_body=65536)
    assert err.value.status == 413


def test_a_trailer_or_chunk_framing_without_end_is_bounded_too():
    start = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Trailer: "
    with pytest.raises(HttpError) as err:
        feed(start, *([b"a" * 4096] * 100), max_head=8192, max_body=4096)
    assert err.value.status == 413
    with pytest.raises(HttpError) as err:       # chunk extensions
        feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;x=", *([b"a" * 4096] * 100),
             max_head=8192, max_body=4096)
    assert err.value.status in (400, 413)
    # the whole body in one-byte chunks is still fine
    body = b"".join(b"1\r\n%c\r\n" % c for c in b"x" * 4096) + b"0\r\n\r\n"
    reader = feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", body, max_head=8192, max_body=4096)
    assert reader.requests[0][0].body == b"x" * 4096


@pytest.mark.parametrize("raw,status", [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),          # a TLS ClientHello
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),  # smuggling shape
    (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", 400),
    (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n", 400),
    (b"GET /\x00 HTTP/1.1\r\n\r\n", 400),
])
def test_broken_or_hostile_requests_are_400(raw, status):
    with pytest.raises(HttpError) as err:
        feed(raw)
    assert err.value.status == status


def test_expect_100_continue_is_noticed_until_the_body_comes():
    reader = feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert reader.expects_continue and not reader.idle
    reader.feed(b"{}")
    assert not reader.expects_continue and reader.requests


def test_render_is_json_with_its_length_and_the_connection_decision():
    raw = render(Response(405, {"error": "no"}, (("Allow", "POST"),)), keep_alive=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert b"\r\nConnection: close\r\n" in head and b"\r\nAllow: POST" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": "no"}
    head_only = render(Response(200, {"a": 1}), keep_alive=True, head=True)
    assert head_only.endswith(b"\r\n\r\n") and f"Content-Length: {len(body) - 3}".encode() not in head_only


@pytest.mark.parametrize("address,is_exposed", [
    ("127.0.0.1:9901", False), ("127.0.0.2:9901", False), ("[::1]:9901", False), ("localhost:9901", False),
    ("0.0.0.0:9901", True), ("[::]:9901", True), ("192.0.2.1:9901", True), ("admin.example:9901", True),
])
def test_exposed_is_anything_but_loopback(address, is_exposed):
    assert exposed(parse_address(address)) is is_exposed


# ---------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALID = (b"POST /api/v1/upstreams/a/servers/b%3A1/weight HTTP/1.1\r\nAuthorization: Bearer t\r\n"
         b"Content-Length: 13\r\n\r\n{\"weight\": 5}GET /api/v1/status HTTP/1.1\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(VALID)), max_size=8))
def test_any_split_of_the_bytes_gives_the_same_requests(cuts):
    points = sorted(set(cuts))
    chunks = [VALID[a:b] for a, b in zip([0, *points], [*points, len(VALID)])]
    reader = feed(*chunks)
    assert [(r.method, r.path, r.body) for r, _ in reader.requests] == [
        ("POST", "/api/v1/upstreams/a/servers/b%3A1/weight", b'{"weight": 5}'), ("GET", "/api/v1/status", b"")]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048), st.binary(max_size=64))
def test_arbitrary_bytes_give_requests_or_an_http_error_never_anything_else(prefix, data):
    reader = RequestReader(max_head=512, max_body=256)
    try:
        reader.feed(prefix)
        reader.feed(data)
    except HttpError as exc:
        assert exc.status in (400, 413, 431)
    for request, _ in reader.requests:
        assert len(request.body) <= 256
