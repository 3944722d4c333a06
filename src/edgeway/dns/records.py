"""Records that follow health (issue 17): A/AAAA answers computed per query from the same
health view the balancers use (Route 53's routing policies, gdnsd's plugins).

Sans-IO: a record, the live Upstream objects and `now` in, a `Decision` out. Nothing is
precomputed from health: a check's verdict shows in the very next answer.

    RecordSet(records, upstreams, listeners)    built from config at start and on each reload
        .find(name) -> [PolicyRecord]           every type at that name
    PolicyRecord.decide(client, ecs, now, rng) -> Decision
    PolicyRecord.explain(now) -> dict           the API's view: targets, health, answer, why

The health of one address (docs/dns.md, "Records that follow health"):
- an `upstream` target: the upstream's servers with that IP; healthy while one of them is
  "up" (upstream.server_state): its active check, passive ejections, an operator's drain or
  maint, a reload's "checking" all count, exactly as for the balancer. One check stream feeds
  both: the record reads the Server objects the checker writes.
- an `addresses` target with a health_check: the synthesized upstream
  `dns-record:<name>/<type>/<index>` (edgeway.config.model), whose servers are checked like
  any upstream's; without a health_check an address counts as healthy (Envoy: no check, up).
- a `listener` target: healthy while one server of one of its upstreams is "up".

Policies (per query): simple = every healthy address; weighted = one target among those with
a healthy address, at random by weight; failover = the first target in order with a healthy
address; multivalue = at most 8 healthy addresses, a random sample; ip = the target whose
`clients` holds the ECS address (RFC 7871) or else the client's, longest prefix first, the
target without `clients` by default; when that target has no healthy address, the default
target answers (Route 53's IP-based routing falls back the same way).

When no address the policy may answer with is healthy, `when_all_down` decides: `all` every
address of every target (Route 53, gdnsd: better a chance than nothing; multivalue keeps its
8), `servfail`, or `nodata`.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Iterator

import dns.name
import dns.rdataclass
import dns.rdatatype

from edgeway.config.model import RecordConfig, RecordTargetConfig
from edgeway.upstream.upstream import server_state

MULTIVALUE_MAX = 8


@dataclass(slots=True)
class Decision:
    """The answer to one query, and why."""

    addresses: list[str]
    target: str | None          # the one target that answered (failover, weighted, ip), else None
    rule: str                   # why, in words ("failover: upstream:east is the first with a healthy address")
    mode: str                   # "normal" | "all_down"
    scope: int | None = None    # ECS scope prefix length to echo; None when the query had no ECS
    targets: list[str] = field(default_factory=list)   # every target whose addresses are answered


# ---------------------------------------------------------------------- targets


class Target:
    """One target of a record: its addresses and, per address, whether it is healthy."""

    kind = ""

    def __init__(self, config: RecordTargetConfig, version: int) -> None:
        self.config = config
        self.weight = config.weight
        self.version = version
        self.clients = [ipaddress.ip_network(n) for n in config.clients] if config.clients else None
        self.label = ""

    def healthy(self, now: float) -> list[str]:
        """The healthy addresses now, in order (the hot path)."""
        raise NotImplementedError

    def addresses(self) -> list[str]:
        """Every address, healthy or not."""
        raise NotImplementedError

    def detail(self, now: float) -> list[dict]:
        """[{address, healthy, why}] for the API."""
        raise NotImplementedError


def _up_count(servers, now: float) -> tuple[int, list[str]]:
    up, notes = 0, []
    for s in servers:
        state = server_state(s, now)
        if state == "up":
            up += 1
        else:
            why = s.why_unavailable(now) or state
            notes.append(f"{s.label} {why}")
    return up, notes


class _ServerTarget(Target):
    """Addresses backed by an upstream's servers (an `upstream` target, or `addresses` with
    a health_check through its synthesized upstream). The IP -> servers map is rebuilt when
    a reload replaced the upstream's server list (Upstream.reconfigure)."""

    def __init__(self, config: RecordTargetConfig, version: int, upstream, order: list[str] | None = None):
        super().__init__(config, version)
        self.upstream = upstream
        self._order = order        # addresses targets: the config's order and set
        self._servers = None
        self._ips: list[tuple[str, list]] = []

    def _map(self) -> list[tuple[str, list]]:
        servers = self.upstream.servers
        if servers is not self._servers:
            by_ip: dict[str, list] = {}
            for s in servers:
                try:
                    ip = ipaddress.ip_address(s.address.host)
                except ValueError:
                    continue       # (refused by the config's validation; a name is never answered)
                if ip.version == self.version:
                    by_ip.setdefault(str(ip), []).append(s)
            if self._order is not None:
                by_ip = {ip: by_ip.get(ip, []) for ip in self._order}
            self._ips = list(by_ip.items())
            self._servers = servers
        return self._ips

    def healthy(self, now: float) -> list[str]:
        if self.upstream.servers is not self._servers:
            self._map()
        out = []
        for ip, servers in self._ips:
            for s in servers:
                # server_state(s, now) == "up", inlined: this runs for every query
                if s.state == "ready" and not s.pending and s.healthy and now >= s.ejected_until:
                    out.append(ip)
                    break
            else:
                if not servers:     # an address whose check is not (or no longer) known: healthy
                    out.append(ip)
        return out

    def addresses(self) -> list[str]:
        return [ip for ip, _ in self._map()]

    def detail(self, now: float) -> list[dict]:
        out = []
        name = self.upstream.name
        for ip, servers in self._map():
            if not servers:
                out.append({"address": ip, "healthy": True, "why": "no check for this address"})
                continue
            up, notes = _up_count(servers, now)
            if up:
                labels = ", ".join(s.label for s in servers if server_state(s, now) == "up")
                why = f"upstream {name}: {labels} up"
            else:
                why = f"upstream {name}: " + "; ".join(notes)
            out.append({"address": ip, "healthy": bool(up), "why": why})
        return out


