"""GET /metrics end to end: a real `edgeway serve` (admin, DNS, http, https, tcp and udp
listeners) in front of real nginx and a UDP echo, scraped with curl after known traffic; the
scrape checked by `promtool check metrics`; a real Prometheus server scraping it with the
bearer token, its query API read back.

Counters are compared as differences around the traffic each test sends, so the tests do not
depend on each other's order; the expected values are exact (N connections -> +N)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import trustme
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.support.admin import NO_TOKEN, AdminServe
from tests.support.nginx_backends import nginx_backends
from tests.support.tools import free_port, require_tool

pytestmark = pytest.mark.interop

ZONE = """$ORIGIN example.test.
$TTL 300
@    SOA ns hostmaster 1 3600 600 86400 60
@    NS  ns
ns   A   127.0.0.1
www  A   192.0.2.1
"""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST = b"GET /m HTTP/1.0\r\nHost: t\r\n\r\n"     # HTTP/1.0: nginx answers and closes
UDP_SIZE = 100
DEADLINE = 30.0                                        # any wait in these tests


class UdpEcho:
    """A UDP server that sends every datagram back (the udp listener's upstream)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(data, addr)

    def stop(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class Stack:
    """The running edgeway and what it needs; `scrape()` returns {(name, labels): value}."""

    def __init__(self, serve: AdminServe, ports: dict, cert_file, ca):
        self.serve, self.ports, self.cert_file, self.ca = serve, ports, cert_file, ca

    def raw(self, token=None) -> tuple[int, dict, str]:
        curl = require_tool("curl")
        args = [curl, "-sS", "-i", "--max-time", "20"]
        token = self.serve.token if token is None else token
        if token is not NO_TOKEN:
            args += ["-H", f"Authorization: Bearer {token}"]
        out = subprocess.run(args + [self.serve.url + "/metrics"], capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, body.decode()

    def scrape(self) -> dict:
        status, _, text = self.raw()
        assert status == 200, text
        return samples(text)

    def wait_for(self, name: str, labels: dict, value: float) -> dict:
        """Scrape until the sample has `value` (gauges that follow the kernel's pace)."""
        give_up = time.monotonic() + DEADLINE
        while True:
            got = self.scrape()
            if got.get(key(name, labels)) == value or time.monotonic() > give_up:
                assert got.get(key(name, labels)) == value, (name, labels, got.get(key(name, labels)))
                return got
            time.sleep(0.1)


def key(name: str, labels: dict) -> tuple:
    return name, frozenset(labels.items())


def samples(text: str) -> dict:
    return {key(s.name, s.labels): s.value for family in text_string_to_metric_families(text)
            for s in family.samples}


def tcp_exchange(port: int, request: bytes = REQUEST) -> int:
    """One connection through the tcp listener: the request, the whole answer; its length."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        got = 0
        while chunk := s.recv(65536):
            got += len(chunk)
    assert got > 0
    return got


def dig(port: int, name: str) -> str:
    result = subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(port), "+short", "+tries=1",
                             "+time=3", name, "A"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def write_cert(directory, ca, name):
    cert = ca.issue_cert(f"{name}.example.test")
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert.private_key_pem.write_to_path(key_path)
    cert.cert_chain_pems[0].write_to_path(cert_path)
    return cert_path, key_path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    ca = trustme.CA()
    cert, cert_key = write_cert(tmp, ca, "one")
    zone = tmp / "example.test.zone"
    zone.write_text(ZONE)
    echo = UdpEcho()
    ports = {name: free_port() for name in ("dns", "http", "https", "tcp", "dead")}
    ports["udp"] = ports["tcp"]          # the same port number, one tcp and one udp listener
    try:
        with nginx_backends(tmp / "nginx", 2) as web:
            config = {
                "dns": {"listen": [f"127.0.0.1:{ports['dns']}"], "zones": [{"file": str(zone)}]},
                "upstreams": {
                    "web": {"servers": [{"address": f"127.0.0.1:{p}"} for p in web]},
                    "tcpweb": {"servers": [{"address": f"127.0.0.1:{web[0]}"}], "passive": {"max_fails": 0}},
                    "echo": {"servers": [{"address": f"127.0.0.1:{echo.port}"}]},
                    # a refused server before a live one: the L7 error and retry families get samples
                    "flaky": {"balance": "round_robin",
                              "servers": [{"address": f"127.0.0.1:{ports['dead']}"}, {"address": f"127.0.0.1:{web[0]}"}]},
                    # nothing listens there: its active check fails once and takes it down
                    "dead": {"servers": [{"address": f"127.0.0.1:{ports['dead']}"}],
                             "health_check": {"type": "tcp", "interval": "0.2s", "timeout": "0.5s",
                                              "rise": 1, "fall": 1}},
                },
                "listeners": [
                    {"name": "web", "protocol": "http", "listen": f"127.0.0.1:{ports['http']}",
                     "routes": [{"match": {"path_prefix": "/flaky/"}, "upstream": "flaky"}, {"upstream": "web"}]},
                    {"name": "secure", "protocol": "https", "listen": f"127.0.0.1:{ports['https']}",
                     "routes": [{"upstream": "web"}], "tls": {"cert": str(cert), "key": str(cert_key)}},
                    {"name": "tcp", "protocol": "tcp", "listen": f"127.0.0.1:{ports['tcp']}", "upstream": "tcpweb"},
                    {"name": "udp", "protocol": "udp", "listen": f"127.0.0.1:{ports['udp']}", "upstream": "echo",
                     "session_timeout": "120s"},
                ],
            }
            with AdminServe(tmp, config) as serve:
                yield Stack(serve, ports, cert, ca)
    finally:
        echo.stop()


def test_metrics_needs_the_token_and_is_prometheus_text(stack):
    status, headers, body = stack.raw(token=NO_TOKEN)
    assert status == 401 and "bearer token" in body
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, _ = stack.raw(token="wrong")
    assert status == 401
    status, headers, body = stack.raw()
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body.encode())
    got = samples(body)
    # the process metrics prometheus-client gives
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert key(name, {}) in got, name
    assert got[key("process_open_fds", {})] > 0


def test_tcp_counters_move_by_exactly_the_traffic(stack):
    n = 25
    before = stack.scrape()
    received = sum(tcp_exchange(stack.ports["tcp"]) for _ in range(n))
    # a connection is counted closed once both sides are: wait until the last one is
    after = stack.wait_for("edgeway_l4_active_connections", {"listener": "tcp"}, 0)

    def delta(name, **labels):
        return after[key(name, labels)] - before[key(name, labels)]

    assert delta("edgeway_l4_connections_total", listener="tcp") == n
    assert delta("edgeway_l4_bytes_total", listener="tcp", direction="in") == n * len(REQUEST)
    assert delta("edgeway_l4_bytes_total", listener="tcp", direction="out") == received
    server = stack.serve.config["upstreams"]["tcpweb"]["servers"][0]["address"]
    assert delta("edgeway_upstream_server_requests_total", upstream="tcpweb", server=server) == n
    assert after[key("edgeway_upstream_server_in_flight", {"upstream": "tcpweb", "server": server})] == 0


def test_active_connections_and_in_flight_follow_open_connections(stack):
    held = []
    server = stack.serve.config["upstreams"]["tcpweb"]["servers"][0]["address"]
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", stack.ports["tcp"]), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")    # keep-alive: nginx keeps it open
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(s)
        got = stack.wait_for("edgeway_l4_active_connections", {"listener": "tcp"}, 3)
        assert got[key("edgeway_upstream_server_in_flight", {"upstream": "tcpweb", "server": server})] == 3
    finally:
        for s in held:
            s.close()
    stack.wait_for("edgeway_l4_active_connections", {"listener": "tcp"}, 0)


def test_udp_flows_and_bytes(stack):
    m = 7
    before = stack.scrape()
    payload = b"x" * UDP_SIZE
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(m)]
    try:
        for c in clients:             # each its own source port: a flow each
            c.settimeout(5)
            c.sendto(payload, ("127.0.0.1", stack.ports["udp"]))
            assert c.recv(65535) == payload
        after = stack.scrape()
    finally:
        for c in clients:
            c.close()

    def delta(name, **labels):
        return after[key(name, labels)] - before[key(name, labels)]

    assert delta("edgeway_l4_connections_total", listener="udp") == m
    assert delta("edgeway_l4_udp_flows", listener="udp") == m       # session_timeout 120s: none expired
    assert delta("edgeway_l4_bytes_total", listener="udp", direction="in") == m * UDP_SIZE
    assert delta("edgeway_l4_bytes_total", listener="udp", direction="out") == m * UDP_SIZE
    assert key("edgeway_l4_active_connections", {"listener": "udp"}) not in after   # tcp only


def test_counters_survive_a_reload(stack):
    tcp_exchange(stack.ports["tcp"])
    server = stack.serve.config["upstreams"]["tcpweb"]["servers"][0]["address"]
    names = [("edgeway_l4_connections_total", {"listener": "tcp"}),
             ("edgeway_l4_bytes_total", {"listener": "tcp", "direction": "in"}),
             ("edgeway_upstream_server_requests_total", {"upstream": "tcpweb", "server": server})]
    before = stack.wait_for("edgeway_l4_active_connections", {"listener": "tcp"}, 0)
    assert all(before[key(*n)] > 0 for n in names)
    status, _, body = stack.serve.curl("POST", "/api/v1/reload")
    assert status == 200 and body["ok"], body
    after = stack.scrape()
    assert [after[key(*n)] for n in names] == [before[key(*n)] for n in names]
    tcp_exchange(stack.ports["tcp"])
    after = stack.wait_for("edgeway_l4_active_connections", {"listener": "tcp"}, 0)
    assert after[key(*names[0])] == before[key(*names[0])] + 1


def state_series(got: dict, upstream: str, server: str) -> dict:
    return {state: got[key("edgeway_upstream_server_state", {"upstream": upstream, "server": server,
                                                               "state": state})]
            for state in ("up", "down", "drain", "maint", "checking")}


def test_server_states_health_transitions_and_admin_states(stack):
    dead = f"127.0.0.1:{stack.ports['dead']}"
    got = stack.wait_for("edgeway_upstream_server_up", {"upstream": "dead", "server": dead}, 0)
    assert state_series(got, "dead", dead) == {"up": 0, "down": 1, "drain": 0, "maint": 0, "checking": 0}
    labels = {"upstream": "dead", "server": dead}
    assert got[key("edgeway_upstream_health_transitions_total", {**labels, "to": "down"})] == 1
    assert got[key("edgeway_upstream_health_transitions_total", {**labels, "to": "up"})] == 0

    web2 = stack.serve.config["upstreams"]["web"]["servers"][1]["address"]
    status, _, body = stack.serve.curl("POST", f"/api/v1/upstreams/web/servers/{web2}/state", '{"state": "drain"}')
    assert status == 200, body
    got = stack.scrape()
    assert state_series(got, "web", web2) == {"up": 0, "down": 0, "drain": 1, "maint": 0, "checking": 0}
    # drained by an operator, still healthy: "up" is the health verdict
    assert got[key("edgeway_upstream_server_up", {"upstream": "web", "server": web2})] == 1
    status, _, body = stack.serve.curl("POST", f"/api/v1/upstreams/web/servers/{web2}/state", '{"state": "ready"}')
    assert status == 200, body
    assert state_series(stack.scrape(), "web", web2)["up"] == 1


def cert_series(got: dict) -> dict:
    return {(dict(labels)["listener"], dict(labels)["file"], dict(labels)["subject"]): value
            for (name, labels), value in got.items() if name == "edgeway_tls_certificate_not_after_seconds"}


def test_tls_certificate_expiry_follows_a_reload(stack):
    def expected(path):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return ("secure", str(path), cert.subject.rfc4514_string()), cert.not_valid_after_utc.timestamp()

    name, value = expected(stack.cert_file)
    assert cert_series(stack.scrape()) == {name: value}
    # a second certificate in a new file, through a reload: the series follow the config
    two, two_key = write_cert(stack.serve.dir, stack.ca, "two")
    config = stack.serve.config
    secure = next(listener for listener in config["listeners"] if listener["name"] == "secure")
    original = dict(secure["tls"])
    secure["tls"] = {"cert": str(two), "key": str(two_key)}
    try:
        stack.serve.write(config)
        status, _, body = stack.serve.curl("POST", "/api/v1/reload")
        assert status == 200, body
        name2, value2 = expected(two)
        assert cert_series(stack.scrape()) == {name2: value2}
    finally:
        secure["tls"] = original
        stack.serve.write(config)
        status, _, body = stack.serve.curl("POST", "/api/v1/reload")
        assert status == 200, body
    assert cert_series(stack.scrape()) == {name: value}


def traffic_for_every_family(stack) -> None:
    """Something through every listener, so every family has samples (DNS and L7 ones too
    once their counting is merged)."""
    assert dig(stack.ports["dns"], "www.example.test") == "192.0.2.1"
    assert dig(stack.ports["dns"], "nope.example.test") == ""
    curl = require_tool("curl")
    # two through "flaky": round robin sends one of them to the refused server first, then retries
    for path in ("/a", "/b", "/flaky/1", "/flaky/2"):
        url = f"http://127.0.0.1:{stack.ports['http']}{path}"
        out = subprocess.run([curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", url],
                             capture_output=True, text=True, timeout=20)
        assert out.stdout == "200", out.stderr
    tcp_exchange(stack.ports["tcp"])


def test_promtool_accepts_the_scrape_without_a_warning(stack):
    promtool = require_tool("promtool")
    traffic_for_every_family(stack)
    status, _, body = stack.raw()
    assert status == 200
    names = {family.name for family in text_string_to_metric_families(body)}
    ours = {"edgeway_upstream_server_up", "edgeway_upstream_server_state", "edgeway_upstream_server_in_flight",
            "edgeway_upstream_server_requests", "edgeway_upstream_health_transitions",
            "edgeway_l4_connections", "edgeway_l4_active_connections", "edgeway_l4_bytes",
            "edgeway_l4_udp_flows", "edgeway_tls_certificate_not_after_seconds", "process_cpu_seconds"}
    assert ours <= names, ours - names
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    # promtool prints lint problems and exits 1 for them; a clean scrape prints nothing
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr
    # every family has samples (a family with no series would say nothing about its names)
    empty = [f.name for f in text_string_to_metric_families(body) if not f.samples]
    assert not empty, empty


def test_a_real_prometheus_scrapes_with_the_token(stack, tmp_path):
    prometheus = require_tool("prometheus")
    tcp_exchange(stack.ports["tcp"])
    want = stack.scrape()[key("edgeway_l4_connections_total", {"listener": "tcp"})]
    token_file = tmp_path / "token"
    token_file.write_text(stack.serve.token)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "edgeway", "metrics_path": "/metrics",
                            "authorization": {"credentials_file": str(token_file)},
                            "static_configs": [{"targets": [f"127.0.0.1:{stack.serve.port}"]}]}],
    }))
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)

    def query(expr: str):
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                result = json.load(response)["data"]["result"]
        except OSError:
            return None                 # not up yet
        return float(result[0]["value"][1]) if result else None

    try:
        give_up = time.monotonic() + DEADLINE
        got = {}
        checks = {
            'up{job="edgeway"}': 1.0,
            'edgeway_l4_connections_total{listener="tcp"}': want,
            'edgeway_upstream_server_state{upstream="dead",state="down"}': 1.0,
            'edgeway_l4_udp_flows{listener="udp"} >= 0': None,     # present (its value varies)
        }
        while time.monotonic() < give_up:
            got = {expr: query(expr) for expr in checks}
            if all(got[e] is not None and (v is None or got[e] == v) for e, v in checks.items()):
                break
            time.sleep(0.5)
        assert all(got.get(e) is not None and (v is None or got[e] == v) for e, v in checks.items()), \
            (got, (tmp_path / "prometheus.log").read_text()[-2000:])
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_metrics_without_token_opens_only_metrics(tmp_path):
    with AdminServe(tmp_path) as serve:
        assert serve.curl("GET", "/api/v1/status", token=NO_TOKEN)[0] == 401
        serve.config["admin"]["metrics_without_token"] = True
        serve.write(serve.config)
        status, _, body = serve.curl("POST", "/api/v1/reload")
        assert status == 200, body
        out = subprocess.run([require_tool("curl"), "-sS", "-w", "\n%{http_code}", serve.url + "/metrics"],
                             capture_output=True, text=True, timeout=20)
        assert out.stdout.rstrip().endswith("\n200") and "process_cpu_seconds_total" in out.stdout
        # the rest of the API still needs it
        assert serve.curl("GET", "/api/v1/status", token=NO_TOKEN)[0] == 401
