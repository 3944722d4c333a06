"""What `edgeway demo` runs: the seed's "AWS ALB + EC2" architecture on loopback.

    client -> resolver 127.0.53.4 -> root 127.0.53.1 -> .com 127.0.53.2 -> example.com 127.0.53.3
           -> load balancer node lb 127.0.80.1 (/api/ /sticky/ /static/ /admin/, health checks;
              its runtime API and dashboard on 127.0.80.1:9901) -> api-1..3 127.0.80.11-13
              or node lb-2 127.0.80.2 (the same routes) -> api-4..5 127.0.80.14-15
           -> static 127.0.80.21, admin 127.0.80.31 (behind both nodes)
           -> sessions in redis 127.0.80.40 (or a shared SQLite file)

api.example.com is a policy record of the example.com server (dns.records, Route 53's part):
multivalue over the two nodes, each checked on GET /backends/health, which the node proxies to
one of its own API servers (its 503 when none is healthy). When every API server of one node
fails, that node's address leaves the answer; the example.com server's runtime API
(127.0.53.3:9901, `edgeway ctl records`) says which targets are up and why.

`plan()` decides addresses and ports; `write()` renders the zone files, root hints and one
edgeway config per role into a folder. Each role runs as its own `edgeway serve` process, as
it would on its own machine.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

ROOT_IP, TLD_IP, AUTH_IP, RESOLVER_IP = "127.0.53.1", "127.0.53.2", "127.0.53.3", "127.0.53.4"
LB_IP, LB2_IP = "127.0.80.1", "127.0.80.2"
API_IPS = ["127.0.80.11", "127.0.80.12", "127.0.80.13"]     # behind lb
API2_IPS = ["127.0.80.14", "127.0.80.15"]                   # behind lb-2
RECORD_TTL = 10           # api.example.com's TTL: a resolver sees a node leave within it
STATIC_IP, ADMIN_IP, REDIS_IP, DEV_IP = "127.0.80.21", "127.0.80.31", "127.0.80.40", "127.0.80.50"
BACKEND_PORT = 8080
REDIS_PORT = 6379
UNPRIVILEGED_DNS_PORT = 10053
UNPRIVILEGED_HTTP_PORT = 8080
ADMIN_PORT = 9901                  # the admin listener's default port, on the balancer's address


@dataclass
class Role:
    name: str          # "root", "api-1", ...
    kind: str          # "dns" | "lb" | "admin" | "backend" | "redis"
    address: str       # host:port shown in the table
    what: str          # one line for the table
    config: Path | None = None
    udp: bool = False  # DNS roles bind UDP too


@dataclass
class DemoPlan:
    dns_port: int
    http_port: int
    privileged: bool
    folder: Path
    redis: bool
    roles: list[Role] = field(default_factory=list)
    token: str = ""    # the balancer's admin token, made by write()

    @property
    def token_file(self) -> Path:
        return self.folder / "admin.token"

    @property
    def dashboard_url(self) -> str:
        # the token rides in the fragment: the browser never sends it, the page reads it and
        # wipes it from the address bar
        return f"http://{self.role('lb-admin').address}/dashboard#token={self.token}"

    @property
    def root_hints(self) -> Path:
        return self.folder / "root.hints"

    @property
    def url(self) -> str:
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://api.example.com{port}/api/hello"

    def role(self, name: str) -> Role:
        return next(r for r in self.roles if r.name == name)


def can_bind_privileged() -> bool:
    """Whether this process may bind ports below 1024 (root or CAP_NET_BIND_SERVICE)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ROOT_IP, 53))
        except PermissionError:
            return False
        except OSError as exc:  # in use is still "allowed": the conflict is reported later
            return exc.errno == errno.EADDRINUSE
    return True


def address_conflicts(plan: DemoPlan) -> list[str]:
    """Addresses of the plan that something else already holds, each with what to do."""
    problems = []
    for role in plan.roles:
        host, port = role.address.rsplit(":", 1)
        kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if role.udp else [])
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as s:
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, int(port)))
                except OSError as exc:
                    proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
                    problems.append(
                        f"{role.name}: {proto} {role.address} is taken ({exc.strerror}); find the owner with "
                        f"`ss -lnp{'t' if kind == socket.SOCK_STREAM else 'u'} | grep {host}:{port}` and stop it "
                        "(an earlier `edgeway demo`?)"
                    )
    return problems


