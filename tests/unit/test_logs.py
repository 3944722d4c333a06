"""log.format json for the logging module's lines (edgeway/logs.py)."""

import json
import logging
import re

from edgeway import logs


def record(message, *args, exc_info=None, **extra):
    logger = logging.getLogger("edgeway.test")
    return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, args, exc_info, extra=extra)


def test_a_record_is_one_object_with_its_extra_fields():
    line = logs.JsonFormatter().format(record("upstream %s: %s", "api", "server 127.0.0.1:9001 is DOWN",
                                              event="health", upstream="api", server="127.0.0.1:9001", to="down"))
    assert "\n" not in line
    fields = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields.pop("time"))
    assert fields == {"level": "warning", "logger": "edgeway.test",
                      "message": "upstream api: server 127.0.0.1:9001 is DOWN", "event": "health", "upstream": "api",
                      "server": "127.0.0.1:9001", "to": "down"}


def test_a_traceback_and_any_text_stay_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys
        rec = record("oops \x00 \ud800 \u20ac %s", "\r\n", exc_info=sys.exc_info(), path=object())
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line and line.isascii()
    fields = json.loads(line)
    assert fields["message"] == "oops \x00 \ud800 \u20ac \r\n" and "ValueError: bad" in fields["exception"]
    assert fields["path"].startswith("<object object")   # what json cannot hold, as its str()


def test_rfc3339_milliseconds_in_utc():
    assert logs.rfc3339(1700000000.0) == "2023-11-14T22:13:20.000Z"
    assert logs.rfc3339(1700000001.9999) == "2023-11-14T22:13:21.999Z"
    assert logs.rfc3339(1700000000.5) == "2023-11-14T22:13:20.500Z"


def test_client_text_is_shown_as_utf8_when_it_is():
    assert logs.client_text("/plain") == "/plain"
    assert logs.client_text(b"/caf\xc3\xa9".decode("latin-1")) == "/café"
    assert logs.client_text(b"/\xff\xc3".decode("latin-1")) == "/\\xff\\xc3"
    assert logs.client_text("\u20ac") == "\u20ac"   # not request bytes: as it is
