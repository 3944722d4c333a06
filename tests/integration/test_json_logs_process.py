"""`log: {format: json}` and X-Request-ID through a real `edgeway serve`: every line it writes
is a JSON object (access log, DNS query log, a health transition, a reload on SIGHUP, the
start and stop lines), and request ids go round trip with real curl and a backend that echoes
the headers it received: a sane client id is kept, anything else replaced by 32 hex digits,
on the fast path (curl's head in one packet) and on httptools' path (the head in two)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time

import yaml

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool, wait_for_port

ACCESS_FIELDS = {"time", "level", "logger", "listener", "client", "method", "path", "version", "status", "route",
                 "upstream", "server", "bytes", "connect_ms", "header_ms", "total_ms", "cause", "request_id"}
HEX32 = re.compile(r"[0-9a-f]{32}")
ZONE = """$ORIGIN log.test.
$TTL 60
@    IN SOA ns1 admin 1 3600 600 86400 60
@    IN NS  ns1
ns1  IN A   127.0.0.1
www  IN A   192.0.2.7
"""


def curl(url: str, *ids: str) -> tuple[dict, dict]:
    """GET url with these X-Request-ID fields: (response fields, lower-cased; the fields the
    server received, as the echo backend lists them)."""
    args = [require_tool("curl"), "-s", "-m", "5", "-D", "-", url]
    for rid in ids:
        args += ["-H", f"X-Request-ID: {rid}"]
    out = subprocess.run(args, capture_output=True, timeout=10).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out
    return fields(head), json.loads(body)["headers"]


def split_request(port: int, path: str, *ids: str) -> tuple[dict, dict]:
    """The same as curl() with the head in two packets: the proxy's httptools path."""
    request = (f"GET {path} HTTP/1.1\r\nHost: a\r\n" + "".join(f"X-Request-ID: {rid}\r\n" for rid in ids)
               + "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request[:20])
        time.sleep(0.05)
        s.sendall(request[20:])
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out
    return fields(head), json.loads(body)["headers"]


def fields(head: bytes) -> dict:
    found: dict[str, list[str]] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        found.setdefault(name.lower(), []).append(value.strip())
    return found


def seen_ids(received) -> list[str]:
    return [value for name, value in received if name.lower() == "x-request-id"]


def wait_line(log, predicate, what: str, proc, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_text().splitlines():
            obj = json.loads(line)
            if predicate(obj):
                return obj
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {what} line in:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def test_every_line_is_json_and_request_ids_go_round_trip(tmp_path):
    dig = require_tool("dig")
    http, plain, dns_port, dead = free_port(), free_port(), free_port(), free_port()
    zone = tmp_path / "log.test.zone"
    zone.write_text(ZONE)
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        route = [{"match": {"path_prefix": "/"}, "upstream": "api"}]
        config = {
            "log": {"format": "json"},
            "dns": {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}], "query_log": True},
            "upstreams": {
                "api": {"servers": [{"address": backend.address}]},
                # nothing listens there: its checks fail, and it goes DOWN (a health transition)
                "spare": {"servers": [{"address": f"127.0.0.1:{dead}"}],
                          "health_check": {"type": "tcp", "interval": "0.2s", "timeout": "0.5s", "fall": 1}},
            },
            "listeners": [
                {"name": "web", "protocol": "http", "listen": f"127.0.0.1:{http}", "routes": route},
                {"name": "plain", "protocol": "http", "listen": f"127.0.0.1:{plain}", "request_id": False,
                 "routes": route},
            ],
        }
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "edgeway.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(path)), stdout=out, stderr=subprocess.STDOUT,
                                    env=edgeway_env())
        try:
            wait_for_port("127.0.0.1", plain, proc=proc)
            expected = {}   # path -> the request id the access log must show

            # --- request ids, curl (one packet: the fast path; from the second on, in line)
            cases = [("sane", ["client-id.1:2_3"], "client-id.1:2_3"), ("long", ["a" * 129], None),
                     ("chars", ["a b/c"], None), ("two", ["a", "b"], None), ("none", [], None)]
            for round_ in (1, 2):
                for name, ids, kept in cases:
                    target = f"/echo?case={name}-{round_}"
                    response, received = curl(f"http://127.0.0.1:{http}{target}", *ids)
                    (sent,) = seen_ids(received)                       # the server sees exactly one
                    assert response["x-request-id"] == [sent], (name, response)   # the client gets it back
                    assert sent == kept if kept else HEX32.fullmatch(sent), (name, sent)
                    expected[target] = sent
            # --- the head in two packets: httptools' path
            for name, ids, kept in cases:
                target = f"/echo?split={name}"
                response, received = split_request(http, target, *ids)
                (sent,) = seen_ids(received)
                assert response["x-request-id"] == [sent]
                assert sent == kept if kept else HEX32.fullmatch(sent), (name, sent)
                expected[target] = sent
            ids = list(expected.values())
            assert len(set(ids)) == len(ids) - 2   # new ids all differ (the sane one came three times)
            # our own answer (the listener's health path) carries one too
            health = subprocess.run([require_tool("curl"), "-s", "-D", "-", "-o", "/dev/null",
                                     f"http://127.0.0.1:{http}/health"], capture_output=True, timeout=10).stdout
            assert HEX32.fullmatch(fields(health.split(b"\r\n\r\n")[0])["x-request-id"][0])
            # request_id: false: nothing added, nothing taken away
            response, received = curl(f"http://127.0.0.1:{plain}/echo?off=1", "client-1")
            assert seen_ids(received) == ["client-1"] and "x-request-id" not in response
            response, received = curl(f"http://127.0.0.1:{plain}/echo?off=2")
            assert seen_ids(received) == [] and "x-request-id" not in response

            # --- a DNS query (query_log), a health transition, a reload
            answer = subprocess.run([dig, "@127.0.0.1", "-p", str(dns_port), "+short", "+tries=1", "+time=2",
                                     "www.log.test", "A"], capture_output=True, text=True, timeout=10).stdout
            assert answer.strip() == "192.0.2.7"
            query = wait_line(log, lambda o: o["logger"] == "edgeway.dns.query", "DNS query", proc)
            assert query["qname"] == "www.log.test." and query["qtype"] == "A" and query["rcode"] == "NOERROR"
            assert query["proto"] == "udp" and query["answers"] == 1 and query["client"].startswith("127.0.0.1:")
            assert isinstance(query["duration_us"], int) and query["level"] == "info"
            down = wait_line(log, lambda o: o.get("event") == "health", "health transition", proc)
            assert down == {**down, "level": "warning", "logger": "edgeway.health", "upstream": "spare", "server": f"127.0.0.1:{dead}",
                            "to": "down"}
            assert "is DOWN" in down["message"]
            config["listeners"][1]["access_log"] = False
            path.write_text(yaml.safe_dump(config))
            proc.send_signal(signal.SIGHUP)
            reload = wait_line(log, lambda o: o.get("event") == "reload", "reload", proc)
            assert reload["ok"] is True and reload["level"] == "info" and reload["config"] == str(path)
            assert reload["changes"] and all(isinstance(c, str) for c in reload["changes"])
            wait_line(log, lambda o: sum(1 for line in log.read_text().splitlines()
                                         if json.loads(line).get("logger") == "edgeway.access") >= len(expected) + 3,
                      "access", proc)   # (the access log is flushed by the sweeper, within a second)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        assert proc.returncode == 0

    lines = [json.loads(line) for line in log.read_text().splitlines()]   # every one of them
    assert all({"time", "level", "logger"} <= set(obj) for obj in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["time"]) for obj in lines)
    access = [obj for obj in lines if obj["logger"] == "edgeway.access"]
    assert all(set(obj) == ACCESS_FIELDS for obj in access)
    by_path = {obj["path"]: obj for obj in access}
    for target, rid in expected.items():
        entry = by_path[target]
        assert entry["request_id"] == rid and entry["status"] == 200 and entry["listener"] == "web"
        assert entry["method"] == "GET" and entry["upstream"] == "api" and entry["server"] == backend.address
        assert entry["route"] and entry["client"] == "127.0.0.1" and entry["bytes"] > 0 and entry["cause"] is None
        assert entry["total_ms"] >= entry["header_ms"] >= 0
    assert by_path["/echo?off=1"]["request_id"] is None and by_path["/echo?off=1"]["listener"] == "plain"
    assert HEX32.fullmatch(by_path["/health"]["request_id"])
    assert any("SIGHUP" in obj["message"] for obj in lines if "message" in obj)


def test_the_text_access_log_names_the_request_id(tmp_path):
    port = free_port()
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        config = {"upstreams": {"api": {"servers": [{"address": backend.address}]}},
                  "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]}]}
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "edgeway.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(path)), stdout=out, stderr=subprocess.STDOUT,
                                    env=edgeway_env())
        try:
            wait_for_port("127.0.0.1", port, proc=proc)
            response, received = curl(f"http://127.0.0.1:{port}/echo?text=1", "from-client")
            assert seen_ids(received) == ["from-client"] and response["x-request-id"] == ["from-client"]
            deadline = time.monotonic() + 10
            while "GET /echo?text=1 HTTP/1.1" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    (line,) = [line for line in log.read_text().splitlines() if "/echo?text=1" in line]
    assert re.search(r' 200 upstream=127\.0\.0\.1:\d+ bytes=\d+ connect_ms=[\d.]+ header_ms=[\d.]+ total_ms=[\d.]+ '
                     r'request_id=from-client$', line), line
