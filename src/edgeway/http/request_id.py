"""X-Request-ID (nginx's $request_id, Envoy's x-request-id): one id per request, sent to the
server, returned to the client and written in the access log, so that a line of ours, a line of
the server's and a user's bug report name the same request (docs/http.md, "Request IDs").

The client's id is kept when it is sane: exactly one X-Request-ID field whose value is 1 to 128
characters of [A-Za-z0-9._:-]. That takes in the ids in use (nginx's 32 hex digits, UUIDs,
Envoy's, Heroku's, "host:pid:seq" counters, a caller's own trace ids) and leaves out what
could harm a reader downstream: spaces, quotes, commas and semicolons (a list or a parameter
to some parsers), control bytes and non-ASCII (log and header injection), and lengths that
would bloat every log line. Two fields are ambiguous (which one would the server read?), so
they are replaced too. Otherwise a new id is made: 32 random hex digits, as nginx's.
"""

from __future__ import annotations

import os
import re

from edgeway.http.messages import RequestHead

SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_NAME = b"x-request-id"
_FIELD = b"x-request-id:"
_REAL_IP = b"\r\nX-Real-IP: "

# Random ids are drawn 128 at a time, each made ready with its header line and the bytes that
# splice it into a head (see assign), all by whole-batch string operations: a getrandom call,
# a hex conversion and three concatenations per request cost as much as the rest of the
# id's work (measured: bench/http_l7_inproc.py). After a fork the child draws afresh, so that
# two processes never hand out the same ids.
_BATCH = 128
_ready: list[tuple[str, bytes, bytes]] = []


def _reset() -> None:
    _ready.clear()


os.register_at_fork(after_in_child=_reset)


def _draw() -> None:
    digits = os.urandom(16 * _BATCH).hex("\n", 16)    # 128 ids of 32 hex digits, one a line
    ids = digits.split("\n")
    lines = ("X-Request-ID: " + digits.replace("\n", "\r\n\0X-Request-ID: ") + "\r\n").encode().split(b"\0")
    splices = ("\r\nX-Request-ID: " + digits.replace("\n", "\r\nX-Real-IP: \0\r\nX-Request-ID: ")
               + "\r\nX-Real-IP: ").encode().split(b"\0")
    _ready.extend(zip(ids, lines, splices))


def new_id() -> tuple[str, bytes, bytes]:
    """32 hex digits (128 random bits, nginx's $request_id), its header line, and the bytes that
    put that line before X-Real-IP in a head (assign)."""
    if not _ready:
        _draw()
    return _ready.pop()


def client_id(head: RequestHead) -> tuple[str | None, bool]:
    """The client's sane id, if it sent one; and whether it sent any X-Request-ID field."""
    if _FIELD not in head.forward.lower():   # the usual case: none (one pass in C)
        return None, False
    values = [value for name, value in head.headers if name.lower() == _NAME]
    if len(values) == 1:
        value = values[0].strip(b" \t")
        if SANE.fullmatch(value):
            return value.decode("ascii"), True
    return None, bool(values)


def _without_field(data: bytes) -> bytes:
    return b"\r\n".join(line for line in data.split(b"\r\n") if line.partition(b":")[0].lower() != _NAME)


def assign(head: RequestHead) -> tuple[str, bytes]:
    """The request's id: the client's if sane, else a new one, which then replaces in the
    head's fields for the server (head.forward, and head.upstream_head that the fast path
    sends as it is) whatever X-Request-ID the client sent. A sane id is left where the client
    put it; a new one goes last among the client's fields, in both renderings, so that the
    fast path and messages.upstream_request_head still send the same bytes. Also returned:
    the id's header line, for the response."""
    forward = head.forward
    if _FIELD in forward.lower():   # the client sent one (else nothing to look at)
        rid, sent = client_id(head)
        if rid is not None:
            return rid, b"X-Request-ID: " + rid.encode() + b"\r\n"
        if sent:   # insane, or several: dropped
            forward = _without_field(forward)
            if head.upstream_head is not None:
                head.upstream_head = _without_field(head.upstream_head)
    rid, line, splice = new_id()
    head.forward = forward + line
    upstream_head = head.upstream_head
    if upstream_head is not None:
        # the client's fields end where ours begin: the first CRLF X-Real-IP is ours (the
        # client's own X-Real-IP was dropped, and no field value holds a CRLF)
        head.upstream_head = upstream_head.replace(_REAL_IP, splice, 1)
    return rid, line


def add_to_response(data: bytes, line: bytes) -> bytes:
    """One of our own answers (error_response, health, redirect) with the id's `line`."""
    return data.replace(b"\r\n\r\n", b"\r\n" + line + b"\r\n", 1)
