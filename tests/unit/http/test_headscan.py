"""The C whole-message scanner (_headscan.c) against its reference, httptools (llhttp) plus
the Python analysis: whatever the scanner accepts must come out of the httptools path field
for field; what it declines goes to that path anyway, so declining is always allowed.
Inputs are generated from a grammar near the accepted subset and then mutated byte by byte."""

import dataclasses

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeway.http import messages
from edgeway.http.messages import (RequestError, analyze_request, client_response_head, method_text,
                                   upstream_request_head)
from tests.support.http_fakes import feed_httptools

MAX_URI, MAX_HEAD = 200, 400
MAX_RESPONSE_HEAD = 300   # small enough for generated heads to cross it


def forward_response(data: bytes, extra: bytes, keep_alive: bool, client_10: bool, max_head=MAX_RESPONSE_HEAD):
    return messages.forward_response(data, extra, keep_alive, client_10, max_head)

CLIENTS = [("127.0.0.1", "http"), ("2001:db8::7", "https")]


def scan_request(data: bytes, max_uri: int = MAX_URI, max_head: int = MAX_HEAD, client=CLIENTS[0]):
    """messages.scan_request, its upstream_head checked against upstream_request_head and
    then set aside (the httptools path leaves it None)."""
    head = messages.scan_request(data, max_uri, max_head, *client)
    if head is None:
        return None
    ip, scheme = client
    assert head.upstream_head == upstream_request_head(head, head.target, head.host, ip, scheme, False), data
    return dataclasses.replace(head, upstream_head=None)


# ------------------------------------------------------------------ the references

class _Request:
    """httptools' request callbacks, as ClientConnection uses them (limits included)."""

    def __init__(self):
        self.heads = []
        self.complete = 0
        self.url = b""
        self.headers = []
        self.size = 0
        self.error = None

    def on_message_begin(self):
        self.url, self.headers, self.size = b"", [], 0

    def on_url(self, url):
        self.url += url
        self.size += len(url)
        if len(self.url) > MAX_URI:
            raise RequestError(414, "long")

    def on_header(self, name, value):
        self.size += len(name) + len(value) + 4
        if self.size > MAX_HEAD:
            raise RequestError(431, "large")
        self.headers.append((name, value))

    def on_headers_complete(self):
        p = self.parser
        self.heads.append(analyze_request(method_text(p.get_method()), self.url, p.get_http_version(),
                                          self.headers, p.should_keep_alive()))

    def on_message_complete(self):
        self.complete += 1


def reference_request(data: bytes):
    """The RequestHead httptools + analyze_request make of `data` if it is exactly one whole
    request without body, else None."""
    rec = _Request()
    rec.parser = httptools.HttpRequestParser(rec)
    try:
        rec.parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade, RequestError):
        return None
    if len(rec.heads) != 1 or rec.complete != 1 or rec.heads[0].has_body:
        return None
    return rec.heads[0]


def check_request(data: bytes) -> None:
    for client in CLIENTS:
        fast = scan_request(data, client=client)
        if fast is not None:
            assert fast == reference_request(data), data


def check_response(data: bytes) -> None:
    """forward_response against the httptools path: the same status, framing, reuse of the
    server connection and body, and the client's bytes as client_response_head renders them."""
    found = forward_response(data, b"", True, False)
    if found is None:
        return
    status, reusable, length, _ = found
    ref = feed_httptools(data, max_head=MAX_RESPONSE_HEAD)
    assert ref.failed is None and len(ref.heads) == 1 and ref.complete == 1, data
    slow = ref.heads[0]
    assert (status, length, False, None) == (slow.status, slow.content_length, slow.chunked, slow.upgrade), data
    assert reusable == slow.keep_alive == ref.reusable, data
    body = data[len(data) - length:]
    assert body == ref.body, data
    for extra in (b"", b"Set-Cookie: SERVERID=s1; Path=/; HttpOnly\r\n"):
        for keep_alive in (True, False):
            for version in ("1.1", "1.0"):
                out, mode, framing = client_response_head(slow, "GET", version, keep_alive, extra)
                assert mode == framing == "length"
                assert forward_response(data, extra, keep_alive, version == "1.0") == \
                    (status, reusable, length, out + body), data


