"""`edgeway import nginx`, differential: for each nginx.conf, real nginx runs the file and then
`edgeway serve` runs its import, on the same loopback port in front of the same backends; the
same requests go to each, and what the backends receive (request line, Host, X-Real-IP,
X-Forwarded-*, absent fields), what the client gets (status, body, Location) and the spread
over the servers are compared.

The proxies run one after the other on one port, so that the file imported is the very file
nginx ran. Differences that are nginx's and not the translation's (nginx speaks HTTP/1.0 with
Connection: close to servers without proxy_http_version 1.1) are left out of the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tcp_peers import TcpPeer
from tests.support.tools import EdgewayProcess, free_port, require_tool, run_edgeway, wait_for_port

COMPARED = ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
            "forwarded", "x-custom")


def nginx_conf(workdir: Path, body: str, head: str = "") -> str:
    """A whole nginx.conf that runs unprivileged in `workdir` around `body` (http/stream blocks)."""
    return f"""{head}
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 64; }}
{body}
"""


def http_block(workdir: Path, body: str) -> str:
    return f"""http {{
    access_log off;
    client_body_temp_path {workdir}; proxy_temp_path {workdir};
    fastcgi_temp_path {workdir}; uwsgi_temp_path {workdir}; scgi_temp_path {workdir};
{body}
}}"""


@contextlib.contextmanager
def run_nginx(conf: Path, port: int, udp: bool = False) -> Iterator[None]:
    proc = subprocess.Popen([require_tool("nginx"), "-p", str(conf.parent), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield
    finally:
        proc.terminate()
        proc.wait(5)


def imported(conf: Path) -> tuple[Path, str]:
    """`edgeway import nginx` and `edgeway check` on its output, as a user runs them."""
    out = conf.parent / "edgeway.yaml"
    result = run_edgeway("import", "nginx", str(conf), "-o", str(out))
    assert result.returncode == 0, result.stderr
    check = run_edgeway("check", str(out))
    assert check.returncode == 0, check.stderr + out.read_text()
    return out, result.stderr


def exchange(port: int, target: str, host: str = "app.test", extra: str = "") -> dict:
    """One request on its own connection: status, Location, Content-Type, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if fields.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return {"status": int(lines[0].split(" ")[1]), "location": fields.get("location"),
            "type": (fields.get("content-type") or "").split(";")[0] or None, "body": body}


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, data = out + rest[:n], rest[n + 2:]
    return out


def seen(head: bytes) -> dict:
    """What a backend received: method and target (not the version), and the compared fields."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return {"line": f"{method} {target}", **{k: fields.get(k) for k in COMPARED}}


class Side:
    """One proxy's answers and what the backends received for them, request by request."""

    def __init__(self) -> None:
        self.answers: list[dict] = []
        self.received: list[dict | None] = []
        self.backend: list[str | None] = []


def drive(backends: list[EchoBackend], port: int, requests: list[tuple]) -> Side:
    side = Side()
    for req in requests:
        before = [len(b.heads) for b in backends]
        answer = exchange(port, *req)
        got = [(b, b.heads[n:]) for b, n in zip(backends, before) if len(b.heads) > n]
        assert len(got) <= 1 and all(len(h) == 1 for _, h in got), got
        answer["body"] = answer["body"]
        side.answers.append(answer)
        side.received.append(seen(got[0][1][0]) if got else None)
        side.backend.append(got[0][0].name if got else None)
    return side


def differential(tmp_path: Path, body: Callable[[list[EchoBackend], int, Path], str], requests: list[tuple],
                 backends: int = 3) -> tuple[Side, Side, str]:
    """Run nginx on the config, then edgeway on its import; returns (nginx, edgeway, report)."""
    with BackgroundLoop() as bg:
        servers = [bg.call(EchoBackend(f"b{i}").start()) for i in range(1, backends + 1)]
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_conf(tmp_path, body(servers, port, tmp_path)))
        out, report = imported(conf)
        with run_nginx(conf, port):
            nginx = drive(servers, port, requests)
        with EdgewayProcess(out, ready=("127.0.0.1", port)):
            edgeway = drive(servers, port, requests)
        for s in servers:
            bg.call(s.stop())
    return nginx, edgeway, report


def assert_same(nginx: Side, edgeway: Side, requests: list[tuple], spread: bool = True) -> None:
    for i, req in enumerate(requests):
        for side in (nginx, edgeway):
            if not spread:   # the echo's body names the server: compared as the spread, separately
                side.answers[i]["body"] = re.sub(rb"^b\d ", b"", side.answers[i]["body"])
            # nginx's own pages name nginx and its version where edgeway's name edgeway
            side.answers[i]["body"] = re.sub(rb"<hr><center>[^<]*</center>", b"<hr>", side.answers[i]["body"])
        assert edgeway.answers[i] == nginx.answers[i], (req, nginx.answers[i], edgeway.answers[i])
        assert edgeway.received[i] == nginx.received[i], (req, nginx.received[i], edgeway.received[i])
        if spread:
            assert edgeway.backend[i] == nginx.backend[i], (req, nginx.backend, edgeway.backend)


