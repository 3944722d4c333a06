"""Reload through the runtime API of a real `edgeway serve`, with real curl: a broken config
is 422 with file, line and key and changes nothing; the token and the admin address are read
again on reload. The server runs an http listener besides the API, so these need the listener
part of issue 14 (HttpListenerService.prepare_reload, h14-listeners)."""

from __future__ import annotations

import hashlib
import signal
import socket
import time

import pytest

from tests.support.admin import AdminServe
from tests.support.tools import free_port

pytestmark = pytest.mark.interop



def test_reload_of_a_broken_config_is_422_with_file_line_key_and_changes_nothing(tmp_path):
    port = free_port()
    config = {"upstreams": {"api": {"servers": [{"address": "127.0.0.1:1"}]}},
              "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}",
                             "routes": [{"upstream": "api"}]}]}
    with AdminServe(tmp_path, config) as serve:
        before = serve.curl("GET", "/api/v1/status")[2]["config_hash"]
        good = serve.path.read_text()
        serve.write(good.replace("round_robin", "x") + "bogus_key: 1\n")
        status, _, body = serve.curl("POST", "/api/v1/reload")
        assert status == 422
        assert body["ok"] is False
        assert f"{serve.path}:" in body["error"] and "bogus_key: unknown key" in body["error"]
        status, _, body = serve.curl("GET", "/api/v1/status")
        assert body["config_hash"] == before
        assert body["last_reload"]["ok"] is False and "bogus_key" in body["last_reload"]["error"]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass   # the listener still serves
        serve.write(good.replace("name: web", "name: web2"))
        status, _, body = serve.curl("POST", "/api/v1/reload")
        assert status == 200 and body["ok"] is True, body
        status, _, body = serve.curl("GET", "/api/v1/status")
        assert body["config_hash"] == hashlib.sha256(serve.path.read_bytes()).hexdigest() != before
        assert body["last_reload"]["ok"] is True
        assert any(s["name"] == "web2" for s in body["services"])


def test_the_token_is_read_again_on_reload(tmp_path):
    with AdminServe(tmp_path) as serve:
        old = serve.token
        serve.write_token("new-token-" + "x" * 20)
        # until the reload, the token read at start is the one
        assert serve.curl("GET", "/api/v1/status", token="new-token-" + "x" * 20)[0] == 401
        status, _, body = serve.curl("POST", "/api/v1/reload", token=old)
        assert status == 200, body
        assert "admin: new token" in body["changes"]
        assert serve.curl("GET", "/api/v1/status", token=old)[0] == 401
        assert serve.curl("GET", "/api/v1/status", token="new-token-" + "x" * 20)[0] == 200
        # an empty token file: the reload fails with file, line and key, the token stays
        serve.token_file.write_text("\n")
        status, _, body = serve.curl("POST", "/api/v1/reload", token="new-token-" + "x" * 20)
        assert status == 422
        assert f"{serve.path}:" in body["error"] and "admin.token_file" in body["error"] and "empty" in body["error"]
        assert serve.curl("GET", "/api/v1/status", token="new-token-" + "x" * 20)[0] == 200


def test_a_new_admin_address_on_reload(tmp_path):
    with AdminServe(tmp_path) as serve:
        old_port, new_port = serve.port, free_port()
        serve.config["admin"]["listen"] = f"127.0.0.1:{new_port}"
        serve.write(serve.config)
        status, headers, body = serve.curl("POST", "/api/v1/reload")
        assert status == 200, body
        assert headers["connection"] == "close"      # it came in on the old address
        assert any(f"127.0.0.1:{new_port}" in change for change in body["changes"])
        serve.port = new_port
        deadline = time.monotonic() + 5
        while True:
            try:
                assert serve.curl("GET", "/api/v1/status")[0] == 200
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", old_port), timeout=2).close()


def test_reloads_that_add_and_remove_a_health_checked_upstream_never_hang(tmp_path):
    """The health checker of an upstream a reload removes is stopped at the commit; its check
    may end in that very loop turn. Python 3.11's asyncio.wait_for then lost the cancellation:
    the checker's task went on, the reload waited for it for ever under the reload lock, and
    every later reload (SIGHUP, API, ctl) with it."""
    import http.client

    from tests.support.backends import BackgroundLoop, HttpBackend

    with BackgroundLoop() as bg:
        backend = bg.call(HttpBackend("b").start())
        port, extra = free_port(), free_port()
        plain = {"upstreams": {"api": {"servers": [{"address": f"127.0.0.1:{backend.port}"}]}},
                 "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}",
                                "routes": [{"upstream": "api"}]}]}
        checked = {"upstreams": {**plain["upstreams"],
                                 "hc": {"servers": [{"address": f"127.0.0.1:{backend.port}"}],
                                        "health_check": {"type": "http", "interval": "20ms"}}},
                   "listeners": [*plain["listeners"],
                                 {"name": "hc", "protocol": "http", "listen": f"127.0.0.1:{extra}",
                                  "routes": [{"upstream": "hc"}]}]}
        try:
            with AdminServe(tmp_path, plain) as serve:
                api = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=5)
                for _ in range(20):
                    for config in (checked, plain):
                        serve.write({"admin": serve.config["admin"], **config})
                        api.request("POST", "/api/v1/reload", headers={"Authorization": f"Bearer {serve.token}"})
                        response = api.getresponse()   # TimeoutError: the reload hangs
                        assert response.status == 200, response.read()
                        response.read()
                api.close()
        finally:
            bg.call(backend.stop())


