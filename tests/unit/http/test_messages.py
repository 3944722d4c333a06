import pytest

from edgeway.http.messages import (
    RequestError,
    ResponseHead,
    analyze_request,
    client_response_head,
    response_framing,
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


@pytest.mark.parametrize("status, method, chunked, length, framing", [
    (200, "GET", False, 10, "length"), (200, "GET", True, None, "chunked"), (200, "GET", False, None, "close"),
    (200, "HEAD", False, 10, "none"), (204, "GET", False, None, "none"), (304, "GET", False, None, "none"),
])
def test_response_framing(status, method, chunked, length, framing):
    head = ResponseHead(status, b"OK", [], length, chunked, True)
    assert response_framing(status, method, head) == framing


def test_client_head_rechunks_close_delimited_for_11_and_closes_for_10():
    head = ResponseHead(200, b"OK", [(b"Connection", b"close, X-H"), (b"X-H", b"1"), (b"Keep-Alive", b"t=1"),
                                     (b"X-Ok", b"y")], None, False, False, connection=b"close, X-H")
    data, mode = client_response_head(head, "close", "1.1", True)
    assert mode == "chunked" and b"Transfer-Encoding: chunked\r\n" in data and b"X-Ok: y" in data
    assert b"X-H:" not in data and b"Keep-Alive" not in data and b"Connection" not in data
    data, mode = client_response_head(head, "close", "1.0", True)
    assert mode == "raw" and b"Connection: close\r\n" in data


def test_error_body_names_cause_and_server():
    data = error_response(502, "connection refused by 127.0.0.1:9001 (port closed)", "127.0.0.1:9001")
    assert data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert data.endswith(b"502 Bad Gateway: connection refused by 127.0.0.1:9001 (port closed) "
                         b"(server tried: 127.0.0.1:9001)\n")