def plan(folder: Path, redis: bool, privileged: bool | None = None) -> DemoPlan:
    privileged = can_bind_privileged() if privileged is None else privileged
    dns_port = 53 if privileged else UNPRIVILEGED_DNS_PORT
    http_port = 80 if privileged else UNPRIVILEGED_HTTP_PORT
    p = DemoPlan(dns_port, http_port, privileged, folder, redis)
    dns = lambda ip: f"{ip}:{dns_port}"  # noqa: E731
    p.roles = [
        Role("root", "dns", dns(ROOT_IP), "root server: zone . (delegates com.)", udp=True),
        Role("tld", "dns", dns(TLD_IP), ".com TLD server (delegates example.com.)", udp=True),
        Role("auth", "dns", dns(AUTH_IP), "example.com authoritative (Route 53's role)", udp=True),
        Role("resolver", "dns", dns(RESOLVER_IP), "caching resolver (root hints: the demo's root)", udp=True),
        Role("auth-admin", "admin", f"{AUTH_IP}:{ADMIN_PORT}", "example.com's runtime API (ctl records)"),
        Role("lb", "lb", f"{LB_IP}:{http_port}", "L7 load balancer node 1: /api/ /sticky/ /static/ /admin/"),
        Role("lb-admin", "admin", f"{LB_IP}:{ADMIN_PORT}", "node 1's runtime API and dashboard"),
        Role("lb-2", "lb", f"{LB2_IP}:{http_port}", "L7 load balancer node 2: the same routes"),
    ]
    for i, ip in enumerate(API_IPS + API2_IPS, 1):
        node = "lb" if ip in API_IPS else "lb-2"
        p.roles.append(Role(f"api-{i}", "backend", f"{ip}:{BACKEND_PORT}", f"API server (EC2) behind {node}"))
    p.roles.append(Role("static", "backend", f"{STATIC_IP}:{BACKEND_PORT}", "static files server"))
    p.roles.append(Role("admin", "backend", f"{ADMIN_IP}:{BACKEND_PORT}", "admin server"))
    if redis:
        p.roles.append(Role("redis", "redis", f"{REDIS_IP}:{REDIS_PORT}", "shared session store"))
    return p


# --------------------------------------------------------------------------- files

ROOT_ZONE = """\
$TTL 86400
.                      SOA   a.root-servers.net. nstld.verisign-grs.com. 2026112501 1800 900 604800 86400
.                      NS    a.root-servers.net.
a.root-servers.net.    A     {root}
com.          172800   NS    a.gtld-servers.net.
a.gtld-servers.net. 172800 A {tld}
"""

COM_ZONE = """\
$TTL 86400
com.                   SOA   a.gtld-servers.net. nstld.verisign-grs.com. 2026112501 1800 900 604800 86400
com.                   NS    a.gtld-servers.net.
example.com.  172800   NS    ns1.example.com.
ns1.example.com. 172800 A    {auth}
"""

EXAMPLE_ZONE = """\
; The seed's "practical setup", with loopback addresses.
$ORIGIN example.com.
$TTL 300
@           SOA   ns1 hostmaster 2026112501 3600 900 1209600 300
            NS    ns1
ns1         A     {auth}
@           A     {lb}                     ; apex: the load balancer
www         CNAME example.com.             ; www goes to the apex
; api: not here: a policy record of auth.yaml (dns.records), whose answer follows the health
; of the two balancer nodes, as an ALB's name does (the seed's api-lb-123)
dev         A     {dev}                    ; a development server
@           MX    10 mail1
@           MX    20 mail2
mail1       A     127.0.80.61
mail2       A     127.0.80.62
@           TXT   "v=spf1 include:_spf.google.com ~all"
"""


def _dns_config(listen: str, zone: str | None, origin: str | None, extra: str = "") -> str:
    zones = f"  zones:\n    - file: {zone}\n      origin: \"{origin}\"\n" if zone else "  zones: []\n"
    return f"dns:\n  listen: [\"{listen}\"]\n{zones}{extra}"


