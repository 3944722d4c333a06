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
    assert [r.match.path_prefix for r in lb.listeners[0].routes] == ["/api/", "/sticky/", "/static/", "/admin/"]
    assert lb.upstreams["api_sticky"].sticky.cookie == "SERVERID"
    resolver = load_config(p.role("resolver").config)
    assert resolver.dns.recursion.query_port == demo_plan.UNPRIVILEGED_DNS_PORT


def test_zones_hold_the_seeds_records(tmp_path):
    p = demo_plan.plan(tmp_path, redis=False, privileged=True)
    demo_plan.write(p)
    zone = dns.zone.from_file(str(tmp_path / "example.com.zone"), "example.com.", relativize=False)
    text = zone.to_text(relativize=False)
    for record in ("www.example.com. 300 IN CNAME example.com.", "api.example.com. 300 IN CNAME api-lb-123.example.com.",
                   "example.com. 300 IN MX 10 mail1.example.com.", '"v=spf1 include:_spf.google.com ~all"',
                   "dev.example.com. 300 IN A"):
        assert record in text
    assert p.url == "http://api.example.com/api/hello"


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
