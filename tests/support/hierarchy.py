"""A small DNS hierarchy on loopback, shared by resolver tests (NSD, Knot or edgeway serve it):

    root  .            ROOT (127.0.60.1)   delegates com. and net. to TLD
    tld   com. net.    TLD  (127.0.60.2)   delegates example.com. (glue), example.net., provider.net.,
                                           glueless.com. (NS ns.provider.net., no glue)
    auth  example.com. AUTH1 and AUTH2 (127.0.60.3, .4): the seed's records and test cases
    auth3 example.net. provider.net. glueless.com.   AUTH3 (127.0.60.5)

Every server listens on the same port, so the resolver's `query_port` reaches all of them.
"""

from __future__ import annotations

from pathlib import Path

ROOT, TLD, AUTH1, AUTH2, AUTH3 = "127.0.60.1", "127.0.60.2", "127.0.60.3", "127.0.60.4", "127.0.60.5"

ROOT_ZONE = f"""\
$TTL 86400
.                    SOA  a.root-servers.test. hostmaster.root-servers.test. 1 1800 900 604800 86400
.                    NS   a.root-servers.test.
a.root-servers.test. A    {ROOT}
com.       172800    NS   a.gtld-servers.net.
net.       172800    NS   a.gtld-servers.net.
a.gtld-servers.net. 172800 A {TLD}
"""

COM_ZONE = f"""\
$TTL 86400
com.             SOA  a.gtld-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 900
com.             NS   a.gtld-servers.net.
example.com.     172800 NS ns1.example.com.
example.com.     172800 NS ns2.example.com.
ns1.example.com. 172800 A  {AUTH1}
ns2.example.com. 172800 A  {AUTH2}
glueless.com.    172800 NS ns.provider.net.
"""

NET_ZONE = f"""\
$TTL 86400
net.                SOA  a.gtld-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 900
net.                NS   a.gtld-servers.net.
a.gtld-servers.net. A    {TLD}
example.net.        172800 NS ns1.example.net.
ns1.example.net.    172800 A  {AUTH3}
provider.net.       172800 NS ns.provider.net.
ns.provider.net.    172800 A  {AUTH3}
"""

BIG_TXT = " ".join(f'"{"x" * 200}-{i}"' for i in range(12))   # > 1232 bytes: TC=1 over UDP

EXAMPLE_COM_ZONE = f"""\
$ORIGIN example.com.
$TTL 300
@           SOA   ns1 hostmaster 2026112501 3600 900 1209600 300
@           NS    ns1
@           NS    ns2
ns1         A     {AUTH1}
ns2         A     {AUTH2}
@           A     127.0.80.1
www         CNAME example.com.
api         CNAME api-lb-123.example.com.
api-lb-123  60 A  127.0.80.1
lb          CNAME lb.example.net.
chain       CNAME lb.glueless.com.
@           MX    10 mail1
@           MX    20 mail2
mail1       A     127.0.80.61
mail2       A     127.0.80.62
@           TXT   "v=spf1 include:_spf.google.com ~all"
*.wild      A     127.0.80.99
short    1  A     127.0.80.7
long  3600  A     127.0.80.8
old         DNAME example.net.
loop1       CNAME loop2.example.com.
loop2       CNAME loop1.example.com.
big         TXT   {BIG_TXT}
"""

EXAMPLE_NET_ZONE = f"""\
$ORIGIN example.net.
$TTL 300
@    SOA  ns1 hostmaster 1 3600 900 1209600 120
@    NS   ns1
ns1  A    {AUTH3}
lb   A    127.0.80.2
www  A    127.0.80.22
"""

PROVIDER_NET_ZONE = f"""\
$ORIGIN provider.net.
$TTL 300
@    SOA  ns hostmaster 1 3600 900 1209600 300
@    NS   ns
ns   A    {AUTH3}
"""

GLUELESS_COM_ZONE = """\
$ORIGIN glueless.com.
$TTL 300
@    SOA  ns.provider.net. hostmaster.provider.net. 1 3600 900 1209600 300
@    NS   ns.provider.net.
www  A    127.0.80.3
lb   A    127.0.80.4
"""

SERVERS = {
    "root": (ROOT, {".": ROOT_ZONE}),
    "tld": (TLD, {"com.": COM_ZONE, "net.": NET_ZONE}),
    "auth1": (AUTH1, {"example.com.": EXAMPLE_COM_ZONE}),
    "auth2": (AUTH2, {"example.com.": EXAMPLE_COM_ZONE}),
    "auth3": (AUTH3, {"example.net.": EXAMPLE_NET_ZONE, "provider.net.": PROVIDER_NET_ZONE,
                      "glueless.com.": GLUELESS_COM_ZONE}),
}


