"""The access log: entries recorded as tuples on the request path, formatted at flush in order."""

import json
import math
import os
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeway import logs
from edgeway.config import load_config_text
from edgeway.http.listener import AccessLog, format_entries, log_escape
from edgeway.http.routing import Router
from edgeway.upstream import build_upstreams

_CONFIG = load_config_text("""
upstreams:
  api: {servers: [{address: "127.0.0.1:9001"}]}
  "odd \\"name\\"": {servers: [{address: "127.0.0.1:9002"}]}
listeners:
  - {name: web, protocol: http, listen: "127.0.0.1:8080", routes: [
      {match: {path_prefix: /api/}, upstream: api}, {match: {path_prefix: /}, upstream: "odd \\"name\\""}]}
""")
ROUTES = Router(_CONFIG.listeners[0].routes, build_upstreams(_CONFIG.upstreams)).routes   # real routes, as logged


def test_entries_are_formatted_at_flush_in_the_order_they_came():
    read, write = os.pipe()
    log = AccessLog("web", fd=write)
    when = time.time()
    log.request((when, "10.0.0.1", "GET", "/a?b=1", "1.1", 200, "127.0.0.1:9001", 2, None, 0.000231, 0.0004126, "",
                 ROUTES[0], "4bf92f3577b34da6a3ce929d0e0e4736"))
    log.rejected("10.0.0.2", 400, "malformed request")
    log.request((when, "::1", "POST", "/p", "1.0", 502, "-", 0, 0.0015, None, 0.01, "connection refused by x",
                 ROUTES[1], None))
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
        f'connect_ms=- header_ms=0.23 total_ms=0.41 request_id=4bf92f3577b34da6a3ce929d0e0e4736',
        lines[1],   # below: a rejected request's line
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
              st.sampled_from(["", "connection refused by 127.0.0.1:9001 (port closed)"]) | _TEXT,
              st.none() | st.sampled_from(ROUTES), st.none() | _TEXT))


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
    entry = (1.7e9, "10.0.0.1", "GET", "/", "1.1", 200, "-", 0, seconds, None, seconds, "", None, None)
    assert format_entries([entry], log._stamp) == log.format(entry).encode()


@pytest.mark.parametrize("when", ["00000000000", "1.7e9", b"0", None, [1.7e9]])
def test_a_time_that_is_no_number_is_refused_by_both_formatters(when):
    # found by fuzz_logfmt: int() reads a numeric text, so format() once gave a line where
    # format_entries raised
    log = AccessLog("web", fd=-1)
    entries = [(when, "line"), (when, "10.0.0.1", "GET", "/", "1.1", 200, "-", 0, None, None, 0.001, "", None, None)]
    for entry in entries:
        with pytest.raises(TypeError):
            log.format(entry)
        with pytest.raises(TypeError):
            format_entries([entry], log._stamp)


def test_the_batch_formatter_replaces_what_utf8_cannot_carry():
    log = AccessLog("web", fd=-1)
    entry = (1.7e9, "10.0.0.1", "GET", "/\udcff", "1.1", 200, "-", 0, None, None, 0.001, "bad \ud800", None,
             "x\udcff")
    assert format_entries([entry], log._stamp) == log.format(entry).encode("utf-8", "replace")


def test_logged_fields_are_escaped_as_nginx_escapes_them():
    log = AccessLog("web", fd=-1)
    forged = '/a HTTP/1.1" 200 upstream=x\n2026-01-01 00:00:00 INFO edgeway.access: web 1.2.3.4 "GET /'
    entry = (1.7e9, "10.0.0.1", "GET\x1b[31m", forged + "\\\x7f\xe9\u20ac", "1.1", 400, "-", 0, None, None, 0.001,
             'invalid request target "\r\n"', None, None)
    line = format_entries([entry], log._stamp)
    assert line == log.format(entry).encode() and line.count(b"\n") == 1
    assert line.split(b"web ", 1)[1] == (
        b'10.0.0.1 "GET\\x1B[31m /a HTTP/1.1\\x22 200 upstream=x\\x0A2026-01-01 00:00:00 INFO edgeway.access: web '
        b'1.2.3.4 \\x22GET /\\x5C\\x7F\\xE9\\xE2\\x82\\xAC HTTP/1.1" 400 upstream=- bytes=0 connect_ms=- header_ms=- '
        b'total_ms=1.00 cause="invalid request target \\x22\\x0D\\x0A\\x22"\n')
    assert log_escape("plain /path?q=1") == "plain /path?q=1" and log_escape(7) == "7"
    assert log_escape("\ud800") == "\\xED\\xA0\\x80"


