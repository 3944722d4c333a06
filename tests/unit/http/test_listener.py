"""The access log: entries recorded as tuples on the request path, formatted at flush in order."""

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeway.http.listener import AccessLog, format_entries, log_escape


def test_entries_are_formatted_at_flush_in_the_order_they_came():
    read, write = os.pipe()
    log = AccessLog("web", fd=write)
    when = time.time()
    log.request((when, "10.0.0.1", "GET", "/a?b=1", "1.1", 200, "127.0.0.1:9001", 2, None, 0.000231, 0.0004126, ""))
    log.write('10.0.0.2 "-" 400 upstream=- bytes=0 cause="malformed request"')
    log.request((when, "::1", "POST", "/p", "1.0", 502, "-", 0, 0.0015, None, 0.01, "connection refused by x"))
    os.set_blocking(read, False)
    with pytest.raises(BlockingIOError):
        os.read(read, 1)   # nothing is written before the flush
    log.flush()
    os.close(write)
    lines = os.read(read, 65536).decode().splitlines()
    os.close(read)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(when)))
    assert lines == [
        f'{stamp} INFO edgeway.access: web 10.0.0.1 "GET /a?b=1 HTTP/1.1" 200 upstream=127.0.0.1:9001 bytes=2 '
        f'connect_ms=- header_ms=0.23 total_ms=0.41',
        lines[1],   # below: a rejected request's line, formatted by the caller
        f'{stamp} INFO edgeway.access: web ::1 "POST /p HTTP/1.0" 502 upstream=- bytes=0 '
        f'connect_ms=1.50 header_ms=- total_ms=10.00 cause="connection refused by x"',
    ]
    assert lines[1].endswith('INFO edgeway.access: web 10.0.0.2 "-" 400 upstream=- bytes=0 cause="malformed request"')
    assert log.lines == []


# any text, with what must be escaped made common: controls, '"', '\\', DEL, latin-1 (the bytes
# of a request as decoded), larger characters and lone surrogates (escaped as UTF-8 bytes)
_TEXT = st.text(st.characters() | st.sampled_from('\x00\r\n\t\x1b"\\\x7f\x80\xe9\xff\u0100\u20ac\U0001f600\ud800\udcff'),
                max_size=12)
# seconds: any size (the formatter rounds small ones by hand, larger ones as Python does), and
# values whose milliseconds sit on or next to a rounding tie (0.0125 s = 12.5 ms; 1.005 ms is
# 1.00499999... in binary)
_TIES = st.integers(0, 10**7).map(lambda n: (n + 0.5) / 100 / 1000)
_SECONDS = st.floats(0, 100) | st.floats(0, 1e6) | _TIES | _TIES.map(lambda s: s * (1 + 1e-15)) | st.sampled_from(
    [0.0, -0.0, 0.0125, 0.001005, 9999.999995, 10000.0, 1e-9, 2.5e-6])
_ENTRIES = st.one_of(
    st.tuples(st.floats(1e9, 2e9), _TEXT),
    st.tuples(st.floats(1e9, 2e9), _TEXT, st.sampled_from(["GET", "POST", "HEAD"]), _TEXT,
              st.sampled_from(["1.1", "1.0"]), st.integers(100, 599), _TEXT, st.integers(0, 10**12) | st.integers(),
              st.none() | _SECONDS, st.none() | _SECONDS, _SECONDS,
              st.sampled_from(["", "connection refused by 127.0.0.1:9001 (port closed)"]) | _TEXT))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRIES, max_size=20))
def test_the_batch_formatter_writes_what_format_does(entries):
    log = AccessLog("web", fd=-1)
    expected = "".join(log.format(entry) for entry in entries).encode("utf-8", "replace")
    assert format_entries(list(entries), log._stamp) == expected


@settings(max_examples=2000, deadline=None)
@given(_SECONDS)
def test_milliseconds_are_rounded_as_python_rounds_them(seconds):
    log = AccessLog("web", fd=-1)
    entry = (1.7e9, "10.0.0.1", "GET", "/", "1.1", 200, "-", 0, seconds, None, seconds, "")
    assert format_entries([entry], log._stamp) == log.format(entry).encode()


def test_the_batch_formatter_replaces_what_utf8_cannot_carry():
    log = AccessLog("web", fd=-1)
    entry = (1.7e9, "10.0.0.1", "GET", "/\udcff", "1.1", 200, "-", 0, None, None, 0.001, "bad \ud800")
    assert format_entries([entry], log._stamp) == log.format(entry).encode("utf-8", "replace")


def test_logged_fields_are_escaped_as_nginx_escapes_them():
    log = AccessLog("web", fd=-1)
    forged = '/a HTTP/1.1" 200 upstream=x\n2026-01-01 00:00:00 INFO edgeway.access: web 1.2.3.4 "GET /'
    entry = (1.7e9, "10.0.0.1", "GET\x1b[31m", forged + "\\\x7f\xe9\u20ac", "1.1", 400, "-", 0, None, None, 0.001,
             'invalid request target "\r\n"')
    line = format_entries([entry], log._stamp)
    assert line == log.format(entry).encode() and line.count(b"\n") == 1
    assert line.split(b"web ", 1)[1] == (
        b'10.0.0.1 "GET\\x1B[31m /a HTTP/1.1\\x22 200 upstream=x\\x0A2026-01-01 00:00:00 INFO edgeway.access: web '
        b'1.2.3.4 \\x22GET /\\x5C\\x7F\\xE9\\xE2\\x82\\xAC HTTP/1.1" 400 upstream=- bytes=0 connect_ms=- header_ms=- '
        b'total_ms=1.00 cause="invalid request target \\x22\\x0D\\x0A\\x22"\n')
    assert log_escape("plain /path?q=1") == "plain /path?q=1" and log_escape(7) == "7"
    assert log_escape("\ud800") == "\\xED\\xA0\\x80"
