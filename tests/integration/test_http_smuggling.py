"""Bad input (RFC 9112 6.3 and the request-smuggling literature): each case is answered with
its status, the connection is closed, and nothing reaches the backend."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7, raw_exchange, simple_config

H = b"Host: a\r\n"
CASES = {
    "cl_and_te": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "te_and_cl": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    "two_differing_cl": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    "cl_list": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!"),
    "invalid_chunk_size": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_overflow": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n"),
    "obs_fold": (400, b"GET /echo HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n"),
    "bare_cr": (400, b"GET /echo HTTP/1.1\r\n" + H + b"X-A: b\rc\r\n\r\n"),
    "bare_lf_line_end": (400, b"GET /echo HTTP/1.1\n" + H + b"\n"),
    "space_in_header_name": (400, b"GET /echo HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n"),
    "space_before_colon": (400, b"GET /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    "te_obfuscated": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    "te_not_last_chunked": (400, b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    "te_gzip_chunked": (501, b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    "te_in_http10": (400, b"POST /echo HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "nul_in_value": (400, b"GET /echo HTTP/1.1\r\n" + H + b"X-A: b\x00c\r\n\r\n"),
    "two_hosts": (400, b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    "no_host": (400, b"GET /echo HTTP/1.1\r\nX-A: b\r\n\r\n"),
    "bad_host": (400, b"GET /echo HTTP/1.1\r\nHost: a b/c\r\n\r\n"),
    "bad_target": (400, b"GET echo HTTP/1.1\r\n" + H + b"\r\n"),
    "header_too_large": (431, b"GET /echo HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 3000 + b"\r\n\r\n"),
    "uri_too_long": (414, b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n" + H + b"\r\n"),
}


@pytest.fixture(scope="module")
def env():
    with BackgroundLoop() as bg:
        l7 = L7(bg, backends=1)
        l7.start(simple_config(l7.servers(), limits={"max_header_size": 2048, "max_uri_length": 512}))
        yield l7
        l7.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_refused_and_never_forwarded(env, name):
    status, data = CASES[name]
    before = len(env.backends[0].heads)
    raw = raw_exchange(env.port, data)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:200]
    assert b"Connection: close" in raw
    time.sleep(0.05)
    assert len(env.backends[0].heads) == before, env.backends[0].heads[before:]


def test_smuggled_second_request_after_valid_one_is_not_forwarded(env):
    """A valid request followed in the same packet by a malformed one: the first is answered,
    the second refused; only the first reaches the backend."""
    before = len(env.backends[0].heads)
    raw = raw_exchange(env.port, b"GET /first HTTP/1.1\r\n" + H + b"\r\n"
                       b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400 " in raw
    assert [h.split(b" ")[1] for h in env.backends[0].heads[before:]] == [b"/first"]


def test_bad_chunk_in_a_later_packet_cuts_the_server_connection(env):
    with socket.create_connection(("127.0.0.1", env.port), timeout=3) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)
        s.sendall(b"zz\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")


def test_valid_requests_still_work(env):
    raw = raw_exchange(env.port, b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and b'"body_len": 5' in raw