# ---------------------------------------------------------------------------- json format

ACCESS_FIELDS = {"time", "level", "logger", "listener", "client", "method", "path", "version", "status", "route",
                 "upstream",
                 "server", "bytes", "connect_ms", "header_ms", "total_ms", "cause", "request_id"}
# what a request's text is made of: the bytes the client sent, decoded as latin-1
_REQUEST_TEXT = st.binary(max_size=24).map(lambda b: b.decode("latin-1"))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.floats(1e9, 2e9), _REQUEST_TEXT | _TEXT, _REQUEST_TEXT | _TEXT, st.none() | st.integers(0, 999),
              _REQUEST_TEXT | _TEXT),
    _ENTRIES.filter(lambda e: len(e) == 14)), min_size=1, max_size=10))
def test_every_json_line_parses_whatever_the_client_sent(entries):
    log = AccessLog("web", fd=-1, json=True)
    for entry in entries:
        if len(entry) == 5:
            log.rejected(entry[1], entry[3], entry[4])
        else:
            log.request(entry)
    read, write = os.pipe()
    log.fd = write
    log.flush()
    os.close(write)
    data = b""
    while chunk := os.read(read, 1 << 20):
        data += chunk
    os.close(read)
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(entries) + 1   # one line each, none split
    for entry, line in zip(entries, lines):
        fields = json.loads(line)
        assert set(fields) == ACCESS_FIELDS and fields["listener"] == "web" and fields["logger"] == "edgeway.access"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])
        if len(entry) == 14:
            assert fields == reference(entry)


def reference(entry: tuple) -> dict:
    """What format_json writes, as the obvious dict (format_json writes it field by field)."""
    when, client, method, target, version, status, server, sent, connect, header, total, cause, route, rid = entry

    def ms(seconds):
        return None if seconds is None or not math.isfinite(round(seconds * 1000, 2)) else round(seconds * 1000, 2)

    return {"time": logs.rfc3339(when), "level": "info", "logger": "edgeway.access", "listener": "web",
            "client": client, "method": logs.client_text(method), "path": logs.client_text(target),
            "version": version, "status": status, "route": route and route.label,
            "upstream": route and route.upstream.name, "server": None if server == "-" else server, "bytes": sent,
            "connect_ms": ms(connect), "header_ms": ms(header), "total_ms": ms(total), "cause": cause or None,
            "request_id": rid}


def test_json_shows_utf8_targets_as_text_and_other_bytes_as_escapes():
    log = AccessLog("web", fd=-1, json=True)
    target = b"/caf\xc3\xa9/\xff\x00\"\\".decode("latin-1")
    line = log.format_json((1.7e9, "10.0.0.1", "GET", target, "1.1", 200, "127.0.0.1:9001", 2, 0.001, 0.0021234,
                            0.003, "", ROUTES[0], "4bf92f3577b34da6a3ce929d0e0e4736"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.000Z", "level": "info", "logger": "edgeway.access", "listener": "web",
        "client": "10.0.0.1", "method": "GET", "path": "/café/\\xff\x00\"\\", "version": "1.1", "status": 200,
        "route": "#0 (path_prefix=/api/)", "upstream": "api", "server": "127.0.0.1:9001", "bytes": 2, "connect_ms": 1.0,
        "header_ms": 2.12, "total_ms": 3.0, "cause": None, "request_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