class UpstreamTarget(_ServerTarget):
    kind = "upstream"

    def __init__(self, config: RecordTargetConfig, version: int, upstream):
        super().__init__(config, version, upstream)
        self.label = f"upstream:{config.upstream}"


class AddressesTarget(Target):
    """Fixed addresses; checked through the synthesized upstream when there is one."""

    kind = "addresses"

    def __init__(self, config: RecordTargetConfig, version: int, upstream=None):
        super().__init__(config, version)
        self.list = list(dict.fromkeys(config.addresses or ()))
        self.label = "addresses:" + ",".join(self.list[:3]) + (f",+{len(self.list) - 3}" if len(self.list) > 3 else "")
        self.checked = _ServerTarget(config, version, upstream, self.list) if upstream is not None else None

    def healthy(self, now: float) -> list[str]:
        return self.list if self.checked is None else self.checked.healthy(now)

    def addresses(self) -> list[str]:
        return self.list

    def detail(self, now: float) -> list[dict]:
        if self.checked is None:
            return [{"address": ip, "healthy": True, "why": "no health_check: counts as healthy"} for ip in self.list]
        return self.checked.detail(now)


class ListenerTarget(Target):
    """This node's listener: its address, healthy while one of its upstreams has a server up."""

    kind = "listener"

    def __init__(self, config: RecordTargetConfig, version: int, listener, upstreams: dict):
        super().__init__(config, version)
        self.label = f"listener:{config.listener}"
        self.name = config.listener
        host = config.address or (listener.listen.host if listener is not None else "")
        self.address = host
        names = []
        if listener is not None:
            names = [listener.upstream] if listener.upstream else [r.upstream for r in listener.routes if r.upstream]
        self.upstreams = [upstreams[n] for n in dict.fromkeys(names) if n in upstreams]

    def _up(self, now: float) -> bool:
        if not self.upstreams:
            return True       # (a redirect-only listener: nothing behind it can fail)
        for upstream in self.upstreams:
            for s in upstream.servers:
                if s.state == "ready" and not s.pending and s.healthy and now >= s.ejected_until:
                    return True
        return False

    def healthy(self, now: float) -> list[str]:
        return [self.address] if self._up(now) else []

    def addresses(self) -> list[str]:
        return [self.address]

    def detail(self, now: float) -> list[dict]:
        parts = []
        for upstream in self.upstreams:
            up, _ = _up_count(upstream.servers, now)
            parts.append(f"upstream {upstream.name}: {up}/{len(upstream.servers)} servers up")
        healthy = self._up(now)
        why = f"listener {self.name}: " + ("; ".join(parts) if parts else "no upstream behind it: counts as healthy")
        return [{"address": self.address, "healthy": healthy, "why": why}]