# ------------------------------------------------------------------ examples

def test_a_plain_request_is_read_as_the_parser_reads_it():
    data = (b"GET /api/x?y=1 HTTP/1.1\r\nHost:  Example.com:8080 \r\nUser-Agent: wrk\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nForwarded: for=a\r\n"
            b"Cookie: SERVERID=s1\r\nX-Real-IP: 1.1.1.1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
            b"Connection: Close\r\nX-Trailing: a b \t\r\n\r\n")
    head = scan_request(data, MAX_URI, MAX_HEAD)
    assert head is not None and head == reference_request(data)
    assert head.host == "Example.com:8080" and not head.keep_alive and head.has_cookie
    assert head.xff == b"10.0.0.1, 10.0.0.2" and head.prior_forwarded == b"for=a"
    assert head.forward == b"User-Agent: wrk\r\nCookie: SERVERID=s1\r\nX-Trailing: a b \t\r\n"


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",           # a body
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",                       # 400 in the slow path
    b"GET / HTTP/1.1\r\n\r\n",                                             # no Host: 400
    b"GET / HTTP/1.1\r\nHost: \r\n\r\n",                                   # empty: the server's name
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",                                  # 1.0: its own keep-alive rules
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",                          # absolute-form
    b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\r\n\r\n",                        # obs-text
    b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n folded\r\n\r\n",                # obs-fold: 400
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",                                    # bare LF
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # two requests
    b"GET / HTTP/1.1\r\nHost: a\r\n",                                      # not whole yet
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",           # llhttp: as Connection
    b"GET /" + b"a" * MAX_URI + b" HTTP/1.1\r\nHost: a\r\n\r\n",             # 414
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * MAX_HEAD + b"\r\n\r\n",     # 431
    b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n",   # "_": the listener's option decides
    b"GET / HTTP/1.1\r\nHost: a\r\n_: x\r\n\r\n",
])
def test_anything_but_the_plain_case_is_left_to_httptools(data):
    assert scan_request(data, MAX_URI, MAX_HEAD) is None


def test_a_plain_response_is_read_as_the_parser_reads_it():
    data = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 21:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
            b"Keep-Alive: timeout=5\r\n\r\nok")
    assert forward_response(data, b"Set-Cookie: s=1\r\n", True, False) == (
        200, True, 2, b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 21:00:00 GMT\r\n"
                      b"Content-Type: text/plain\r\nSet-Cookie: s=1\r\nContent-Length: 2\r\n\r\nok")
    check_response(data)
    check_response(data.replace(b"keep-alive\r\n", b"close\r\n"))


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok",                    # body not all here
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nok",                    # more than the body
    b"HTTP/1.1 200 OK\r\n\r\nok",                                         # delimited by close
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: close, x\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nProxy-Connection: close\r\n\r\n",   # found by hypothesis
])
def test_other_responses_are_left_to_httptools(data):
    assert forward_response(data, b"", True, False) is None


# ------------------------------------------------------------------ generated and mutated

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~",
                 min_size=1, max_size=8).map(str.encode)
_REQUEST_NAMES = st.one_of(_TOKEN, st.sampled_from([
    b"Host", b"host", b"HOST", b"Connection", b"connection", b"Cookie", b"X-Forwarded-For", b"x-forwarded-for",
    b"Forwarded", b"X-Real-IP", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Keep-Alive", b"Proxy-Connection",
    b"TE", b"Trailer", b"Upgrade", b"Expect", b"Content-Length", b"Transfer-Encoding", b"User-Agent",
    b"X_Forwarded_For", b"x_real_ip", b"Host_", b"Content_Length", b"_"]))
