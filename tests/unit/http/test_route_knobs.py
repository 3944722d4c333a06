"""routes[].respond, proxy_headers, set_headers, replace_prefix, sans-IO: the variables, the
config's checks, the target and head for the server, a route's own answer. (Side by side
with a real nginx: tests/integration/test_http_route_knobs.py.)"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgeway.config.model import RouteConfig
from edgeway.http import variables
from edgeway.http.messages import analyze_request, upstream_request_head
from edgeway.http.routing import Route

HEADERS = [(b"Host", b"Shop.Example:8080"), (b"X-Who", b"me"), (b"x-who", b"you"), (b"Cookie", b"a=1"),
           (b"Cookie", b"b=2"), (b"X-Forwarded-For", b"198.51.100.7"), (b"X-Real-IP", b"6.6.6.6"),
           (b"Accept", b"*/*")]


def head(target: str = "/api/items?id=3", headers=HEADERS, method: str = "GET"):
    return analyze_request(method, target.encode(), "1.1", list(headers), True)


def values(target: str = "/api/items?id=3", scheme: str = "http") -> variables.Values:
    return variables.Values(scheme, "Shop.Example:8080", target, "10.0.0.9", 8080, HEADERS, "app")


@pytest.mark.parametrize("template, expected", [
    ("plain", "plain"),
    ("$scheme://$host$request_uri", "http://shop.example/api/items?id=3"),
    ("${uri}x|$args|$is_args", "/api/itemsx|id=3|?"),
    ("$remote_addr:$server_port $proxy_host", "10.0.0.9:8080 app"),
    ("$http_x_who / $HTTP_COOKIE / [$http_absent]", "me, you / a=1; b=2 / []"),
    ("", ""),
])
def test_variables_expand_as_nginx_names_them(template, expected):
    assert variables.expand(variables.compile_template(template, variables.PROXY), values()) == expected


def test_no_query_means_empty_args_and_is_args():
    compiled = variables.compile_template("[$args][$is_args]")
    assert variables.expand(compiled, values("/p")) == "[][]"


@pytest.mark.parametrize("template, message", [
    ("$nope", "unknown variable $nope"),
    ("$proxy_host", "unknown variable $proxy_host"),   # not in respond: no upstream there
    ("costs $5", "unknown variable $5"),
    ("a $ b", "invalid variable"),
    ("${host", "invalid variable"),
    ("$http_", "unknown variable $http_"),
])
def test_bad_variables_are_config_errors(template, message):
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        variables.compile_template(template)


@pytest.mark.parametrize("route, message", [
    ({"match": {"path": "/x"}}, "exactly one of upstream"),
    ({"upstream": "a", "respond": {}}, "exactly one of upstream"),
    ({"respond": {"status": 99}}, "greater than or equal to 100"),
    ({"respond": {"status": 200, "location": "/y"}}, "a 3xx status"),
    ({"respond": {"location": "/y", "headers": {"location": "/z"}}}, "given twice"),
    ({"respond": {"headers": {"Bad Name": "x"}}}, "invalid header name"),
    ({"respond": {"headers": {"X-A": "a\r\nX-B: b"}}}, "CR or LF"),
    ({"respond": {"headers": {"X-A": "caf\u00e9\u2603"}}}, "Latin-1"),
    ({"respond": {"body": "x"}, "strip_prefix": True}, "only for a route with an upstream"),
    ({"respond": {"body": "x"}, "set_headers": {"X-A": "1"}}, "only for a route with an upstream"),
    ({"upstream": "a", "set_headers": {"X-Forwarded-For": "x"}}, "proxy_headers.x_forwarded_for"),
    ({"upstream": "a", "set_headers": {"X-A": "1", "x-a": "2"}}, "given twice"),
    ({"upstream": "a", "set_headers": {"Transfer-Encoding": "x"}}, "written by edgeway"),
    ({"upstream": "a", "proxy_headers": {"host": ""}}, "host is empty"),
    ({"upstream": "a", "set_host": "x", "proxy_headers": {"host": "y"}}, "both given"),
    ({"upstream": "a", "match": {"path_prefix": "/a/"}, "strip_prefix": True, "replace_prefix": "/b/"}, "both given"),
    ({"upstream": "a", "match": {"path_prefix": "/a/"}, "replace_prefix": "b/"}, "starts with '/'"),
    ({"upstream": "a", "replace_prefix": "/b/"}, "needs match.path_prefix"),
])
def test_bad_routes_are_refused(route, message):
    with pytest.raises(ValidationError, match=message):
        RouteConfig.model_validate(route)


def test_set_host_is_an_alias_and_a_dump_reads_back():
    config = RouteConfig.model_validate({"upstream": "a", "set_host": "api.internal"})
    assert config.proxy_headers.host == "api.internal" and config.set_host is None
    assert RouteConfig.model_validate(config.model_dump()) == config
    redirect = RouteConfig.model_validate({"respond": {"location": "https://x$request_uri"}})
    assert redirect.respond.status == 302
    assert RouteConfig.model_validate(redirect.model_dump()) == redirect


@pytest.mark.parametrize("route, target, expected", [
    ({"match": {"path_prefix": "/api/"}, "strip_prefix": True}, "/api/x?q", "/x?q"),
    ({"match": {"path_prefix": "/api"}, "strip_prefix": True}, "/api", "/"),
    ({"match": {"path_prefix": "/api/"}, "replace_prefix": "/v1/"}, "/api/x?q", "/v1/x?q"),
    ({"match": {"path_prefix": "/api/"}, "replace_prefix": "/v1/"}, "/api/", "/v1/"),
    ({"match": {"path_prefix": "/api"}, "replace_prefix": "/v1/"}, "/api/x", "/v1//x"),   # nginx's too
    ({"match": {"path_prefix": "/api"}, "replace_prefix": "/v1/"}, "/apix?y", "/v1/x?y"),
    ({"match": {"path_prefix": "/api/"}, "replace_prefix": "/"}, "/api/x", "/x"),
    ({"match": {"path_prefix": "/api/"}}, "/api/x", "/api/x"),
    ({"strip_prefix": True}, "/api/x", "/api/x"),   # no prefix: nothing to strip (as before)
])
def test_the_target_sent_on(route, target, expected):
    r = Route(0, RouteConfig.model_validate({"upstream": "app", **route}), None)
    assert (r.rewrite_path(target) if r.strip else target) == expected


def test_a_default_route_keeps_the_fast_head_and_todays_bytes():
    r = Route(0, RouteConfig.model_validate({"upstream": "app"}), None)
    assert r.rewrite is None and r.respond is None and not r.custom
    knobs = Route(0, RouteConfig.model_validate({"upstream": "app", "proxy_headers": {"x_real_ip": True}}), None)
    assert knobs.rewrite is None and not knobs.custom    # a default written out is the default
    # a HeadRewrite that adds all four and sets nothing renders what upstream_request_head does
    h = head()
    same = Route(0, RouteConfig.model_validate({"upstream": "app", "set_headers": {"X-Gone": ""}}), None)
    assert same.rewrite.render(h, "/t", "10.0.0.9", "http", 8080, True, False, "srv") == \
        upstream_request_head(h, "/t", h.host, "10.0.0.9", "http", True)


def _fields(data: bytes) -> tuple[bytes, list[bytes]]:
    lines = data.split(b"\r\n")
    return lines[0], [line for line in lines[1:] if line]


def test_nginx_defaults_pass_the_clients_fields_and_set_headers_replace():
    config = RouteConfig.model_validate({
        "upstream": "app", "match": {"path_prefix": "/api/"}, "replace_prefix": "/v1/",
        "proxy_headers": {"host": "$proxy_host", "x_real_ip": False, "x_forwarded_for": False,
                          "x_forwarded_proto": False, "x_forwarded_host": False},
        "set_headers": {"Accept": "", "X-Who": "$http_x_who!", "X-Port": "$server_port"}})
    r = Route(0, config, None)
    h = head()
    line, fields = _fields(r.rewrite.render(h, r.rewrite_path(h.target), "10.0.0.9", "http", 8080, False, False,
                                            "srv"))
    assert line == b"GET /v1/items?id=3 HTTP/1.1"
    assert fields == [b"Host: app", b"Cookie: a=1", b"Cookie: b=2", b"X-Who: me, you!", b"X-Port: 8080",
                      b"X-Forwarded-For: 198.51.100.7", b"X-Real-IP: 6.6.6.6"]


def test_a_fixed_host_and_some_fields_added():
    config = RouteConfig.model_validate({"upstream": "app", "proxy_headers": {"host": "api.internal",
                                                                              "x_forwarded_host": False}})
    r = Route(0, config, None)
    assert r.rewrite.constant
    _, fields = _fields(r.rewrite.render(head(), "/t", "10.0.0.9", "https", 443, False, False, "srv"))
    assert fields[0] == b"Host: api.internal"
    assert b"X-Real-IP: 10.0.0.9" in fields and b"X-Forwarded-For: 198.51.100.7, 10.0.0.9" in fields
    assert b"X-Forwarded-Proto: https" in fields and not any(f.startswith(b"X-Forwarded-Host") for f in fields)


def _respond(respond: dict, target: str = "/old?a=1", method: str = "GET", scheme: str = "http", port: int = 8080):
    r = Route(0, RouteConfig.model_validate({"respond": respond}), None)
    data = r.respond.render(head(target, method=method), scheme, "10.0.0.9", "127.0.0.1", port)
    top, _, body = data.partition(b"\r\n\r\n")
    return top.split(b"\r\n"), body


@pytest.mark.parametrize("respond, scheme, port, location", [
    ({"status": 301, "location": "/new$is_args$args"}, "http", 8080, b"http://shop.example:8080/new?a=1"),
    ({"status": 301, "location": "/new"}, "http", 80, b"http://shop.example/new"),
    ({"status": 308, "location": "/new"}, "https", 443, b"https://shop.example/new"),
    ({"status": 308, "location": "/new"}, "https", 8443, b"https://shop.example:8443/new"),
    ({"location": "https://$host$request_uri"}, "http", 8080, b"https://shop.example/old?a=1"),
])
def test_redirects(respond, scheme, port, location):
    lines, body = _respond(respond, scheme=scheme, port=port)
    assert b"Location: " + location in lines
    assert body.startswith(b"<html>") and b"<hr><center>edgeway</center>" in body
    assert b"Content-Type: text/html" in lines and b"Content-Length: %d" % len(body) in lines


def test_bodies_types_and_heads():
    lines, body = _respond({"body": "hi $host $uri\n"})
    assert lines[0] == b"HTTP/1.1 200 OK" and body == b"hi shop.example /old\n"
    assert b"Content-Type: text/plain" in lines and b"Content-Length: 21" in lines
    lines, body = _respond({"body": "{}", "headers": {"Content-Type": "application/json"}}, method="HEAD")
    assert body == b"" and b"Content-Length: 2" in lines and b"Content-Type: application/json" in lines
    assert b"Content-Type: text/plain" not in lines
    lines, body = _respond({"status": 418})          # no page: nothing, and no type (as nginx)
    assert body == b"" and b"Content-Length: 0" in lines and not any(b"Content-Type" in x for x in lines)
    lines, body = _respond({"status": 204})
    assert body == b"" and not any(b"Content-Length" in x for x in lines)
    lines, body = _respond({"body": "caf\u00e9 $http_x_who"})   # the config's text as UTF-8
    assert body == "café me, you".encode()