def _dedupe(addresses) -> list[str]:
    return list(dict.fromkeys(addresses))


# ---------------------------------------------------------------------- ip policy


class _Prefixes:
    """Longest-prefix match of an address over the targets' `clients` (a short list: scanned)."""

    def __init__(self, targets: list[Target]) -> None:
        entries = []
        for index, target in enumerate(targets):
            for network in target.clients or ():
                entries.append((network.prefixlen, network.version, int(network.network_address), network, index))
        entries.sort(key=lambda e: -e[0])
        self.entries = entries

    def match(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int | None, int]:
        """(target index or None, ECS scope): the scope is the fewest leading bits of `address`
        that every address sharing them would get the same target with: the matched prefix,
        or longer where a more specific network that does not hold `address` starts to differ
        (RFC 7871 7.2.1: a resolver caches the answer for that prefix)."""
        version, value = address.version, int(address)
        width = 32 if version == 4 else 128
        found, scope = None, 0
        for prefixlen, v, network, _, index in self.entries:
            if v != version:
                continue
            if found is None and (value ^ network) >> (width - prefixlen) == 0:
                found, scope = index, max(scope, prefixlen)
                continue
            if found is not None and prefixlen <= scope:
                continue
            # not ours: the first bit where the address leaves this network is enough to tell
            differ = (value ^ network) >> (width - prefixlen)
            if differ:
                common = prefixlen - differ.bit_length()
                scope = max(scope, common + 1)
        return found, scope


def _address(text: str):
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# ---------------------------------------------------------------------- records


