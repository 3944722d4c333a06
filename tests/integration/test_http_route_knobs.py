"""routes[].respond, proxy_headers, set_headers and replace_prefix through a real `edgeway
serve`, side by side with a real nginx configured the way each knob says it behaves: the
same requests, the same backend (an EchoBackend recording the heads it receives), and the
answers and heads compared. The requests go on both of the proxy's paths (a whole head in
one packet: the fast path; the head in two packets: httptools)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import EdgewayProcess, free_port, require_tool, run_edgeway, wait_for_port


@contextlib.contextmanager
def nginx(workdir: Path, server_body: str, upstreams: str = "") -> Iterator[int]:
    """A real nginx with one server block on a free port; yields the port."""
    binary = require_tool("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (workdir / "nginx.conf").write_text(f"""worker_processes 1; daemon off; pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn; events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {workdir}; proxy_temp_path {workdir};
  fastcgi_temp_path {workdir}; uwsgi_temp_path {workdir}; scgi_temp_path {workdir};
  {upstreams}
  server {{ listen 127.0.0.1:{port};
{server_body}
  }}
}}""")
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def exchange(port: int, request: bytes, split: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection (Connection: close): status, fields (lower-case
    names), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if split:   # two packets: the httptools path
            s.sendall(request[:12])
            time.sleep(0.03)
            s.sendall(request[12:])
        else:
            s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), fields, body


def request(target: str, host: str = "Shop.Example:8888", extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode("latin-1")


def serve(tmp_path: Path, port: int, routes: list[dict], upstreams: dict) -> EdgewayProcess:
    config = {"upstreams": upstreams,
              "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}", "routes": routes}]}
    path = tmp_path / "edgeway.yaml"
    path.write_text(yaml.safe_dump(config))
    return EdgewayProcess(path, ready=("127.0.0.1", port))


# ------------------------------------------------------------------------------- respond

# (nginx location, edgeway route) pairs answering by themselves
RESPONDS = [
    ("location = /moved { return 301 /new$is_args$args; }",
     {"match": {"path": "/moved"}, "respond": {"status": 301, "location": "/new$is_args$args"}}),
    ("location = /away { return 302 https://other.example$request_uri; }",
     {"match": {"path": "/away"}, "respond": {"location": "https://other.example$request_uri"}}),
    ("location = /see { return 303 http://$host/x; }",
     {"match": {"path": "/see"}, "respond": {"status": 303, "location": "http://$host/x"}}),
    ("location = /text { return 200 \"hi $host $uri [$args] $remote_addr $http_x_who\\n\"; }",
     {"match": {"path": "/text"}, "respond": {"status": 200, "body": "hi $host $uri [$args] $remote_addr $http_x_who\n"}}),
    ("location = /empty { return 200; }", {"match": {"path": "/empty"}, "respond": {"status": 200}}),
    ("location = /gone { return 410; }", {"match": {"path": "/gone"}, "respond": {"status": 410}}),
    ("location = /down { return 503; }", {"match": {"path": "/down"}, "respond": {"status": 503}}),
    ("location = /tea { return 418; }", {"match": {"path": "/tea"}, "respond": {"status": 418}}),
    ("location = /nothing { return 204; }", {"match": {"path": "/nothing"}, "respond": {"status": 204}}),
    ("location = /denied { return 403 \"no: $scheme $server_port\"; }",
     {"match": {"path": "/denied"}, "respond": {"status": 403, "body": "no: $scheme $server_port"}}),
    ("location = /json { add_header X-Extra \"$uri\" always; default_type application/json; return 200 '{\"a\":1}'; }",
     {"match": {"path": "/json"}, "respond": {"status": 200, "body": '{"a":1}',
                                              "headers": {"X-Extra": "$uri", "Content-Type": "application/json"}}}),
]
TARGETS = ["/moved", "/moved?a=1&b=2", "/away?q=1", "/see", "/text?x=y", "/empty", "/gone", "/down", "/tea",
           "/nothing", "/denied", "/json"]


def test_respond_answers_as_nginx_return_does(tmp_path):
    port = free_port()
    with nginx(tmp_path / "nginx", "\n".join(loc for loc, _ in RESPONDS)) as nport, \
            serve(tmp_path, port, [route for _, route in RESPONDS], {}):
        for target in TARGETS:
            lengths = {}   # GET's Content-Length, which HEAD's must repeat (nginx: the page's)
            for method in ("GET", "HEAD"):
                req = request(target, extra="X-Who: me\r\n", method=method)
                n_status, n_fields, n_body = exchange(nport, req)
                for split in (False, True):
                    status, fields, body = exchange(port, req, split)
                    where = (target, method, split)
                    assert status == n_status, where
                    # nginx's pages name nginx in their last lines, ours edgeway; the ports differ
                    expected = re.sub(rb"nginx/[0-9.]+", b"edgeway", n_body)
                    expected = expected.replace(str(nport).encode(), str(port).encode())
                    assert body == expected, (where, body, n_body)
                    if "content-length" in n_fields:
                        length = lengths.setdefault(split, str(len(expected)))
                        assert fields.get("content-length") == length, (where, fields)
                    else:
                        assert "content-length" not in fields, (where, fields)
                    assert fields.get("content-type") == n_fields.get("content-type"), (where, fields, n_fields)
                    assert fields.get("location") == (n_fields["location"].replace(str(nport), str(port))
                                                      if "location" in n_fields else None), (where, fields)
                    assert fields.get("x-extra") == n_fields.get("x-extra"), where


def test_respond_beside_proxied_routes_keeps_alive(tmp_path):
    """A respond route on a keep-alive connection between proxied requests; nothing reaches the
    upstream for it; the listener's metrics-free counters are not in the way."""
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        port = free_port()
        routes = [{"match": {"path": "/r"}, "respond": {"body": "local\n"}},
                  {"match": {"path_prefix": "/"}, "upstream": "api"}]
        with serve(tmp_path, port, routes, {"api": {"servers": [{"address": backend.address}]}}):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                          b"POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"   # (body read, dropped)
                          b"GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert data.count(b"HTTP/1.1 200 ") == 3
            assert b"local\n" in data and data.index(b"b1 /a") < data.index(b"local\n") < data.index(b"b1 /b")
            assert [h.split(b" ")[1] for h in backend.heads] == [b"/a", b"/b"]
        bg.call(backend.stop())


