"""How edgeway writes its lines on stderr: `log: {format: text|json}` (docs/operations.md, "Logs").

In json every line is one JSON object, so that a log shipper (Vector, Fluent Bit, Loki's
promtail, `jq`) reads fields rather than parsing text: the lines of the logging module through
JsonFormatter (time, level, logger, message, and the fields a caller passed with `extra=`),
and the access log, which writes its own lines (http/listener.py AccessLog) with the same
time and level keys.

Whatever bytes a client sent, a line stays valid JSON: json.dumps escapes control characters
and, with ensure_ascii, everything beyond ASCII (a lone surrogate too), and client text that
came in as latin-1 is shown as the UTF-8 it usually is (see client_text).
"""

from __future__ import annotations

import json
import logging
import sys
import time

# the attributes every LogRecord has: anything else on a record came from `extra=`
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

_second = -1
_stamp = ""


def rfc3339(when: float) -> str:
    """`when` (a time.time()) as RFC 3339 in UTC with milliseconds: 2026-12-03T06:40:01.123Z.
    UTC, so that lines from machines in different zones sort as text."""
    global _second, _stamp
    second = int(when)
    if second != _second:   # the date part is made once a second
        _stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return f"{_stamp}.{int((when - second) * 1000):03d}Z"


def client_text(text: str) -> str:
    """Request text (decoded as latin-1, so that each character is the byte that came) as the
    UTF-8 it usually is: /caf\\xc3\\xa9 reads "/café"; a byte that is not part of valid UTF-8
    stays visible as the four characters \\xHH, as in the text log."""
    if text.isascii():
        return text
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:   # not request bytes (our own text): as it is
        return text
    return raw.decode("utf-8", "backslashreplace")


def dumps(fields: dict) -> str:
    # ensure_ascii: a lone surrogate or any other character is written as an escape, so the
    # line is ASCII and cannot fail to encode on the way to the file descriptor
    return json.dumps(fields, default=str, separators=(",", ":"))


# A worker process (edgeway.workers): its index tags every line it writes, so that the lines of
# a process group, all on the supervisor's stderr, say which worker wrote them.
worker: int | None = None
worker_prefix = ""          # text: "[w1] " before the line
worker_json = ""            # json: '"worker":1,' among the fields


def set_worker(index: int | None) -> None:
    """Tag this process's lines with worker `index` (None: no tag, a single process)."""
    global worker, worker_prefix, worker_json
    worker = index
    worker_prefix = f"[w{index}] " if index is not None else ""
    worker_json = f'"worker":{index},' if index is not None else ""
    set_format(_format)


class JsonFormatter(logging.Formatter):
    """A logging record as one JSON object: time, level, logger, message, then the fields the
    caller passed with `extra=` (e.g. the health checker's upstream, server and to), then
    the traceback as `exception` if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {"time": rfc3339(record.created), "level": record.levelname.lower(), "logger": record.name,
                  "message": record.getMessage()}
        if worker is not None:
            fields["worker"] = worker
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS and key not in fields:
                fields[key] = value
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return dumps(fields)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_format = "text"


def current_format() -> str:
    return _format


def set_format(fmt: str) -> None:
    """Apply `log.format` to the handlers of the root logger (set up by setup_logging): at
    start and at a reload that changes it."""
    global _format
    _format = fmt
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(worker_prefix + TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    # Python's warnings (a DeprecationWarning of a library) would otherwise be raw text lines
    logging.captureWarnings(fmt == "json")


def setup(level: str, fmt: str = "text") -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=TEXT_FORMAT, stream=sys.stderr)
    set_format(fmt)