class PolicyRecord:
    """One name and type with its policy; counts what it answered (edgeway.dns.metrics)."""

    def __init__(self, config: RecordConfig, upstreams: dict, listeners: list) -> None:
        self.config = config
        self.name = config.name
        self.dns_name = dns.name.from_text(config.name)
        self.rdtype = config.type
        self.ttl = int(config.ttl)
        self.policy = config.policy
        self.when_all_down = config.when_all_down
        version = 4 if config.type == "A" else 6
        by_name = {listener.name: listener for listener in listeners}
        self.targets: list[Target] = []
        for j, target in enumerate(config.targets):
            if target.upstream is not None:
                upstream = upstreams.get(target.upstream)
                if upstream is None:
                    raise KeyError(f"dns.records: {config.name} {config.type}: no upstream {target.upstream!r}")
                self.targets.append(UpstreamTarget(target, version, upstream))
            elif target.addresses is not None:
                checked = upstreams.get(config.upstream_name(j)) if target.health_check is not None else None
                self.targets.append(AddressesTarget(target, version, checked))
            else:
                self.targets.append(ListenerTarget(target, version, by_name.get(target.listener), upstreams))
        labels: dict[str, int] = {}
        for target in self.targets:       # (the same upstream twice: labels stay distinct)
            n = labels.get(target.label, 0)
            labels[target.label] = n + 1
            if n:
                target.label = f"{target.label}#{n + 1}"
        for target in self.targets:
            target.used = [target.label]
            target.rule = f"failover: {target.label} is the first target with a healthy address"
        self._rules: dict = {}
        self._prefixes = _Prefixes(self.targets) if self.policy == "ip" else None
        self._default = next((i for i, t in enumerate(self.targets) if t.clients is None), None)
        self._clients: dict = {}
        self.answers: dict[str, int] = {t.label: 0 for t in self.targets}
        self.all_down: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"PolicyRecord({self.name} {self.rdtype} {self.policy}, {len(self.targets)} targets)"

    # ------------------------------------------------------------------ deciding

    def decide(self, client: str | None, ecs: tuple[str, int] | None, now: float, rng=random) -> Decision:
        """The addresses to answer `client` with now (`ecs`: the query's client subnet, as
        (address, source prefix length)). Counts nothing (see `count`)."""
        policy = self.policy
        targets = self.targets
        # (rule strings are made once and kept: this runs for every question)
        if policy == "failover":
            for target in targets:
                healthy = target.healthy(now)
                if healthy:
                    return Decision(healthy, target.label, target.rule, "normal", None, target.used)
            return self._all_down(rng, "failover: no target has a healthy address")
        if policy == "simple":
            answer, used = [], []
            for target in targets:
                healthy = target.healthy(now)
                if healthy:
                    answer += healthy
                    used.append(target.label)
            if answer:
                return Decision(_dedupe(answer) if len(used) > 1 else answer, None, "simple: every healthy address",
                                "normal", None, used)
            return self._all_down(rng, "simple: no healthy address")
        if policy == "weighted":
            candidates = []
            total = 0
            for t in targets:
                healthy = t.healthy(now)
                if healthy:
                    candidates.append((t, healthy))
                    total += t.weight
            if not candidates:
                return self._all_down(rng, "weighted: no target has a healthy address")
            point = rng.random() * total      # (random.choices, without its list building)
            for target, healthy in candidates:
                point -= target.weight
                if point < 0:
                    break
            rule = self._rules.get((target.label, total))
            if rule is None:
                rule = self._rules[(target.label, total)] = (
                    f"weighted: {target.label} drawn with weight {target.weight}/{total} among the targets "
                    "with a healthy address")
            return Decision(healthy, target.label, rule, "normal", None, target.used)
        if policy == "multivalue":
            pool, parts = [], []
            for target in targets:
                healthy = target.healthy(now)
                if healthy:
                    pool += healthy
                    parts.append((target, healthy))
            if len(parts) > 1 and len(set(pool)) != len(pool):
                pool = _dedupe(pool)     # (an address in two targets: once)
            n = len(pool)
            if not n:
                return self._all_down(rng, "multivalue: no healthy address")
            if n > MULTIVALUE_MAX:
                # a partial Fisher-Yates shuffle of a copy: its first 8 are a uniform random
                # sample (random.sample's result, at a fraction of its cost)
                pool = pool[:]
                rnd = rng.random
                for i in range(MULTIVALUE_MAX):
                    j = i + int(rnd() * (n - i))
                    pool[i], pool[j] = pool[j], pool[i]
                del pool[MULTIVALUE_MAX:]
            rule = self._rules.get(n)
            if rule is None:
                rule = self._rules[n] = (
                    f"multivalue: {len(pool)} of {n} healthy addresses (at most {MULTIVALUE_MAX}, at random)")
            if len(parts) == 1:
                used = parts[0][0].used
            elif n <= MULTIVALUE_MAX:
                used = [t.label for t, _ in parts]
            else:
                owner = {}
                for target, healthy in reversed(parts):    # (the first target owns a shared address)
                    for ip in healthy:
                        owner[ip] = target.label
                used = list(dict.fromkeys(owner[ip] for ip in pool))
            return Decision(pool, None, rule, "normal", None, used)
        return self._decide_ip(client, ecs, now, rng)

    def _decide_ip(self, client, ecs, now, rng) -> Decision:
        if ecs is not None and ecs[1] > 0:
            address, source = _address(ecs[0]), f"client subnet {ecs[0]}/{ecs[1]}"
            index, scope = self._prefixes.match(address) if address is not None else (None, 0)
        else:
            source = f"client {client}"
            # the match of a client address depends on nothing else: kept (bounded)
            matched = self._clients.get(client)
            if matched is None:
                address = _address(client) if client else None
                matched = self._prefixes.match(address) if address is not None else (None, 0)
                if len(self._clients) >= 10_000:
                    self._clients.clear()
                self._clients[client] = (matched, address)
            else:
                matched, address = matched
            index, scope = matched
        # (source prefix 0: the resolver asks for no tailoring, the answer is its own: scope 0)
        scope_out = None if ecs is None else scope if ecs[1] > 0 else 0
        if index is not None:
            target = self.targets[index]
            healthy = target.healthy(now)
            network = next(str(n) for n in target.clients if address in n)
            if healthy:
                return Decision(healthy, target.label, f"ip: {source} is in {network} ({target.label})", "normal",
                                scope_out, [target.label])
            why = f"ip: {source} is in {network} ({target.label}), which has no healthy address"
        else:
            why = f"ip: {source} matches no target's clients"
        default = self.targets[self._default] if self._default is not None else None
        if default is not None and self._default != index:
            healthy = default.healthy(now)
            if healthy:
                return Decision(healthy, default.label, f"{why}: the default target {default.label}", "normal",
                                scope_out, [default.label])
            why += f"; the default target {default.label} has none either"
        elif default is None:
            why += "; no default target (one without clients:)"
        decision = self._all_down(rng, why)
        decision.scope = scope_out
        return decision

    def _all_down(self, rng, why: str) -> Decision:
        mode = self.when_all_down
        if mode != "all":
            return Decision([], None, f"{why}: when_all_down {mode}", "all_down")
        answer = _dedupe(ip for t in self.targets for ip in t.addresses())
        if self.policy == "multivalue" and len(answer) > MULTIVALUE_MAX:
            answer = rng.sample(answer, MULTIVALUE_MAX)
        return Decision(answer, None, f"{why}: when_all_down all: every address", "all_down", None,
                        [t.label for t in self.targets])

    def count(self, decision: Decision) -> None:
        """Count an answer that was sent (the metrics: per target, and all-down per mode)."""
        if decision.mode == "all_down":
            self.all_down[self.when_all_down] = self.all_down.get(self.when_all_down, 0) + 1
            return
        answers = self.answers      # (every target's label is a key from the start)
        for label in decision.targets:
            answers[label] += 1

    # ------------------------------------------------------------------ the API's view

    def explain(self, now: float) -> dict:
        """What the record answers now and why, for GET /api/v1/dns/records and `ctl records`.
        For weighted, multivalue and ip the answer varies per query: `answer` lists the
        candidates (weighted: the healthy addresses of every target that may be drawn; ip:
        what a client matching no target's clients gets)."""
        targets = []
        for target in self.targets:
            detail = target.detail(now)
            targets.append({"label": target.label, "kind": target.kind, "weight": target.weight,
                            "clients": [str(n) for n in target.clients] if target.clients else None,
                            "healthy": any(d["healthy"] for d in detail), "addresses": detail})
        decision = self.decide(None, None, now, random.Random(0))
        answer = decision.addresses
        if decision.mode == "normal" and self.policy in ("weighted", "multivalue"):
            answer = _dedupe(ip for t in self.targets for ip in t.healthy(now))
        rule = decision.rule
        if self.policy == "weighted" and decision.mode == "normal":
            up = [t for t in self.targets if t.healthy(now)]
            total = sum(t.weight for t in up)
            rule = "weighted: one of " + ", ".join(f"{t.label} ({t.weight}/{total})" for t in up) + " per query"
        elif self.policy == "multivalue" and decision.mode == "normal":
            rule = f"multivalue: up to {MULTIVALUE_MAX} of these {len(answer)} healthy addresses per query"
        elif self.policy == "ip" and decision.mode == "normal":
            rule = "ip: by client address or subnet; a client matching no clients: gets " + \
                   (f"{decision.target}" if decision.target else "nothing")
        return {"name": self.name, "type": self.rdtype, "ttl": self.ttl, "policy": self.policy,
                "when_all_down": self.when_all_down, "targets": targets, "answer": answer,
                "mode": decision.mode, "rule": rule}


