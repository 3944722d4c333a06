import dns.zone

from edgeway.config import load_config
from edgeway.demo import plan as demo_plan


def test_every_generated_config_validates(tmp_path):
    p = demo_plan.plan(tmp_path, redis=True, privileged=False)
    demo_plan.write(p)
    assert p.dns_port == demo_plan.UNPRIVILEGED_DNS_PORT
    for role in p.roles:
        if role.config:
            config = load_config(role.config)
            assert config.dns or config.listeners
    lb = load_config(p.role("lb").config)
    routes = ["/api/", "/sticky/", "/static/", "/admin/", "/backends/"]
    assert [r.match.path_prefix for r in lb.listeners[0].routes] == routes
    assert lb.upstreams["api_sticky"].sticky.cookie == "SERVERID"
    # the second node: the same routes, its own API servers, the same static and admin ones
    lb2 = load_config(p.role("lb-2").config)
    assert [r.match.path_prefix for r in lb2.listeners[0].routes] == routes
    assert str(lb2.listeners[0].listen) == f"{demo_plan.LB2_IP}:{p.http_port}"
    assert [str(s.address) for s in lb2.upstreams["api"].servers] == [f"{ip}:8080" for ip in demo_plan.API2_IPS]
    assert lb2.upstreams["static"] == lb.upstreams["static"] and lb2.admin is None
    servers = [{str(s.address) for s in node.upstreams["api"].servers} for node in (lb, lb2)]
    assert not servers[0] & servers[1]
    resolver = load_config(p.role("resolver").config)
    assert resolver.dns.recursion.query_port == demo_plan.UNPRIVILEGED_DNS_PORT


def test_zones_hold_the_seeds_records(tmp_path):
    p = demo_plan.plan(tmp_path, redis=False, privileged=True)
    demo_plan.write(p)
    zone = dns.zone.from_file(str(tmp_path / "example.com.zone"), "example.com.", relativize=False)
    text = zone.to_text(relativize=False)
    for record in ("www.example.com. 300 IN CNAME example.com.",
                   "example.com. 300 IN MX 10 mail1.example.com.", '"v=spf1 include:_spf.google.com ~all"',
                   "dev.example.com. 300 IN A"):
        assert record in text
    # api.example.com is the authoritative server's policy record, not a line of the zone
    assert "api.example.com." not in text
    assert p.url == "http://api.example.com/api/hello"


def test_api_is_a_policy_record_over_both_nodes_checked_through_them(tmp_path):
    p = demo_plan.plan(tmp_path, redis=False, privileged=False)
    demo_plan.write(p)
    auth = load_config(p.role("auth").config)
    (record,) = auth.dns.records
    assert (record.name, record.type, record.policy, record.when_all_down) == ("api.example.com.", "A",
                                                                               "multivalue", "all")
    assert record.ttl == demo_plan.RECORD_TTL
    assert [t.addresses for t in record.targets] == [[demo_plan.LB_IP], [demo_plan.LB2_IP]]
    for target in record.targets:
        check = target.health_check
        # the node proxies /backends/health to one of its API servers: 503 when none is up
        assert (check.type, check.path, check.port) == ("http", "/backends/health", p.http_port)
    # each check is an upstream of its own (the one health view), and the API is on
    assert sorted(n for n in auth.upstreams if n.startswith("dns-record:")) == [
        "dns-record:api.example.com./A/0", "dns-record:api.example.com./A/1"]
    assert str(auth.admin.listen) == p.role("auth-admin").address == f"{demo_plan.AUTH_IP}:{demo_plan.ADMIN_PORT}"


def test_the_balancer_has_its_admin_listener_and_a_private_random_token(tmp_path):
    p = demo_plan.plan(tmp_path, redis=False, privileged=False)
    demo_plan.write(p)
    lb = load_config(p.role("lb").config)
    assert str(lb.admin.listen) == p.role("lb-admin").address == f"{demo_plan.LB_IP}:{demo_plan.ADMIN_PORT}"
    assert lb.admin.token_file == p.token_file
    assert p.token_file.read_text() == p.token + "\n" and len(p.token) >= 32
    assert p.token_file.stat().st_mode & 0o777 == 0o600
    assert p.dashboard_url == f"http://{demo_plan.LB_IP}:{demo_plan.ADMIN_PORT}/dashboard#token={p.token}"
    # a second run makes a new token, and a file left readable by others is made private again
    first = p.token
    p.token_file.chmod(0o644)
    demo_plan.write(p)
    assert p.token != first and p.token_file.stat().st_mode & 0o777 == 0o600
