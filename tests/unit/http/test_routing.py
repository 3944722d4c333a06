import pytest

from edgeway.config.model import RouteConfig
from edgeway.http.routing import RequestView, Router, compile_hash_key, ip_hash_key, normalize_host, parse_cookies


def view(path="/", host="example.com", method="GET", headers=(), remote="10.0.0.1"):
    return RequestView(method, host, path, list(headers), remote)


ROUTES = [
    {"match": {"path_prefix": "/api/"}, "upstream": "api"},
    {"match": {"host": "admin.example.com", "path_prefix": "/admin/", "header": {"X-Role": "ops"}},
     "upstream": "admin"},
    {"match": {"host": "*.static.test", "method": "GET"}, "upstream": "static"},
    {"match": {"path_regex": r"\.php$"}, "upstream": "php"},
    {"match": {"path": "/exact", "cookie": {"beta": "1"}}, "upstream": "beta"},
    {"match": {"path_prefix": "/static/"}, "upstream": "static", "strip_prefix": True},
]


@pytest.fixture
def router():
    return Router([RouteConfig.model_validate(r) for r in ROUTES],
                  {n: n for n in ("api", "admin", "static", "php", "beta")})


@pytest.mark.parametrize("request_view, expected", [
    (view("/api/users"), "api"),
    (view("/api"), None),
    (view("/admin/x", "Admin.Example.com:8080", headers=[(b"X-Role", b"ops")]), "admin"),
    (view("/admin/x", "admin.example.com", headers=[(b"x-role", b"dev")]), None),
    (view("/admin/x", "other.com", headers=[(b"X-Role", b"ops")]), None),
    (view("/x", "cdn.static.test"), "static"),
    (view("/x", "static.test"), None),
    (view("/x", "a.b.static.test", method="POST"), None),
    (view("/index.php?x=1"), "php"),
    (view("/exact", headers=[(b"Cookie", b"a=b; beta=1")]), "beta"),
    (view("/exact", headers=[(b"Cookie", b"beta=2")]), None),
    (view("/api/x.php"), "api"),               # first match wins
])
def test_first_match_wins(router, request_view, expected):
    route = router.match(request_view)
    assert (route.upstream_name if route else None) == expected


def test_view_is_built_only_for_a_route_that_tests_more_than_the_path_prefix(router):
    made = []

    def make_view(path, **kw):
        def make():
            made.append(path)
            return view(path, **kw)
        return make

    route, v = router.match_path("/api/users", make_view("/api/users"))
    assert route.upstream == "api" and v is None and made == []   # the prefix alone decided
    route, v = router.match_path("/static/x", make_view("/static/x"))
    assert route.upstream == "static" and v is not None and made == ["/static/x"]   # host route tried
    made.clear()
    assert router.match_path("/admin/x", make_view("/admin/x", host="other.com"))[0] is None
    assert made == ["/admin/x"]   # built once for all the routes that needed it


def test_strip_prefix(router):
    route = router.match(view("/static/a/b.css?v=2"))
    assert route.rewrite_path("/static/a/b.css?v=2") == "/a/b.css?v=2"
    assert route.rewrite_path("/static/") == "/"
    assert router.match(view("/api/x")).rewrite_path("/api/x") == "/api/x"


def test_hosts_and_cookies():
    assert normalize_host("Example.COM.:8080") == "example.com"
    assert normalize_host("[::1]:80") == "[::1]"
    assert parse_cookies('a=1; b="two"; a=3; junk') == {"a": "1", "b": "two"}


@pytest.mark.parametrize("template, balance, expected", [
    (None, "ip_hash", "10.0.0"),      # nginx's ip_hash: the client's /24
    (None, "round_robin", None),
    ("$remote_addr", "hash", "10.0.0.1"),
    ("$cookie_user", "hash", "ann"),
    ("$cookie_missing", "hash", None),
    ("$http_x_tenant", "hash", "t1"),
    ("$uri", "hash", "/p"),
    ("$request_uri", "hash", "/p?q=1"),
    ("u:$cookie_user:$http_x_tenant", "hash", "u:ann:t1"),
])
def test_hash_keys(template, balance, expected):
    v = view("/p?q=1", headers=[(b"Cookie", b"user=ann"), (b"X-Tenant", b"t1")])
    assert compile_hash_key(template, balance)(v) == expected


@pytest.mark.parametrize("addr, key", [
    ("192.0.2.77", "192.0.2"), ("::ffff:192.0.2.77", "192.0.2"), ("2001:db8::1", "2001:db8::1"),
    ("::1", "::1"), ("", ""),
])
def test_ip_hash_keys_on_the_first_three_octets_as_nginx(addr, key):
    assert ip_hash_key(addr) == key

