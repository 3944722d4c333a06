"""A worker's lines say which worker wrote them: `[wN] ` before a text line, `"worker": N` in
a json one; the access log's lines too (its batch formatter and its json lines)."""

import json
import logging
import time

import pytest

from edgeway import logs
from edgeway.http.listener import AccessLog, format_entries


@pytest.fixture
def worker_2():
    logs.set_worker(2)
    yield
    logs.set_worker(None)


def record(message):
    logger = logging.getLogger("edgeway.test")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), None)


def test_logging_lines_are_tagged(worker_2):
    assert json.loads(logs.JsonFormatter().format(record("hello")))["worker"] == 2
    text = logging.Formatter(logs.worker_prefix + logs.TEXT_FORMAT).format(record("hello"))
    assert text.startswith("[w2] ") and text.endswith("INFO edgeway.test: hello")


def test_access_log_lines_are_tagged(worker_2):
    entry = (time.time(), "10.0.0.1", "GET", "/a", "1.1", 200, "127.0.0.1:9001", 2, None, 0.0002, 0.0004, "",
             None, None)
    log = AccessLog("web", fd=-1)
    text = log.format(entry)
    assert text.startswith("[w2] ") and " INFO edgeway.access: web 10.0.0.1 " in text
    assert format_entries([entry], log._stamp).decode() == text   # the C batch formatter: the same
    line = json.loads(AccessLog("web", fd=-1, json=True).format_json(entry))
    assert line["worker"] == 2 and line["listener"] == "web"
    log.rejected("10.0.0.2", 400, "malformed request")
    rejected = json.loads(AccessLog("web", fd=-1, json=True).format_json(log.lines[-1]))
    assert rejected["worker"] == 2


def test_a_single_process_has_no_tag():
    assert logs.worker is None and logs.worker_prefix == "" and logs.worker_json == ""
    assert "worker" not in json.loads(logs.JsonFormatter().format(record("hello")))
    entry = (time.time(), "10.0.0.1", "GET", "/a", "1.1", 200, "-", 0, None, None, 0.0004, "", None, None)
    assert not AccessLog("web", fd=-1).format(entry).startswith("[")