def test_sigterm_during_a_reload_that_parses_a_large_zone_exits_within_shutdown_timeout(tmp_path):
    """The zone file of a reload is parsed on a thread. SIGTERM meanwhile: the reload is
    cancelled and the stop must not then wait for the parse to end (the default executor's
    threads are joined without a timeout when the loop closes), far past shutdown_timeout."""
    import threading
    import urllib.error
    import urllib.request

    dns_port = free_port()
    small = tmp_path / "small.zone"
    small.write_text("$ORIGIN s.test.\n$TTL 60\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\n")
    big = tmp_path / "big.zone"
    with open(big, "w") as f:
        f.write("$ORIGIN big.test.\n$TTL 60\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\n")
        for i in range(60000):
            f.write(f"h{i} A 10.0.{i // 256 % 256}.{i % 256}\n")
    config = {"shutdown_timeout": "1s",
              "dns": {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(small)}]}}
    with AdminServe(tmp_path, config) as serve:
        config = {**serve.config, "dns": {**config["dns"], "zones": [{"file": str(small)}, {"file": str(big)}]}}
        serve.write(config)

        def reload():
            request = urllib.request.Request(f"{serve.url}/api/v1/reload", method="POST", data=b"",
                                             headers={"Authorization": f"Bearer {serve.token}"})
            try:
                urllib.request.urlopen(request, timeout=60).read()
            except (urllib.error.URLError, ConnectionError, OSError):
                pass   # the stop cuts it
        client = threading.Thread(target=reload)
        client.start()
        time.sleep(1.0)   # the big zone is being parsed
        started = time.monotonic()
        code, output = serve.stop()
        took = time.monotonic() - started
        client.join(60)
    assert code == 0, output
    assert "reload of" not in output, "the zone parsed before the stop: make it larger"
    assert took < 5, f"the stop took {took:.1f}s: it waited for the zone parse\n{output[-2000:]}"


def test_a_reload_that_ends_preparing_during_a_graceful_stop_changes_nothing(tmp_path):
    """SIGTERM while a reload parses a zone, a slow request keeping the drain going: when the
    parse ends, the reload must not commit. It did: its new listener opened and took new
    connections in the middle of the graceful stop (to be cut at the end of it)."""
    import threading
    import urllib.error
    import urllib.request

    from tests.support.backends import BackgroundLoop, HttpBackend

    dns_port, web, new = free_port(), free_port(), free_port()
    small = tmp_path / "small.zone"
    small.write_text("$ORIGIN s.test.\n$TTL 60\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\n")
    big = tmp_path / "big.zone"
    with open(big, "w") as f:
        f.write("$ORIGIN big.test.\n$TTL 60\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\n")
        for i in range(20000):
            f.write(f"h{i} A 10.0.{i // 256 % 256}.{i % 256}\n")
    with BackgroundLoop() as bg:
        backend = bg.call(HttpBackend("b", mode="slow:12").start())
        config = {"shutdown_timeout": "20s",
                  "dns": {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(small)}]},
                  "upstreams": {"api": {"servers": [{"address": f"127.0.0.1:{backend.port}"}]}},
                  "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{web}",
                                 "routes": [{"upstream": "api"}]}]}
        try:
            with AdminServe(tmp_path, config) as serve:
                slow = socket.create_connection(("127.0.0.1", web), timeout=30)
                slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                changed = {**serve.config,
                           "dns": {**config["dns"], "zones": [{"file": str(small)}, {"file": str(big)}]},
                           "listeners": [*config["listeners"],
                                         {"name": "new", "protocol": "tcp", "listen": f"127.0.0.1:{new}",
                                          "upstream": "api"}]}
                serve.write(changed)
                answer = {}

                def reload():
                    request = urllib.request.Request(f"{serve.url}/api/v1/reload", method="POST", data=b"",
                                                     headers={"Authorization": f"Bearer {serve.token}"})
                    try:
                        answer["body"] = urllib.request.urlopen(request, timeout=60).read()
                    except urllib.error.HTTPError as exc:
                        answer["body"] = exc.read()
                    except OSError:
                        pass
                client = threading.Thread(target=reload)
                client.start()
                time.sleep(0.5)
                serve.process.proc.send_signal(signal.SIGTERM)
                accepted = False
                deadline = time.monotonic() + 25
                while serve.process.proc.poll() is None and time.monotonic() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", new), timeout=0.5).close()
                        accepted = True
                        break
                    except OSError:
                        time.sleep(0.1)
                code, output = serve.stop()
                client.join(60)
                slow.close()
        finally:
            bg.call(backend.stop())
    assert code == 0, output
    assert not accepted, f"a listener added by the reload accepted during the graceful stop\n{output[-3000:]}"
    assert b"shutting down" in answer.get("body", b"shutting down"), answer