def write_hints(path: Path) -> Path:
    path.write_text(f".  3600000  NS  a.root-servers.test.\na.root-servers.test.  3600000  A  {ROOT}\n")
    return path


# (name, type) -> what every resolver must answer: rcode and the sorted answer (name type data).
EXPECTED = {
    ("api.example.com.", "A"): ("NOERROR", ["api-lb-123.example.com. A 127.0.80.1",
                                            "api.example.com. CNAME api-lb-123.example.com."]),
    ("www.example.com.", "A"): ("NOERROR", ["example.com. A 127.0.80.1", "www.example.com. CNAME example.com."]),
    ("example.com.", "MX"): ("NOERROR", ["example.com. MX 10 mail1.example.com.",
                                         "example.com. MX 20 mail2.example.com."]),
    ("example.com.", "TXT"): ("NOERROR", ['example.com. TXT "v=spf1 include:_spf.google.com ~all"']),
    ("lb.example.com.", "A"): ("NOERROR", ["lb.example.com. CNAME lb.example.net.", "lb.example.net. A 127.0.80.2"]),
    ("chain.example.com.", "A"): ("NOERROR", ["chain.example.com. CNAME lb.glueless.com.",
                                              "lb.glueless.com. A 127.0.80.4"]),
    ("www.glueless.com.", "A"): ("NOERROR", ["www.glueless.com. A 127.0.80.3"]),
    ("nothere.example.com.", "A"): ("NXDOMAIN", []),
    ("api-lb-123.example.com.", "AAAA"): ("NOERROR", []),
    ("foo.wild.example.com.", "A"): ("NOERROR", ["foo.wild.example.com. A 127.0.80.99"]),
    ("www.old.example.com.", "A"): ("NOERROR", ["old.example.com. DNAME example.net.",
                                                "www.example.net. A 127.0.80.22",
                                                "www.old.example.com. CNAME www.example.net."]),
    ("nope.example.net.", "A"): ("NXDOMAIN", []),
}


def summary(rcode: str, rrsets) -> tuple[str, list[str]]:
    """(rcode, sorted 'name TYPE data' lines, TTLs left out) for comparing resolvers."""
    import dns.rdatatype

    lines = sorted(f"{r.name.to_text().lower()} {dns.rdatatype.to_text(r.rdtype)} {rd.to_text()}"
                   for r in rrsets for rd in r)
    return rcode, lines


def start_nsd_hierarchy(base: Path, port: int, servers: dict | None = None) -> dict:
    """Start NSD for each server of SERVERS (or `servers`); returns name -> process."""
    from tests.support.nsd import start_nsd, stop_nsd

    procs = {}
    try:
        for name, (ip, zones) in (servers or SERVERS).items():
            procs[name] = start_nsd(base / name, ip, port, zones)
    except BaseException:
        for proc in procs.values():
            stop_nsd(proc)
        raise
    return procs


def stop_all(procs: dict) -> None:
    from tests.support.nsd import stop_nsd

    for proc in procs.values():
        if proc.poll() is None:
            stop_nsd(proc)


class EdgewayHierarchy:
    """SERVERS served by `edgeway serve` processes (one per server, as on separate machines)."""

    def __init__(self, folder: Path, port: int, servers: dict | None = None) -> None:
        self.folder, self.port = folder, port
        self.servers = servers or SERVERS     # (another set: the signed hierarchy's)
        self.procs: dict = {}

    def __enter__(self) -> "EdgewayHierarchy":
        from tests.support.tools import EdgewayProcess, wait_for_port

        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            for name, (ip, zones) in self.servers.items():
                lines = ["dns:", f'  listen: ["{ip}:{self.port}"]', "  zones:"]
                for i, (origin, text) in enumerate(zones.items()):
                    zone_file = self.folder / f"{name}-{i}.zone"
                    zone_file.write_text(text)
                    lines += [f"    - file: {zone_file.name}", f'      origin: "{origin}"']
                config = self.folder / f"{name}.yaml"
                config.write_text("\n".join(lines) + "\n")
                self.procs[name] = EdgewayProcess(config).__enter__()
            for name, (ip, _) in self.servers.items():
                wait_for_port(ip, self.port, proc=self.procs[name].proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs.values():
            proc.stop()
