"""X-Request-ID (request_id.py): which client ids are kept, and that a new one goes into both
renderings of the head for the server (the fast path's upstream_head and
upstream_request_head) as the same bytes."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeway.http import messages, request_id
from edgeway.http.messages import analyze_request, upstream_request_head

CLIENT = ("192.0.2.5", "http")


def counted_id(n: int) -> tuple[str, bytes, bytes]:
    """What request_id.new_id returns, for the id n in hex: tests that compare two runs count
    their ids rather than draw them."""
    rid = f"{n:032x}"
    line = b"X-Request-ID: " + rid.encode() + b"\r\n"
    return rid, line, b"\r\n" + line + b"X-Real-IP: "


def request(*fields: bytes) -> bytes:
    return b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n" + b"".join(fields) + b"\r\n"


def heads(data: bytes):
    """The head as the fast path reads it (scan_request) and as the httptools path does."""
    fast = messages.scan_request(data, 8192, 8192, *CLIENT)
    assert fast is not None
    return fast, analyze_request(fast.method, fast.target.encode(), fast.version, list(fast.headers), True)


def rendered(head) -> bytes:
    return upstream_request_head(head, head.target, head.host, CLIENT[0], CLIENT[1], False)


@pytest.mark.parametrize("fields, kept", [
    ([b"X-Request-ID: 4bf92f3577b34da6a3ce929d0e0e4736\r\n"], "4bf92f3577b34da6a3ce929d0e0e4736"),
    ([b"x-request-id: 123e4567-e89b-12d3-a456-426614174000\r\n"], "123e4567-e89b-12d3-a456-426614174000"),
    ([b"X-Request-Id: host1:4711:42.a_b-c\r\n"], "host1:4711:42.a_b-c"),
    ([b"X-Request-Id: a/b\r\n"], None),
    ([b"X-Request-ID: a\r\n"], "a"),
    ([b"X-Request-ID: " + b"a" * 128 + b"\r\n"], "a" * 128),
    ([b"X-Request-ID: " + b"a" * 129 + b"\r\n"], None),       # too long
    ([b"X-Request-ID: a b\r\n"], None),                        # space
    ([b"X-Request-ID: a;b=1\r\n"], None),
    ([b"X-Request-ID: \"a\"\r\n"], None),
    ([b"X-Request-ID: \r\n"], None),                           # empty
    ([b"X-Request-ID: a\r\n", b"X-Request-ID: a\r\n"], None),  # two: ambiguous
    ([b"X-Request-ID: a\r\n", b"X-Request-Id: b\r\n"], None),
    ([b"X-Request-IDs: a\r\n"], None),                         # another field
    ([], None),
])
def test_a_sane_client_id_is_kept_and_anything_else_replaced(fields, kept):
    for head in heads(request(*fields)):
        before = rendered(head)
        rid, line = request_id.assign(head)
        assert line == b"X-Request-ID: " + rid.encode() + b"\r\n"
        out = rendered(head)
        ids = re.findall(rb"(?im)^x-request-id: *(.*?)\r$", out)
        if kept is not None:
            assert rid == kept and out == before   # sent on as the client sent it
        else:
            assert re.fullmatch("[0-9a-f]{32}", rid)
            assert ids == [rid.encode()]           # the client's gone, ours once
        assert ids == [rid.encode()]
        if head.upstream_head is not None:
            assert head.upstream_head == out       # the fast path sends the same bytes


def test_the_id_goes_where_the_fields_end_and_only_x_request_id_fields_go():
    fast, _ = heads(request(b"X-Request-ID: bad id\r\n", b"X-Other: x-request-id: 1\r\n"))
    rid, _ = request_id.assign(fast)
    assert fast.upstream_head == (
        b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Other: x-request-id: 1\r\n"
        b"X-Request-ID: " + rid.encode() + b"\r\nX-Real-IP: 192.0.2.5\r\nX-Forwarded-For: 192.0.2.5\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"X-Request-ID", b"x-request-id", b"X-Request-Id", b"X-Req"]), max_size=3),
       st.binary(max_size=140).filter(lambda v: all(0x21 <= c <= 0x7E for c in v)))
def test_generated_or_kept_the_server_sees_exactly_one_sane_id(names, value):
    data = request(*(name + b": " + value + b"\r\n" for name in names))
    for head in heads(data):
        rid, _ = request_id.assign(head)
        assert request_id.SANE.fullmatch(rid.encode())
        out = rendered(head)
        assert re.findall(rb"(?im)^x-request-id: *(.*?)\r$", out) == [rid.encode()]
        assert head.upstream_head in (None, out)


def test_new_ids_are_32_hex_digits_and_do_not_repeat():
    made = [request_id.new_id() for _ in range(1000)]   # several batches
    assert made[0] == counted_id(int(made[0][0], 16))   # id, line and splice agree
    ids = [rid for rid, _, _ in made]
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 1000
    assert all((rid, line, splice) == counted_id(int(rid, 16)) for rid, line, splice in made)


def test_our_own_answers_carry_the_id():
    from edgeway.http.responses import error_response
    out = request_id.add_to_response(error_response(404, "no route"), b"X-Request-ID: abc\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.endswith(b"\r\nX-Request-ID: abc") and b"X-Request-ID" not in body
