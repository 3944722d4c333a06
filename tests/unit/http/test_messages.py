import pytest

from edgeway.http.messages import (
    RequestError,
    ResponseHead,
    analyze_request,
    client_response_head,
    upstream_request_head,
)
from edgeway.http.responses import error_response


def analyze(headers, version="1.1", target=b"/", method="GET"):
    return analyze_request(method, target, version, headers, True)


@pytest.mark.parametrize("headers, version, target, status", [
    ([(b"Host", b"a"), (b"Host", b"b")], "1.1", b"/", 400),
    ([], "1.1", b"/", 400),
    ([(b"Host", b"a b")], "1.1", b"/", 400),
    ([(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")], "1.0", b"/", 400),
    ([(b"Host", b"a"), (b"Transfer-Encoding", b"gzip, chunked")], "1.1", b"/", 501),
    ([(b"Host", b"a"), (b"Transfer-Encoding", b"foo, chunked")], "1.1", b"/", 400),
    ([(b"Host", b"a")], "1.1", b"x", 400),
])
def test_bad_requests(headers, version, target, status):
    with pytest.raises(RequestError) as info:
        analyze(headers, version, target)
    assert info.value.status == status


def test_absolute_form_and_http10_without_host():
    head = analyze([(b"Host", b"ignored")], target=b"http://real.example:81/p?q")
    assert head.host == "real.example:81" and head.target == "/p?q"
    assert analyze([], "1.0").host == ""


def test_upstream_head_rewrites():
    head = analyze([(b"Host", b"h"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"TE", b"trailers"),
                    (b"X-Forwarded-For", b"1.1.1.1"), (b"X-Forwarded-For", b"2.2.2.2"), (b"X-Real-IP", b"9.9.9.9"),
                    (b"Forwarded", b"for=1.1.1.1"), (b"Transfer-Encoding", b"chunked"), (b"Accept", b"*/*")],
                   method="POST")
    out = upstream_request_head(head, "/new", "h", "::1", "https", forwarded=True).decode()
    assert out.startswith("POST /new HTTP/1.1\r\nHost: h\r\n")
    assert "X-Forwarded-For: 1.1.1.1, 2.2.2.2, ::1\r\n" in out and "X-Real-IP: ::1\r\n" in out
    assert 'Forwarded: for=1.1.1.1, for="[::1]";host="h";proto=https\r\n' in out
    assert "Transfer-Encoding: chunked\r\n" in out and "Accept: */*\r\n" in out
    for gone in ("X-Hop", "TE:", "Connection", "9.9.9.9"):
        assert gone not in out


@pytest.mark.parametrize("status, method, chunked, length, framing, mode, added", [
    (200, "GET", False, 10, "length", "length", b"Content-Length: 10\r\n"),
    (200, "GET", True, None, "chunked", "chunked", b"Transfer-Encoding: chunked\r\n"),
    (200, "GET", False, None, "close", "chunked", b"Transfer-Encoding: chunked\r\n"),
    (200, "HEAD", False, 10, "none", "none", b"Content-Length: 10\r\n"),
    (204, "GET", False, None, "none", "none", b""),
    (304, "GET", False, None, "none", "none", b""),
])
def test_response_framing(status, method, chunked, length, framing, mode, added):
    head = ResponseHead(status, b"OK", [b"X-A: 1\r\n"], length, chunked, True)
    data, got_mode, got_framing = client_response_head(head, method, "1.1", True, b"Set-Cookie: s=1\r\n")
    assert (got_framing, got_mode) == (framing, mode)
    assert data == b"HTTP/1.1 %d OK\r\nX-A: 1\r\nSet-Cookie: s=1\r\n%b\r\n" % (status, added)
    data, _, _ = client_response_head(head, method, "1.0", False)
    assert data.endswith(b"Connection: close\r\n\r\n")


def test_error_body_names_cause_and_server():
    data = error_response(502, "connection refused by 127.0.0.1:9001 (port closed)", "127.0.0.1:9001")
    assert data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert data.endswith(b"502 Bad Gateway: connection refused by 127.0.0.1:9001 (port closed) "
                         b"(server tried: 127.0.0.1:9001)\n")


from hypothesis import given
from hypothesis import strategies as st

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=20)
_value = st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v and b"\x00" not in v)
_names = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade",
                          b"Expect"]) | _token.map(str.encode)


@given(st.lists(st.tuples(_names, _value), max_size=8), st.sampled_from(["1.0", "1.1"]),
       st.sampled_from([b"/", b"/a?b", b"*", b"http://h/x", b"x"]))
def test_analyze_request_answers_or_refuses_never_crashes(headers, version, target):
    # llhttp guarantees Content-Length digits; mimic that precondition
    headers = [(n, v) for n, v in headers if n.lower() != b"content-length" or v.isdigit()]
    try:
        head = analyze_request("OPTIONS", target, version, headers, True)
    except RequestError as exc:
        assert exc.status in (400, 501) and exc.cause
    else:
        assert head.target.startswith("/") or head.target == "*"
        assert not (head.chunked and version == "1.0")


def test_fields_with_an_underscore_in_the_name_are_dropped_unless_allowed():
    headers = [(b"Host", b"a"), (b"X_Forwarded_For", b"6.6.6.6"), (b"X-Ok", b"1"), (b"x_real_ip", b"1.1.1.1"),
               (b"Content_Length", b"5")]
    head = analyze(headers)
    assert head.forward == b"X-Ok: 1\r\n" and head.content_length is None and head.xff is None
    assert head.headers == [(b"Host", b"a"), (b"X-Ok", b"1")]   # routes and hash keys do not see them
    wire = upstream_request_head(head, "/", "a", "10.0.0.9", "http", False)
    assert b"_" not in wire and b"X-Forwarded-For: 10.0.0.9\r\n" in wire
    allowed = analyze_request("GET", b"/", "1.1", headers, True, underscores=True)
    assert allowed.forward == b"X_Forwarded_For: 6.6.6.6\r\nX-Ok: 1\r\nx_real_ip: 1.1.1.1\r\nContent_Length: 5\r\n"
    assert allowed.headers == headers and allowed.content_length is None