def write(p: DemoPlan) -> None:
    """Render every file of the plan into p.folder."""
    f = p.folder
    f.mkdir(parents=True, exist_ok=True)
    ips = {"root": ROOT_IP, "tld": TLD_IP, "auth": AUTH_IP, "lb": LB_IP, "dev": DEV_IP}
    (f / "root.zone").write_text(ROOT_ZONE.format(**ips))
    (f / "com.zone").write_text(COM_ZONE.format(**ips))
    (f / "example.com.zone").write_text(EXAMPLE_ZONE.format(**ips))
    write_token(p)
    p.root_hints.write_text(f".  3600000  NS  a.root-servers.net.\na.root-servers.net.  3600000  A  {ROOT_IP}\n")
    files = {
        "root": _dns_config(p.role("root").address, "root.zone", "."),
        "tld": _dns_config(p.role("tld").address, "com.zone", "com."),
        "auth": _admin_config(p, "auth-admin") + _dns_config(p.role("auth").address, "example.com.zone",
                                                             "example.com.", _record_config(p)),
        "resolver": _dns_config(
            p.role("resolver").address, None, None,
            "  recursion:\n    enabled: true\n    root_hints: root.hints\n"
            f"    allow: [\"127.0.0.0/8\", \"::1\"]\n    query_port: {p.dns_port}\n",
        ),
        "lb": _lb_config(p, "lb", API_IPS, workers=2),
        "lb-2": _lb_config(p, "lb-2", API2_IPS, workers=1),
    }
    for name, text in files.items():
        path = f / f"{name}.yaml"
        path.write_text(text)
        p.role(name).config = path


def write_token(p: DemoPlan) -> None:
    """A fresh random admin token in a file only this user may read (edgeway refuses one that
    every user may: the token is all that stands between a local user and draining servers)."""
    p.token = secrets.token_urlsafe(32)   # URL-safe: it goes into the dashboard URL as it is
    fd = os.open(p.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)      # a file left by an earlier run keeps its mode otherwise
        f.write(p.token + "\n")


def _admin_config(p: DemoPlan, role: str, what: str = "") -> str:
    return f"""\
admin:                      # the runtime API: `edgeway ctl --config {role.removesuffix('-admin')}.yaml`{what}
  listen: "{p.role(role).address}"
  token_file: {p.token_file.name}
"""


CHECK = "{path: /health, interval: 2s, timeout: 1s, rise: 2, fall: 2}"


def _record_config(p: DemoPlan) -> str:
    """api.example.com: both balancer nodes, each as long as one of its API servers is up."""
    targets = []
    for role in ("lb", "lb-2"):
        ip = p.role(role).address.rsplit(":", 1)[0]
        targets.append(f"""\
        - addresses: ["{ip}"]         # {role}
          health_check: {{path: /backends/health, port: {p.http_port}, interval: 2s, timeout: 1s, rise: 2, fall: 2}}
""")
    return f"""\
  records:                  # answers that follow health (docs/dns.md): Route 53's part
    - name: api.example.com.
      type: A
      ttl: {RECORD_TTL}s
      policy: multivalue      # every healthy node (up to 8), in random order
      when_all_down: all      # no node healthy: answer both anyway (Route 53's way)
      targets:
{"".join(targets)}"""


def _lb_config(p: DemoPlan, role: str, api_ips: list[str], workers: int) -> str:
    api = "\n".join(f"      - {{address: \"{ip}:{BACKEND_PORT}\"}}" for ip in api_ips)
    check = CHECK
    if workers > 1:
        head = f"workers: {workers}                  # a supervisor (health checks, admin) and {workers} workers\n"
    else:
        head = "workers: 1                  # one process: node 2 is small\n"
    if role == "lb":
        head += _admin_config(p, "lb-admin", " and /dashboard")
    return head + f"""\
upstreams:
  api:                      # stateless: sessions live in the shared store
    balance: least_conn
    servers:
{api}
    health_check: {check}
  api_sticky:               # the same servers, pinned by the seed's SERVERID cookie
    balance: round_robin
    servers:
{api}
    health_check: {check}
    sticky: {{cookie: SERVERID}}
  static:
    servers: [{{address: "{STATIC_IP}:{BACKEND_PORT}"}}]
    health_check: {check}
  admin:
    servers: [{{address: "{ADMIN_IP}:{BACKEND_PORT}"}}]
    health_check: {check}
listeners:
  - name: web
    protocol: http
    listen: "{p.role(role).address}"
    trace_header: true
    routes:
      - match: {{path_prefix: /api/}}
        upstream: api
      - match: {{path_prefix: /sticky/}}
        upstream: api_sticky
      - match: {{path_prefix: /static/}}
        upstream: static
        strip_prefix: true
      - match: {{path_prefix: /admin/}}
        upstream: admin
      - match: {{path_prefix: /backends/}}   # /backends/health: 200 while one API server is up
        upstream: api                          # (the example.com server checks it)
        strip_prefix: true
"""