# ------------------------------------------------------------------ proxied: what the server sees


def _fields(head: bytes) -> tuple[str, dict[str, list[str]]]:
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.setdefault(name.lower(), []).append(value.strip())
    method, target, _ = lines[0].split(" ")
    return f"{method} {target}", fields


COMPARED = ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-app",
            "accept-encoding", "x-port", "x-who")
CLIENT = ("X-Forwarded-For: 198.51.100.7\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\n"
          "Accept-Encoding: gzip\r\nX-Who: me\r\n")


def test_proxy_headers_set_headers_and_replace_prefix_as_nginx(tmp_path):
    """nginx's defaults (Host: $proxy_host, no X-Real-IP or X-Forwarded-*: the client's pass
    on), proxy_set_header, an empty value removing a field, and proxy_pass with a URI part."""
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        nginx_locations = f"""
    location /api/ {{ proxy_pass http://app/v1/; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    location /raw {{ proxy_pass http://app/v2/; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    location /set/ {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-App "$scheme:$request_uri:$proxy_host"; proxy_set_header Accept-Encoding "";
      proxy_set_header X-Port $server_port; }}
    location /fixed/ {{ proxy_pass http://app/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host backend.internal; proxy_set_header X-Who "$http_x_who!"; }}
"""
        nginx_up = f"upstream app {{ server {backend.address}; }}"
        nginx_defaults = {"host": "$proxy_host", "x_real_ip": False, "x_forwarded_for": False,
                          "x_forwarded_proto": False, "x_forwarded_host": False}
        routes = [
            {"match": {"path_prefix": "/api/"}, "upstream": "app", "replace_prefix": "/v1/",
             "proxy_headers": nginx_defaults},
            {"match": {"path_prefix": "/raw"}, "upstream": "app", "replace_prefix": "/v2/",
             "proxy_headers": nginx_defaults},
            {"match": {"path_prefix": "/set/"}, "upstream": "app",
             "proxy_headers": {**nginx_defaults, "host": "$host", "x_real_ip": True, "x_forwarded_for": True},
             "set_headers": {"X-App": "$scheme:$request_uri:$proxy_host", "Accept-Encoding": "",
                             "X-Port": "$server_port"}},
            {"match": {"path_prefix": "/fixed/"}, "upstream": "app", "strip_prefix": True,
             "proxy_headers": {**nginx_defaults, "host": "backend.internal"}, "set_headers": {"X-Who": "$http_x_who!"}},
        ]
        port = free_port()
        targets = ["/api/items?id=3", "/api/", "/raw/x", "/rawer?y", "/set/a/b?c=d", "/fixed/z?q"]
        with nginx(tmp_path / "nginx", nginx_locations, nginx_up) as nport, \
                serve(tmp_path, port, routes, {"app": {"servers": [{"address": backend.address}]}}):
            for target in targets:
                before = len(backend.heads)
                status, _, _ = exchange(nport, request(target, extra=CLIENT))
                assert status == 200
                (n_head,) = backend.heads[before:]
                n_line, n_fields = _fields(n_head)
                for split in (False, True):
                    before = len(backend.heads)
                    status, _, _ = exchange(port, request(target, extra=CLIENT), split)
                    assert status == 200
                    (head,) = backend.heads[before:]
                    line, fields = _fields(head)
                    where = (target, split)
                    assert line == n_line, (where, line, n_line)
                    for name in COMPARED:
                        got, want = fields.get(name), n_fields.get(name)
                        if name == "x-port" and want is not None:
                            want = [str(port)]
                        assert got == want, (where, name, got, want)
        bg.call(backend.stop())