class RecordSet:
    """Every policy record of one DNS service, by name."""

    def __init__(self, records: list[RecordConfig], upstreams: dict, listeners: list) -> None:
        self.records = [PolicyRecord(config, upstreams, listeners) for config in records]
        self._by_name: dict[dns.name.Name, list[PolicyRecord]] = {}
        for record in self.records:
            self._by_name.setdefault(record.dns_name, []).append(record)

    def adopt_counts(self, old: "RecordSet | None") -> None:
        """Carry the counters of `old` (the set a reload replaces) over, record by name and
        type, target by label: the metrics run on across reloads, as the DNS counters do."""
        if old is None:
            return
        before = {(r.name, r.rdtype): r for r in old}
        for record in self.records:
            previous = before.get((record.name, record.rdtype))
            if previous is None:
                continue
            for label, n in previous.answers.items():
                record.answers[label] = record.answers.get(label, 0) + n
            for mode, n in previous.all_down.items():
                record.all_down[mode] = record.all_down.get(mode, 0) + n

    def find(self, name: dns.name.Name) -> list[PolicyRecord]:
        """Every record at `name` (case-insensitive, as DNS names compare); [] when none."""
        return self._by_name.get(name, [])

    def names(self) -> list[dns.name.Name]:
        return list(self._by_name)

    def __iter__(self) -> Iterator[PolicyRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __bool__(self) -> bool:
        return bool(self.records)


# ---------------------------------------------------------------------- checks against the zones


def zone_errors(config, zones) -> list[str]:
    """What the records of a DnsConfig get wrong against the loaded zones: a name outside
    every served zone, or below a delegation in it, or a name and type the zone file also
    holds (or a CNAME there, RFC 1034 3.6.2: a CNAME owner has no other data). Each message
    names the config's file, line and key (DnsConfig.where), and the zone file's line."""
    errors = []
    for i, record in enumerate(config.records):
        where = config.where(("dns", "records", i, "name"))
        name = dns.name.from_text(record.name)
        zone = zones.find(name)
        if zone is None:
            served = ", ".join(sorted(z.origin.to_text() for z in zones)) or "none"
            errors.append(f"{where}: {record.name} is inside no served zone (dns.zones: {served})")
            continue
        cut = next((c for c in zone.cuts if name.is_subdomain(c)), None)
        if cut is not None:
            errors.append(f"{where}: {record.name} is below the delegation {cut} in {zone.path}: "
                          "another server answers for it")
            continue
        node = zone.nodes.get(name)
        if node is None:
            continue
        for rdtype in (record.type, "CNAME"):
            if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)) is not None:
                line = _zone_line(zone, name, rdtype)
                at = f"{zone.path}:{line}" if line else f"{zone.path}"
                errors.append(f"{where}: {record.name} {rdtype} is also in the zone file ({at}): "
                              f"remove one of the two (a name and type is answered by one of them)")
    return errors


def _zone_line(zone, name: dns.name.Name, rdtype: str) -> int | None:
    """The line of the zone file that holds `name`'s `rdtype` records (a plain reading of the
    master file: owner in the first column, blank owner = the previous one, $ORIGIN followed;
    None when not found, e.g. in an $INCLUDEd file)."""
    try:
        lines = zone.path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, AttributeError):
        return None
    origin, owner = zone.origin, None
    for number, raw in enumerate(lines, 1):
        text = raw.split(";", 1)[0]
        fields = text.split()
        if not fields:
            continue
        if fields[0].upper() == "$ORIGIN" and len(fields) > 1:
            origin = dns.name.from_text(fields[1], zone.origin)
            continue
        if fields[0].startswith("$"):
            continue
        if not text[0].isspace():
            try:
                owner = origin if fields[0] == "@" else dns.name.from_text(fields[0], origin)
            except Exception:
                owner = None
            fields = fields[1:]
        if owner == name and rdtype in (f.upper() for f in fields[:4]):
            return number
    return None
