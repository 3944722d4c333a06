"""Request fields with an underscore in their name, through a real `edgeway serve`: dropped by
default (nginx's underscores_in_headers off), so that X_Forwarded_For cannot pose as
X-Forwarded-For to a CGI-style server; forwarded where the listener allows them. On both the
fast path (a whole plain head in one packet) and httptools' (the head in two packets)."""

from __future__ import annotations

import socket
import time

import yaml

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import EdgewayProcess, free_port

REQUEST = (b"GET /u HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nX-Ok: 1\r\nx_real_ip: 6.6.6.6\r\n"
           b"Connection: close\r\n\r\n")


def send(port: int, split: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if split:   # two packets: the httptools path
            s.sendall(REQUEST[:20])
            time.sleep(0.05)
            s.sendall(REQUEST[20:])
        else:
            s.sendall(REQUEST)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_underscored_fields_are_dropped_unless_the_listener_allows_them(tmp_path):
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        ports = [free_port(), free_port()]
        config = {
            "upstreams": {"api": {"servers": [{"address": backend.address}]}},
            "listeners": [
                {"name": "strict", "protocol": "http", "listen": f"127.0.0.1:{ports[0]}",
                 "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]},
                {"name": "lenient", "protocol": "http", "listen": f"127.0.0.1:{ports[1]}",
                 "underscores_in_headers": True,
                 "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]},
            ],
        }
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        with EdgewayProcess(path, ready=("127.0.0.1", ports[1])):
            for port, allowed in zip(ports, (False, True)):
                for split in (False, True):
                    before = len(backend.heads)
                    assert send(port, split).startswith(b"HTTP/1.1 200"), (port, split)
                    (head,) = backend.heads[before:]
                    assert b"X-Ok: 1\r\n" in head
                    assert b"X-Forwarded-For: 127.0.0.1\r\n" in head and b"X-Real-IP: 127.0.0.1\r\n" in head
                    assert (b"X_Forwarded_For: 6.6.6.6\r\n" in head) is allowed, (allowed, split, head)
                    assert (b"x_real_ip: 6.6.6.6\r\n" in head) is allowed, (allowed, split, head)
        bg.call(backend.stop())


def test_the_access_log_escapes_what_a_client_sends(tmp_path):
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        port = free_port()
        config = {
            "upstreams": {"api": {"servers": [{"address": backend.address}]}},
            "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}",
                           "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]}],
        }
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        with EdgewayProcess(path, ready=("127.0.0.1", port)) as proc:
            for request in (b'GET /a"b\\c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',   # proxied
                            b'GET / HTTP/1.1\r\nHost: a"b\xe9\r\n\r\n'):                          # refused: 400
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(request)
                    while s.recv(65536):
                        pass
            time.sleep(1.2)   # the sweeper flushes the log
            _, output = proc.stop()
        bg.call(backend.stop())
    lines = [line for line in output.splitlines() if "edgeway.access" in line]
    assert any('"GET /a\\x22b\\x5Cc HTTP/1.1" 200 ' in line for line in lines), lines
    assert any('cause="invalid Host \'a\\x22b\\xE9\'"' in line for line in lines), lines