SEED = """
upstream api_servers {{
    least_conn;
    server {b1};
    server {b2};
    server {b3};
}}
server {{
    listen 127.0.0.1:{port};
    server_name app.test;
    location / {{
        proxy_pass http://api_servers;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
    location /health {{
        return 200 'OK';
    }}
}}
"""


def test_the_seed_example(tmp_path):
    requests = [("/users?id=1",), ("/health",), ("/a", "app.test", "X-Forwarded-For: 198.51.100.7\r\n")] + \
        [(f"/n{i}",) for i in range(6)]
    nginx, edgeway, report = differential(tmp_path, lambda b, port, w: http_block(w, SEED.format(
        b1=b[0].address, b2=b[1].address, b3=b[2].address, port=port)), requests)
    assert_same(nginx, edgeway, requests, spread=False)
    # least_conn with one request at a time: every server idle, nginx goes round; so does edgeway
    assert Counter(edgeway.backend) == Counter(nginx.backend)
    assert nginx.received[2]["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
    assert ": not translated: " not in report, report


@pytest.mark.parametrize("method", ["", "least_conn;", "ip_hash;", "hash $request_uri;",
                                    "hash $request_uri consistent;", "random two;"])
def test_balancing_methods(tmp_path, method):
    upstream = "upstream pool {{ {m} server {b1} weight=2; server {b2}; server {b3}; }}"
    body = """server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://pool; }} }}"""
    requests = [(f"/k{i % 4}",) for i in range(16)]
    nginx, edgeway, report = differential(tmp_path, lambda b, port, w: http_block(w, (upstream + body).format(
        m=method, b1=b[0].address, b2=b[1].address, b3=b[2].address, port=port)), requests)
    assert_same(nginx, edgeway, requests, spread=False)
    if method == "":
        # smooth weighted round robin: the same servers in the same order
        assert edgeway.backend == nginx.backend
        assert Counter(nginx.backend) == {"b1": 8, "b2": 4, "b3": 4}
    elif method == "least_conn;":
        # one request at a time: every server idle, both take smooth weighted turns among them
        assert edgeway.backend == nginx.backend
        assert Counter(nginx.backend) == {"b1": 8, "b2": 4, "b3": 4}
        assert "translated: least_conn: " in report
    elif method.startswith(("hash", "ip_hash")):
        # one server per key in both (which server differs: the report says approximated)
        for side in (nginx, edgeway):
            by_key: dict[str, set] = {}
            for (target,), backend in zip(requests, side.backend):
                by_key.setdefault(target, set()).add(backend)
            assert all(len(s) == 1 for s in by_key.values()), by_key
        if method == "ip_hash;":   # every loopback client is in 127.0.0.0/24: one server
            assert len(set(nginx.backend)) == len(set(edgeway.backend)) == 1
    else:
        assert len(set(edgeway.backend)) > 1 and len(set(nginx.backend)) > 1


LOCATIONS = """
upstream a {{ server {b1}; }}
upstream b {{ server {b2}; }}
server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://a; }}
    location /images/ {{ proxy_pass http://b; }}
    location ~* \\.(gif|jpg)$ {{ proxy_pass http://b; }}
    location ^~ /static/ {{ proxy_pass http://a; }}
    location /static/deep/ {{ proxy_pass http://a; }}
    location = /exact {{ return 200 "exact\\n"; }}
    location ~ ^/CaSe {{ proxy_pass http://b; }}
}}
"""


def test_regex_and_exact_locations(tmp_path):
    requests = [(p,) for p in ("/", "/exact", "/exact/more", "/images/a.GIF", "/images/a.png", "/static/a.gif",
                               "/static/deep/a.gif", "/static/deep/a.txt", "/CaSe/x", "/case/x", "/x.jpg?q=1")]
    nginx, edgeway, _ = differential(tmp_path, lambda b, port, w: http_block(w, LOCATIONS.format(
        b1=b[0].address, b2=b[1].address, port=port)), requests, backends=2)
    assert_same(nginx, edgeway, requests)
    assert nginx.answers[5]["body"] == b"b1 /static/a.gif"      # ^~: no regex
    assert nginx.answers[6]["body"] == b"b2 /static/deep/a.gif"  # a longer plain prefix: regexes
    assert nginx.answers[7]["body"] == b"b1 /static/deep/a.txt"


URIS = """
upstream pool {{ server {b1}; }}
server {{
    listen 127.0.0.1:{port};
    location /api/ {{ proxy_pass http://pool/v1/; }}
    location /strip/ {{ proxy_pass http://pool/; }}
    location /addr/ {{ proxy_pass http://{b2}; proxy_set_header X-Custom "$host via $scheme"; }}
    location /fwd/ {{ proxy_pass http://pool; proxy_set_header X-Forwarded-Proto $scheme;
                     proxy_set_header X-Forwarded-Host $http_host; proxy_set_header Host $http_host; }}
    location /fwdhost/ {{ proxy_pass http://pool; proxy_set_header X-Forwarded-Host $host; }}
}}
"""


def test_proxy_pass_with_a_uri(tmp_path):
    requests = [(p,) for p in ("/api/users?x=1", "/api/", "/api", "/api?q=2", "/strip/a/b", "/addr/z", "/fwd/q")]
    requests += [("/fwd/h", "Other.Test:81"), ("/fwdhost/h", "Other.Test:81")]
    nginx, edgeway, report = differential(tmp_path, lambda b, port, w: http_block(w, URIS.format(
        b1=b[0].address, b2=b[1].address, port=port)), requests, backends=2)
    # X-Forwarded-Host $host: edgeway sends the Host as written (the report says approximated)
    assert nginx.received[-1]["x-forwarded-host"] == "other.test"
    assert edgeway.received[-1]["x-forwarded-host"] == "Other.Test:81"
    assert "approximated: proxy_set_header X-Forwarded-Host $host: " in report
    nginx.received[-1]["x-forwarded-host"] = edgeway.received[-1]["x-forwarded-host"] = None
    assert_same(nginx, edgeway, requests)
    assert nginx.received[0]["line"] == "GET /v1/users?x=1" and nginx.received[0]["host"] == "pool"
    assert nginx.answers[2]["status"] == 301


RETURNS = """
server {{
    listen 127.0.0.1:{port};
    default_type application/json;
    location = /text {{ return 200 "hello $remote_addr\\n"; }}
    location = /empty {{ return 200; }}
    location = /moved {{ return 301 https://example.test$request_uri; }}
    location = /found {{ return http://$host/elsewhere; }}
    location = /gone {{ return 410; }}
    location = /temp {{ return 307 /other; }}
    location / {{ return 404 "nothing here\\n"; }}
}}
server {{
    listen 127.0.0.1:{port};
    server_name redirect.test;
    return 301 https://$host$request_uri;
}}
server {{
    listen 127.0.0.1:{port};
    server_name *.wild.test;
    location /w/ {{ return 200 "wild $host\\n"; }}
}}
"""


def test_return_and_redirects(tmp_path):
    requests = [(p,) for p in ("/text", "/empty", "/moved?a=1", "/found", "/gone", "/temp", "/else")]
    # server blocks by name: a server-level return, a wildcard, and a name no server has (the
    # default server). (The wildcard server's other paths are nginx's files: edgeway answers
    # 404 there, and the report says so.)
    requests += [("/x?y=1", "Redirect.Test"), ("/w/1", "a.b.wild.test"), ("/text", "nobody.test")]
    nginx, edgeway, report = differential(tmp_path, lambda b, port, w: http_block(w, RETURNS.format(port=port)),
                                     requests, backends=1)
    assert_same(nginx, edgeway, requests)
    assert "approximated: server: requests that no location matches" in report


STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")   # Debian: libnginx-mod-stream

STREAM = """
stream {{
    upstream tcp_pool {{ server {t1}; server {t2}; }}
    upstream udp_pool {{ server {u1}; server {u2}; }}
    server {{ listen 127.0.0.1:{port}; proxy_pass tcp_pool; proxy_connect_timeout 2s; }}
    server {{ listen 127.0.0.1:{pport}; proxy_pass {t3}; proxy_protocol on; }}
    server {{ listen 127.0.0.1:{uport} udp; proxy_pass udp_pool; proxy_timeout 2s; }}
}}
"""


class UdpNamed(asyncio.DatagramProtocol):
    def __init__(self, name: str):
        self.name = name

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(self.name.encode() + b" " + data, addr)


def udp_ask(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(2048)


def tcp_talk(port: int, send: bytes) -> bytes:
    """Read the server's greeting line, send `send`, read its echo; close without a half-close
    (nginx's proxy_half_close is off: a client's FIN closes both sides at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while not data.endswith(b"\n"):
            data += s.recv(4096)
        s.sendall(send)
        while not data.endswith(send):
            data += s.recv(4096)
    return data


def proxied_talk(port: int) -> bytes:
    """A connection to the PROXY-protocol peer, which answers with the header it read."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while b"\n" not in data and (chunk := s.recv(4096)):
            data += chunk
    return data


def stream_module() -> str:
    """The load_module line nginx needs for stream {} (none when it is built in)."""
    version = subprocess.run([require_tool("nginx"), "-V"], capture_output=True, text=True).stderr
    if "--with-stream " in version + " " or "--with-stream\n" in version:
        return ""
    if STREAM_MODULE.exists():
        return f"load_module {STREAM_MODULE};"
    require_tool("ngx_stream_module (apt-get install libnginx-mod-stream)")
    return ""


def test_stream_tcp_and_udp(tmp_path):
    load = stream_module()
    with BackgroundLoop() as bg:
        peers = [bg.call(TcpPeer(f"t{i}").start()) for i in (1, 2)]
        proxied = bg.call(TcpPeer("t3", mode="proxy").start())

        async def udp(name):
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: UdpNamed(name), local_addr=("127.0.0.1", 0))
            return transport
        udps = [bg.call(udp(f"u{i}")) for i in (1, 2)]
        port, pport, uport = free_port(), free_port(), free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_conf(tmp_path, head=load, body=STREAM.format(
            t1=peers[0].address, t2=peers[1].address, t3=proxied.address, port=port, pport=pport, uport=uport,
            u1="127.0.0.1:%d" % udps[0].get_extra_info("sockname")[1],
            u2="127.0.0.1:%d" % udps[1].get_extra_info("sockname")[1])))
        out, report = imported(conf)
        results = []
        for runner in (lambda: run_nginx(conf, port), lambda: EdgewayProcess(out, ready=("127.0.0.1", port))):
            with runner():
                wait_for_port("127.0.0.1", pport)
                tcp = [tcp_talk(port, b"hi") for _ in range(4)]
                # new source port each time: a new flow, balanced
                datagrams = [udp_ask(uport, b"q%d" % i) for i in range(4)]
                before = len(proxied.headers)
                reply = proxied_talk(pport)
                header = proxied.headers[before]
                # the peer keeps its side open after answering: close it, so the proxy need not drain it
                bg.loop.call_soon_threadsafe(lambda: [w.transport.abort() for w in list(proxied.writers)])
                results.append((tcp, datagrams, reply.startswith(b"ProxyHeader(version=1"), type(header).__name__,
                                getattr(header, "source", None) and str(header.source[0])))
        for p in (*peers, proxied):
            bg.call(p.stop())
        for t in udps:
            t.close()
    nginx, edgeway = results
    assert Counter(nginx[0]) == Counter(edgeway[0]) == {b"t1\nhi": 2, b"t2\nhi": 2}
    assert Counter(d.split()[0] for d in nginx[1]) == Counter(d.split()[0] for d in edgeway[1])
    assert nginx[2:] == edgeway[2:]
    assert ": not translated: " not in report, report


