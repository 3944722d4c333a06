"""edgeway.importer.nginx on nginx.conf texts: what each directive becomes, the report's
file:line lines, nginx's location and server order as first-match routes, and that every
output passes the config loader (`edgeway check`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeway.config.loader import load_config_text
from edgeway.importer.command import import_nginx, render
from edgeway.importer.nginx import APPROXIMATED, NOT_TRANSLATED, TRANSLATED, Result, parse_time

SEED = """
upstream api_servers {
    least_conn;  # Least Connections
    server 10.0.1.1:8080;
    server 10.0.1.2:8080;
    server 10.0.1.3:8080;
}
server {
    listen 80;
    server_name api.example.com;
    location / {
        proxy_pass http://api_servers;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
    location /health {
        return 200 'OK';
    }
}
"""


def run(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Result:
    for name, body in (files or {}).items():
        (tmp_path / name).write_text(body)
    (tmp_path / "nginx.conf").write_text(text)
    result = import_nginx(tmp_path / "nginx.conf")
    # every output is a valid edgeway config
    load_config_text(render(result, tmp_path / "nginx.conf"), "imported.yaml", base_dir=tmp_path)
    return result


def http(body: str) -> str:
    return "events {}\nhttp {\n" + body + "\n}\n"


def item(result: Result, text: str):
    found = [i for i in result.report if i.directive.startswith(text)]
    assert found, f"no report line for {text!r}: {[str(i) for i in result.report]}"
    return found[0]


def routes(result: Result, index: int = 0) -> list[dict]:
    return result.config["listeners"][index]["routes"]


def test_the_seed_example(tmp_path):
    result = run(tmp_path, http(SEED))
    up = result.config["upstreams"]["api_servers"]
    assert up["balance"] == "least_conn"
    assert [s["address"] for s in up["servers"]] == ["10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"]
    listener = result.config["listeners"][0]
    assert listener["listen"] == "0.0.0.0:80" and listener["protocol"] == "http"
    assert listener["health_path"] is None and listener["request_id"] is False
    # one server on the address: its routes need no host (it is the default server)
    assert routes(result) == [
        {"match": {"path_prefix": "/health"}, "respond": {"status": 200, "body": "OK",
                                                          "headers": {"Content-Type": "text/plain"}}},
        {"match": {"path_prefix": "/"}, "upstream": "api_servers",
         "proxy_headers": {"host": "$host", "x_real_ip": True, "x_forwarded_for": True,
                           "x_forwarded_proto": False, "x_forwarded_host": False}},
    ]
    # all exact but the Content-Type of /health's text, which nginx picks by extension
    (approx,) = [i for i in result.report if i.status != TRANSLATED]
    assert approx.status == APPROXIMATED and approx.directive == "return 200 OK" and "extension" in approx.note


def test_nginx_defaults_are_written_out(tmp_path):
    result = run(tmp_path, http("upstream b { server 127.0.0.1:1; }\n"
                                "server { listen 127.0.0.1:8080; location / { proxy_pass http://b; } }"))
    route = routes(result)[0]
    # no proxy_set_header: Host is the upstream's name, nothing added
    assert route["proxy_headers"] == {"host": "$proxy_host", "x_real_ip": False, "x_forwarded_for": False,
                                      "x_forwarded_proto": False, "x_forwarded_host": False}
    listener = result.config["listeners"][0]
    assert listener["timeouts"] == {"connect": "60s", "upstream_header": "60s", "upstream_idle": "60s",
                                    "client_header": "60s", "client_body": "60s", "client_idle": "75s",
                                    "client_send": "60s"}
    assert listener["limits"] == {"max_uri_length": 8192, "max_header_size": 32768}


@pytest.mark.parametrize("directive, balance, extra, status", [
    ("", "round_robin", {}, TRANSLATED),
    ("least_conn;", "least_conn", {}, TRANSLATED),
    ("ip_hash;", "ip_hash", {}, APPROXIMATED),
    ("hash $request_uri consistent;", "hash", {"hash_key": "$request_uri"}, APPROXIMATED),
    ("hash $cookie_user;", "hash", {"hash_key": "$cookie_user"}, APPROXIMATED),
    ("random two;", "random_two", {}, TRANSLATED),
    ("random;", "random_two", {}, APPROXIMATED),
])
def test_balancing_methods(tmp_path, directive, balance, extra, status):
    result = run(tmp_path, http(f"upstream b {{ {directive} server 127.0.0.1:1; server 127.0.0.1:2; }}\n"
                                "server { listen 127.0.0.1:8080; location / { proxy_pass http://b; } }"))
    up = result.config["upstreams"]["b"]
    assert up.get("balance", "round_robin") == balance
    assert {k: up[k] for k in extra} == extra
    if directive:
        assert item(result, directive.rstrip(";").split()[0]).status == status


def test_server_parameters(tmp_path):
    result = run(tmp_path, http(
        "upstream b { server 127.0.0.1:1 weight=3 max_fails=2 fail_timeout=5s max_conns=10;\n"
        "  server 127.0.0.1:2 weight=1 max_fails=2 fail_timeout=5s backup;\n"
        "  server 127.0.0.1:3 down;\n  server 127.0.0.1 slow_start=10s; keepalive 8; }\n"
        "server { listen 127.0.0.1:8080; location / { proxy_pass http://b; } }"))
    up = result.config["upstreams"]["b"]
    assert up["servers"] == [{"address": "127.0.0.1:1", "weight": 3, "max_conns": 10},
                             {"address": "127.0.0.1:2", "weight": 1, "backup": True},
                             {"address": "127.0.0.1:80"}]
    assert up["passive"] == {"max_fails": 2, "fail_timeout": "5s"}
    assert item(result, "server 127.0.0.1:3 down").status == APPROXIMATED
    slow = item(result, "server 127.0.0.1 slow_start")
    assert slow.status == NOT_TRANSLATED and "slow_start" in slow.note and slow.line == 6
    # the last server's max_fails/fail_timeout (nginx's defaults) differ: per upstream in edgeway
    assert "per upstream" in slow.note
    assert item(result, "keepalive").status == APPROXIMATED


def test_sticky_cookie(tmp_path):
    result = run(tmp_path, http("upstream b { server 127.0.0.1:1; sticky cookie srv_id expires=1h secure; }\n"
                                "server { listen 127.0.0.1:8080; location / { proxy_pass http://b; } }"))
    assert result.config["upstreams"]["b"]["sticky"] == {"cookie": "srv_id", "max_age": "3600s", "secure": True}


def test_location_order_is_nginx_order(tmp_path):
    result = run(tmp_path, http("upstream b { server 127.0.0.1:1; }\nserver { listen 127.0.0.1:8080;\n"
                                "location / { proxy_pass http://b; }\n"
                                "location /images/ { return 200 prefix; }\n"
                                "location ~* \\.(gif|jpg)$ { return 200 regex; }\n"
                                "location ^~ /static/ { return 200 noregex; }\n"
                                "location /static/deep/ { return 200 deeper; }\n"
                                "location = /exact { return 200 exact; }\n}"))
    order = [(next(iter(r.get("match", {}).items()))) for r in routes(result)]
    assert order[0] == ("path", "/exact")
    assert order[1][0] == "path_regex"
    assert [p for k, p in order[2:]] == ["/static/deep/", "/images/", "/static/", "/"]
    # nginx's answer, emulated by first match: which route serves which path
    pattern = re.compile(order[1][1])
    assert pattern.search("/images/a.GIF")             # a regex beats the prefix /images/
    assert not pattern.search("/static/a.gif")          # ^~: the regexes are skipped
    assert pattern.search("/static/deep/a.gif")         # a longer plain prefix: regexes again


def test_proxy_pass_with_a_uri_and_to_an_address(tmp_path):
    result = run(tmp_path, http("server { listen 127.0.0.1:8080;\n"
                                "location /api/ { proxy_pass http://127.0.0.1:9000/v1/; }\n"
                                "location / { proxy_pass http://127.0.0.1:9001; } }"))
    assert result.config["upstreams"]["127.0.0.1:9000"] == {"servers": [{"address": "127.0.0.1:9000"}]}
    redirect, api, root = routes(result)
    # nginx: /api answers 301 to /api/ (auto_redirect of a proxied location ending in /)
    assert redirect == {"match": {"path": "/api"},
                        "respond": {"status": 301, "location": "$scheme://$host:8080/api/$is_args$args"}}
    assert api["replace_prefix"] == "/v1/" and api["upstream"] == "127.0.0.1:9000"
    assert api["proxy_headers"]["host"] == "127.0.0.1:9000"      # nginx's $proxy_host: host:port
    assert "replace_prefix" not in root


def test_return_and_redirects(tmp_path):
    result = run(tmp_path, http("default_type application/json;\nserver { listen 127.0.0.1:8080;\n"
                                "location = /a { return 301 https://$host$request_uri; }\n"
                                "location = /b { return https://example.com/; }\n"
                                "location = /c { return 404; }\n"
                                "location = /d { add_header X-Up yes; return 200 '{\"ok\":1}'; }\n"
                                "location = /e { return 444; } }"))
    r = {route.get("match", {})["path"]: route["respond"] for route in routes(result) if "path" in route.get("match", {})}
    assert r["/a"] == {"status": 301, "location": "https://$host$request_uri"}
    assert r["/b"] == {"status": 302, "location": "https://example.com/"}
    assert r["/c"] == {"status": 404}
    assert r["/d"] == {"status": 200, "body": '{"ok":1}',
                       "headers": {"Content-Type": "application/json", "X-Up": "yes"}}
    assert "/e" not in r and item(result, "return 444").status == NOT_TRANSLATED


def test_server_names_order(tmp_path):
    result = run(tmp_path, http("upstream a { server 127.0.0.1:1; } upstream b { server 127.0.0.1:2; }\n"
                                "upstream c { server 127.0.0.1:3; }\n"
                                "server { listen 127.0.0.1:8080; server_name _; location / { proxy_pass http://a; } }\n"
                                "server { listen 127.0.0.1:8080; server_name *.example.com; "
                                "location / { proxy_pass http://b; } }\n"
                                "server { listen 127.0.0.1:8080 default_server; server_name www.example.com; "
                                "location /x/ { proxy_pass http://c; } }"))
    got = [(r.get("match", {}).get("host"), r.get("match", {}).get("path_prefix") or r.get("match", {}).get("path"),
            r.get("upstream") or r["respond"]["status"]) for r in routes(result)]
    assert got == [
        ("www.example.com", "/x", 301), ("www.example.com", "/x/", "c"), ("www.example.com", None, 404),
        ("*.example.com", "/", "b"),
        (None, "/x", 301), (None, "/x/", "c"), (None, None, 404),
    ]
    # the server named _ is neither named nor the default: reported, left out
    assert any(i.status == APPROXIMATED and "left out" in i.note for i in result.report)


def test_untranslatable_directives_name_file_and_line(tmp_path):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "app.conf").write_text(
        "upstream b { server 127.0.0.1:1; }\n"
        "server { listen 127.0.0.1:8080;\n"
        "  location / {\n"
        "    proxy_cache one;\n"
        "    rewrite ^/old/(.*)$ /new/$1 last;\n"
        "    if ($http_x) { return 403; }\n"
        "    content_by_lua_block { ngx.say('hi') }\n"
        "    proxy_pass http://b;\n  } }\n")
    result = run(tmp_path, http("include sites/*.conf;"))
    lines = {i.directive.split()[0]: i for i in result.report if i.status == NOT_TRANSLATED}
    assert {k: (v.file, v.line) for k, v in lines.items()} == {
        "proxy_cache": ("sites/app.conf", 4), "rewrite": ("sites/app.conf", 5), "if": ("sites/app.conf", 6),
        "content_by_lua_block": ("sites/app.conf", 7)}
    assert str(lines["proxy_cache"]).startswith("sites/app.conf:4: not translated: proxy_cache one: ")
    assert not result.exact


def test_stream_tcp_and_udp(tmp_path):
    result = run(tmp_path, "events {}\nstream {\n upstream dns { hash $remote_addr consistent; "
                           "server 127.0.0.1:5353; server 127.0.0.1:5354; }\n"
                           " server { listen 127.0.0.1:5300 udp; proxy_pass dns; proxy_timeout 5s; }\n"
                           " server { listen 127.0.0.1:7000; proxy_pass 127.0.0.1:7001; proxy_protocol on;\n"
                           "   proxy_connect_timeout 2s; }\n}\n")
    udp, tcp = result.config["listeners"]
    assert udp == {"name": "udp-127.0.0.1:5300", "protocol": "udp", "listen": "127.0.0.1:5300",
                   "upstream": "dns", "session_timeout": "5s"}
    assert tcp == {"name": "tcp-127.0.0.1:7000", "protocol": "tcp", "listen": "127.0.0.1:7000",
                   "upstream": "127.0.0.1:7001", "idle_timeout": "600s", "timeouts": {"connect": "2s"},
                   "proxy_protocol": "v1"}


def test_tls_server_with_sni(tmp_path):
    for name in ("a.crt", "a.key", "b.crt", "b.key"):
        (tmp_path / name).write_text("x")
    result = import_nginx_text(tmp_path, http(
        "server { listen 127.0.0.1:8443 ssl; server_name a.test; ssl_certificate a.crt; ssl_certificate_key a.key;"
        " location / { return 200 a; } }\n"
        "server { listen 127.0.0.1:8443 ssl; server_name b.test; ssl_certificate b.crt; ssl_certificate_key b.key;"
        " ssl_protocols TLSv1.3; location / { return 200 b; } }"))
    listener = result.config["listeners"][0]
    assert listener["protocol"] == "https"
    assert listener["tls"] == {"cert": str(tmp_path / "a.crt"), "key": str(tmp_path / "a.key"),
                               "certificates": [{"cert": str(tmp_path / "b.crt"), "key": str(tmp_path / "b.key")}]}


def import_nginx_text(tmp_path: Path, text: str) -> Result:
    (tmp_path / "nginx.conf").write_text(text)
    return import_nginx(tmp_path / "nginx.conf")


def test_yaml_names_the_source_of_each_part(tmp_path):
    result = run(tmp_path, http(SEED))
    text = render(result, tmp_path / "nginx.conf")
    assert "  api_servers:  # nginx.conf:4\n" in text
    assert "      - address: 10.0.1.1:8080  # nginx.conf:6\n" in text
    assert re.search(r"- match:  # nginx.conf:19\n", text)     # location /health


def test_parse_errors_name_file_and_line(tmp_path):
    from edgeway.importer.nginx import NginxImportError

    (tmp_path / "nginx.conf").write_text("http {\n server { listen 80;\n")
    with pytest.raises(NginxImportError, match=r"nginx.conf:\d+: .*"):
        import_nginx(tmp_path / "nginx.conf")


@pytest.mark.parametrize("text, seconds", [("60", 60), ("60s", 60), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)])
def test_nginx_times(text, seconds):
    assert parse_time(text) == seconds


def test_strict_fails_unless_everything_is_exact(tmp_path):
    from click.testing import CliRunner

    from edgeway.cli import cli

    exact = http("upstream b { server 127.0.0.1:1; }\n"
                 "server { listen 127.0.0.1:8080; location / { proxy_pass http://b; } }")
    (tmp_path / "exact.conf").write_text(exact)
    (tmp_path / "not.conf").write_text(exact.replace("proxy_pass", "proxy_cache one; proxy_pass"))
    runner = CliRunner()
    ok = runner.invoke(cli, ["import", "nginx", str(tmp_path / "exact.conf"), "--strict", "-o",
                             str(tmp_path / "out.yaml")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out.yaml").read_text().startswith("# edgeway config imported from ")
    plain = runner.invoke(cli, ["import", "nginx", str(tmp_path / "not.conf")])
    assert plain.exit_code == 0 and "upstreams:" in plain.stdout
    assert "not.conf:4: not translated: proxy_cache one: edgeway does not cache responses" in plain.stderr
    strict = runner.invoke(cli, ["import", "nginx", str(tmp_path / "not.conf"), "--strict"])
    assert strict.exit_code == 1 and "--strict" in strict.stderr


def test_timeouts_are_per_listener(tmp_path):
    result = run(tmp_path, http("proxy_read_timeout 30s;\nupstream b { server 127.0.0.1:1; }\n"
                                "server { listen [::1]:8080; keepalive_timeout 5s;\n"
                                "  location / { proxy_pass http://b; }\n"
                                "  location /slow/ { proxy_read_timeout 300s; proxy_pass http://b; } }"))
    listener = result.config["listeners"][0]
    assert listener["listen"] == "[::1]:8080"
    assert listener["timeouts"]["upstream_header"] == "30s" and listener["timeouts"]["client_idle"] == "5s"
    slow = item(result, "proxy_read_timeout 300s")
    assert slow.status == APPROXIMATED and slow.line == 7 and "30s" in slow.note
    assert item(result, "proxy_read_timeout 30s").status == TRANSLATED


# ---------------------------------------------------------------- nginx's location order, as a property

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgeway.importer.nginx import Translator, _Scope  # noqa: E402

_SEGMENT = st.text(alphabet="ab.", min_size=0, max_size=3)
_PREFIX = st.lists(_SEGMENT, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
_REGEXES = [r"\.b$", r"^/a", r"b/", r"(?:ab|ba)", r"^/$"]
_LOCATION = st.one_of(
    st.tuples(st.sampled_from(["", "^~", "="]), _PREFIX),
    st.tuples(st.sampled_from(["~", "~*"]), st.sampled_from(_REGEXES)),
)


def nginx_choice(locations: list[tuple[str, str]], path: str) -> int | None:
    """ngx_http_core_find_location, for a flat list: the index of the location nginx picks."""
    for i, (kind, p) in enumerate(locations):
        if kind == "=" and p == path:
            return i
    best = None
    for i, (kind, p) in enumerate(locations):
        if kind in ("", "^~") and path.startswith(p) and (best is None or len(p) > len(locations[best][1])):
            best = i
    if best is not None and locations[best][0] == "^~":
        return best
    for i, (kind, p) in enumerate(locations):
        if kind in ("~", "~*") and re.search(p, path, re.IGNORECASE if kind == "~*" else 0):
            return i
    return best


def first_match(routes: list[dict], path: str) -> int | None:
    for route in routes:
        m = route.get("match", {})
        if "path" in m and m["path"] != path:
            continue
        if "path_prefix" in m and not path.startswith(m["path_prefix"]):
            continue
        if "path_regex" in m and not re.search(m["path_regex"], path):
            continue
        return int(route["respond"]["body"])
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(_LOCATION, min_size=1, max_size=6, unique_by=lambda loc: (loc[0] == "=", loc[1])),
       st.lists(_PREFIX, min_size=1, max_size=8))
def test_routes_pick_the_location_nginx_picks(locations, paths):
    # nginx refuses two prefix locations with the same path, ^~ or not
    seen = set()
    locations = [loc for loc in locations if not (loc[0] in ("", "^~") and (loc[1] in seen or seen.add(loc[1])))]
    translator = Translator()
    directives = [{"directive": "location", "args": [p] if kind == "" else [kind, p], "line": i + 1,
                   "file": "nginx.conf", "block": [{"directive": "return", "args": ["200", str(i)],
                                                    "line": i + 1, "file": "nginx.conf"}]}
                  for i, (kind, p) in enumerate(locations)]
    server = {"directive": "server", "args": [], "line": 1, "file": "nginx.conf",
              "block": [{"directive": "listen", "args": ["127.0.0.1:8080"], "line": 1, "file": "nginx.conf"},
                        *directives]}
    result = translator.translate([{"directive": "http", "args": [], "line": 1, "file": "nginx.conf",
                                    "block": [server]}])
    routes = [r for r in result.config["listeners"][0]["routes"] if "body" in r["respond"]]
    for path in paths + [p for _, p in locations if p.startswith("/")]:
        assert first_match(routes, path) == nginx_choice(locations, path), (locations, path, routes)


def test_http_and_stream_upstreams_of_one_name(tmp_path):
    result = run(tmp_path, "events {}\nstream { upstream app { server 127.0.0.1:7001; }\n"
                           "  server { listen 127.0.0.1:7000; proxy_pass app; } }\n"
                           "http { upstream app { server 127.0.0.1:8001; }\n"
                           "  server { listen 127.0.0.1:8000; location / { proxy_pass http://app; } } }\n")
    ups = result.config["upstreams"]
    assert ups["app"]["servers"] == [{"address": "127.0.0.1:7001"}]
    assert ups["http-app"]["servers"] == [{"address": "127.0.0.1:8001"}]
    tcp, web = result.config["listeners"]
    assert tcp["upstream"] == "app"
    route = web["routes"][0]
    assert route["upstream"] == "http-app" and route["proxy_headers"]["host"] == "app"   # nginx's $proxy_host


def test_proxy_set_header_lists_replace_the_inherited_one(tmp_path):
    result = run(tmp_path, http("proxy_set_header X-Real-IP $remote_addr;\nproxy_set_header X-Team web;\n"
                                "add_header X-Served-By nginx;\n"
                                "upstream b { server 127.0.0.1:1; }\nserver { listen 127.0.0.1:8080;\n"
                                "  location /own/ { proxy_set_header X-Forwarded-Proto $scheme; proxy_pass http://b; }\n"
                                "  location / { proxy_pass http://b; } }"))
    by_prefix = {r["match"]["path_prefix"]: r for r in routes(result) if "path_prefix" in r.get("match", {})}
    own, inherited = by_prefix["/own/"], by_prefix["/"]
    # nginx: a level with its own proxy_set_header drops every inherited one
    assert own["proxy_headers"]["x_forwarded_proto"] and not own["proxy_headers"]["x_real_ip"]
    assert "set_headers" not in own
    assert inherited["proxy_headers"]["x_real_ip"] and inherited["set_headers"] == {"X-Team": "web"}
    assert item(result, "add_header X-Served-By").status == NOT_TRANSLATED