_VALUES = st.one_of(
    st.sampled_from([b"close", b"Keep-Alive", b" close ", b"keep-alive, close", b"example.com", b"a:80",
                     b"a:123456", b"[::1]", b"", b" ", b"0", b"chunked", b"100-continue", b"a b\t"]),
    st.binary(max_size=12))
_TARGETS = st.one_of(st.sampled_from([b"/", b"/api/x", b"/a?b=c&d", b"*", b"http://h/p", b"/%zz", b"/a#f"]),
                     st.binary(max_size=10).map(lambda b: b"/" + b))


@st.composite
def requests(draw):
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH",
                                   b"CONNECT", b"get", b"BREW"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]))
    fields = draw(st.lists(st.tuples(_REQUEST_NAMES, st.sampled_from([b": ", b":", b":  ", b":\t", b" : "]),
                                     _VALUES), max_size=7))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", b": ", draw(_VALUES)))
    return (method + b" " + draw(_TARGETS) + b" " + version + b"\r\n"
            + b"".join(n + sep + v + b"\r\n" for n, sep, v in fields) + b"\r\n")


@st.composite
def responses(draw):
    status = draw(st.sampled_from([b"200", b"404", b"503", b"204", b"304", b"101", b"100", b"600", b"2x0"]))
    reason = draw(st.sampled_from([b"OK", b"", b"Not Found", b"a\tb", b"\x80"]))
    body = draw(st.sampled_from([b"", b"ok", b"x" * 40]))
    fields = draw(st.lists(st.tuples(st.one_of(_TOKEN, st.sampled_from([
        b"Content-Length", b"content-length", b"Connection", b"Keep-Alive", b"TE", b"Trailer", b"Upgrade",
        b"Proxy-Connection", b"Transfer-Encoding", b"Server", b"Set-Cookie", b"X_Resp", b"Content_Length"])),
        _VALUES), max_size=6))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))),
                      (b"Content-Length", str(len(body) + draw(st.sampled_from([0, 0, 0, 1, -1]))).encode()))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    return (version + b" " + status + b" " + reason + b"\r\n"
            + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n" + body)


def mutate(data: bytes, edits) -> bytes:
    for position, byte, kind in edits:
        i = position % (len(data) + 1)
        if kind == 0:
            data = data[:i] + bytes([byte]) + data[i:]
        elif kind == 1 and i < len(data):
            data = data[:i] + bytes([byte]) + data[i + 1:]
        elif i < len(data):
            data = data[:i] + data[i + 1:]
    return data


_EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(b"\r\n \t:\x00\x7f\x80,;aA0/%[]"),
                            st.integers(0, 2)), max_size=3)
_SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(requests(), _EDITS)
def test_every_request_the_scanner_accepts_is_read_as_httptools_reads_it(data, edits):
    check_request(data)
    check_request(mutate(data, edits))


@_SETTINGS
@given(responses(), _EDITS)
def test_every_response_the_scanner_accepts_is_read_as_httptools_reads_it(data, edits):
    check_response(data)
    check_response(mutate(data, edits))


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n",                                   # wrk
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: \r\n\r\n",        # empty: as none (found by hypothesis)
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nConnection: close\r\n\r\n",
    b"GET /api/users?id=7 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    b"HEAD /static/a.css HTTP/1.1\r\nHost: example.com\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Cookie: SERVERID=abc; theme=dark\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: keep-alive\r\n\r\n",
])
def test_the_plain_requests_it_is_for_take_the_fast_path(data):
    # (scan_request() above also checks each rendering against upstream_request_head)
    head = scan_request(data, MAX_URI, MAX_HEAD)
    assert head is not None and head == reference_request(data)


def test_scan_request_before_init_is_an_error_not_a_crash():
    # in a process of its own: this one's module was initialised when messages.py was imported
    import subprocess
    import sys
    code = ("from edgeway.http import _headscan\n"
            "try:\n"
            "    _headscan.scan_request(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n', 100, 1000, '127.0.0.1', 'http')\n"
            "except RuntimeError as exc:\n"
            "    print('refused:', exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.startswith("refused: _headscan.scan_request() before _headscan.init("), result.stdout