TLS = """
upstream pool {{ server {b1}; }}
server {{
    listen 127.0.0.1:{port} ssl;
    server_name a.test;
    ssl_certificate a.crt;
    ssl_certificate_key a.key;
    location / {{ proxy_pass http://pool; proxy_set_header X-Forwarded-Proto $scheme; }}
}}
server {{
    listen 127.0.0.1:{port} ssl default_server;
    server_name b.test;
    ssl_certificate b.crt;
    ssl_certificate_key b.key;
    location / {{ return 200 "b $scheme $host\\n"; }}
}}
"""


def test_tls_servers_chosen_by_sni(tmp_path):
    import trustme

    curl = require_tool("curl")
    ca = trustme.CA()
    for name in ("a", "b"):
        cert = ca.issue_cert(f"{name}.test")
        cert.private_key_pem.write_to_path(tmp_path / f"{name}.key")
        cert.cert_chain_pems[0].write_to_path(tmp_path / f"{name}.crt")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_conf(tmp_path, http_block(tmp_path, TLS.format(b1=backend.address, port=port))))
        out, report = imported(conf)

        def ask(name: str, path: str) -> tuple[str, bytes | None]:
            before = len(backend.heads)
            got = subprocess.run([curl, "-s", "--max-time", "5", "--cacert", str(tmp_path / "ca.pem"),
                                  "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}{path}"],
                                 capture_output=True, text=True)
            assert got.returncode == 0, got.stderr       # the certificate of that name, verified
            head = backend.heads[before] if len(backend.heads) > before else None
            return got.stdout, head and seen(head)["x-forwarded-proto"]

        results = []
        for runner in (lambda: run_nginx(conf, port), lambda: EdgewayProcess(out, ready=("127.0.0.1", port))):
            with runner():
                results.append([ask("a.test", "/x"), ask("b.test", "/y")])
        bg.call(backend.stop())
    assert results[0] == results[1] == [("b1 /x", "https"), ("b https b.test\n", None)]
    assert ": not translated: " not in report, report