def test_default_routes_send_the_same_head_as_before(tmp_path):
    """No knob: the head the server gets is edgeway's usual one (client's Host, the four
    fields added and the client's replaced), on both paths."""
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        port = free_port()
        routes = [{"match": {"path_prefix": "/"}, "upstream": "app"}]
        with serve(tmp_path, port, routes, {"app": {"servers": [{"address": backend.address}]}}):
            heads = []
            for split in (False, True):
                before = len(backend.heads)
                exchange(port, request("/p?q", extra=CLIENT), split)
                (head,) = backend.heads[before:]
                heads.append(re.sub(rb"X-Request-ID: [0-9a-f]{32}\r\n", b"", head))
            assert heads[0] == heads[1]
            assert heads[0] == (b"GET /p?q HTTP/1.1\r\nHost: Shop.Example:8888\r\nAccept-Encoding: gzip\r\n"
                                b"X-Who: me\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-For: 198.51.100.7, 127.0.0.1\r\n"
                                b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: Shop.Example:8888\r\n\r\n"), heads[0]
        bg.call(backend.stop())


# ------------------------------------------------------------------------------- errors


BAD = [
    ({"match": {"path": "/x"}, "respond": {"body": "$nope"}}, "routes.0.respond.body", "unknown variable $nope"),
    ({"match": {"path": "/x"}, "respond": {"status": 200, "location": "/y"}}, "routes.0.respond",
     "location: is for redirects"),
    ({"match": {"path": "/x"}, "upstream": "app", "respond": {}}, "routes.0", "exactly one of upstream"),
    ({"match": {"path": "/x"}, "upstream": "app", "replace_prefix": "/v1/"}, "routes.0",
     "replace_prefix needs match.path_prefix"),
    ({"upstream": "app", "set_headers": {"Host": "x"}}, "routes.0.set_headers", "proxy_headers.host"),
    ({"upstream": "app", "set_headers": {"X-A": "$request_id"}}, "routes.0.set_headers", "unknown variable $request_id"),
    ({"upstream": "app", "proxy_headers": {"host": "$upstream"}}, "routes.0.proxy_headers.host",
     "unknown variable $upstream"),
    ({"upstream": "app", "set_headers": {"Content-Length": "1"}}, "routes.0.set_headers", "written by edgeway"),
    ({"respond": {"status": 700}}, "routes.0.respond.status", "599"),
]


def test_bad_knobs_are_named_with_file_line_and_key(tmp_path):
    for route, key, text in BAD:
        config = {"upstreams": {"app": {"servers": [{"address": "127.0.0.1:9"}]}},
                  "listeners": [{"name": "web", "protocol": "http", "listen": "127.0.0.1:1", "routes": [route]}]}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        out = run_edgeway("check", str(path))
        assert out.returncode != 0
        message = out.stdout + out.stderr
        assert "bad.yaml:" in message and f"listeners.0.{key}" in message and text in message, (route, message)


def test_a_reload_adds_a_responding_route_and_the_json_log_names_it(tmp_path):
    """SIGHUP: a respond route added in front of a proxied one answers at once; the JSON access
    line names its route and no upstream, and metrics and reload keep working."""
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        port = free_port()
        upstreams = {"api": {"servers": [{"address": backend.address}]}}
        proxied = {"match": {"path_prefix": "/"}, "upstream": "api"}
        config = {"log": {"format": "json"}, "upstreams": upstreams,
                  "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}", "routes": [proxied]}]}
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        with EdgewayProcess(path, ready=("127.0.0.1", port)) as proc:
            assert exchange(port, request("/maint"))[2] == b"b1 /maint"
            config["listeners"][0]["routes"] = [
                {"match": {"path": "/maint"}, "respond": {"status": 503, "body": "back soon\n",
                                                          "headers": {"Retry-After": "60"}}}, proxied]
            path.write_text(yaml.safe_dump(config))
            proc.proc.send_signal(signal.SIGHUP)
            for _ in range(100):   # bounded: 5 s
                status, fields, body = exchange(port, request("/maint"))
                if status == 503:
                    break
                time.sleep(0.05)
            assert (status, fields.get("retry-after"), body) == (503, "60", b"back soon\n")
            assert exchange(port, request("/other"))[2] == b"b1 /other"
            code, out = proc.stop()
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        maint = [x for x in lines if x.get("logger") == "edgeway.access" and x.get("status") == 503]
        assert maint and maint[0]["upstream"] is None and maint[0]["route"].startswith("#0 (path=/maint")
        assert maint[0]["server"] is None, maint[0]
        bg.call(backend.stop())
