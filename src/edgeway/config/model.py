"""The config model. It mirrors the domain:

    dns        -> listen, zones, recursion, hosts_file
    upstreams  -> name -> balance, servers, health_check, passive, sticky
    listeners  -> protocol, listen, routes -> upstream   (or upstream directly for tcp/udp)

Every object is frozen and validated once; the runtime is built from it, so a reload is
"build new, swap, drain old". Unknown keys are errors (a typo must not be silently ignored).
Relative paths are resolved against the config file's folder at validation time.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

import dns.name
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgeway.http import variables
from edgeway.config.types import Address, ByteSize, DnsServerAddress, Duration, HostPort, Network

KeyPath = tuple[str | int, ...]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


ExistingFile = Annotated[ConfigPath, AfterValidator(_existing_file)]


# --------------------------------------------------------------------------- dns


def _dns_name(value: str, what: str) -> str:
    try:
        return dns.name.from_text(value).to_text()
    except Exception as exc:  # dnspython raises several name errors
        raise ValueError(f"invalid {what} {value!r}: {exc}") from None


TsigAlgorithm = Literal["hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"]


class TsigKeyConfig(Model):
    """A TSIG key (RFC 8945): the secret lives in its own file (base64 alone, or the
    `key "name" { algorithm ..; secret ".."; };` block tsig-keygen prints)."""

    name: str
    algorithm: TsigAlgorithm = "hmac-sha256"
    secret_file: ExistingFile

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_name(value, "key name")

    @field_validator("secret_file")
    @classmethod
    def _secret(cls, value: Path) -> Path:
        from edgeway.dns.tsig import TsigKeyError, read_key_file

        try:
            read_key_file(value)
        except TsigKeyError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _block_agrees(self) -> "TsigKeyConfig":
        # A key block names its own algorithm: a different one here would sign with the wrong
        # hash and every peer would answer BADSIG; say so now.
        from edgeway.dns.tsig import read_key_file

        block = read_key_file(self.secret_file)
        if block.algorithm is not None and block.algorithm != self.algorithm:
            raise ValueError(f"{self.secret_file} says algorithm {block.algorithm}, the config says "
                             f"{self.algorithm}: make them agree")
        return self


class TransferAclEntry(Model):
    """Who may transfer a zone: an address or network, and the TSIG key it must sign with
    (none: the request must be unsigned, as NSD's NOKEY)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    from_: Network = Field(alias="from")
    key: str | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else _dns_name(value, "key name")


class ZoneConfig(Model):
    file: ExistingFile
    origin: str | None = None
    allow_transfer: list[TransferAclEntry] = Field(default_factory=list)   # default: nobody
    notify: list[DnsServerAddress] = Field(default_factory=list)           # told on every new serial
    max_journal: int = Field(100, ge=0)   # versions of history kept for IXFR; 0: AXFR only

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _dns_name(value, "zone origin")


class SecondaryZoneConfig(Model):
    """A zone this server transfers from its primaries (edgeway.dns.secondary)."""

    origin: str
    primaries: list[DnsServerAddress] = Field(min_length=1)
    key: str | None = None                 # TSIG key for SOA queries, transfers and NOTIFY
    file: ConfigPath                       # kept on disk: a restart serves it at once
    allow_notify: list[Network] | None = None          # default: the primaries' addresses
    allow_transfer: list[TransferAclEntry] = Field(default_factory=list)

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        return _dns_name(value, "zone origin")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else _dns_name(value, "key name")


class CacheConfig(Model):
    max_entries: int = Field(100_000, ge=1)
    min_ttl: Duration = 0
    max_ttl: Duration = 86400
    negative_max_ttl: Duration = 3600


class ServeStaleConfig(Model):
    enabled: bool = False
    stale_ttl: Duration = 30          # TTL on a stale answer (RFC 8767 suggests 30 s)
    max_stale: Duration = 86400       # how long past expiry a record may still be served


class RecursionConfig(Model):
    enabled: bool = False
    root_hints: ExistingFile | None = None   # None: the real root servers (built in)
    allow: list[Network] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    forward: list[DnsServerAddress] = Field(default_factory=list)
    query_port: int = Field(53, ge=1, le=65535)
    timeout: Duration = 1.5               # per upstream query
    resolution_timeout: Duration = 10     # whole client query
    max_depth: int = Field(30, ge=1)      # referrals followed for one name
    max_upstream_queries: int = Field(64, ge=1)
    max_outstanding: int = Field(1000, ge=1)
    cache: CacheConfig = CacheConfig()
    serve_stale: ServeStaleConfig = ServeStaleConfig()
    # RFC 9156 relaxed mode, on as in Unbound and Knot Resolver: each server is asked for one
    # label below its zone, the full name again when it answers that wrongly (NXDOMAIN, REFUSED, error).
    qname_minimisation: bool = True
    harden_glue: bool = True              # False: use a referral's out-of-bailiwick glue (Unbound harden-glue: no)
    do_not_query_localhost: bool | None = None   # None: true with the built-in root hints, false with custom ones
    prefetch: bool = False                # refresh an answer asked for in the last 10% of its TTL


class DnsTcpConfig(Model):
    idle_timeout: Duration = 10
    max_connections: int = Field(1024, ge=1)
    max_pipelined: int = Field(64, ge=1)


# --------------------------------------------------------------------------- upstreams

Balance = Literal["round_robin", "least_conn", "ip_hash", "hash", "random_two"]
_HASH_KEY = re.compile(r"^(\$[a-z_][a-z0-9_-]*|[^$]+)+$", re.IGNORECASE)
_STATUS_RANGE = re.compile(r"^\s*\d{3}(\s*-\s*\d{3})?(\s*,\s*\d{3}(\s*-\s*\d{3})?)*\s*$")


class ServerConfig(Model):
    address: HostPort
    weight: int = Field(1, ge=1, le=1000)
    backup: bool = False
    max_conns: int | None = Field(None, ge=1)


class HealthCheckConfig(Model):
    type: Literal["http", "tcp", "dns"] = "http"
    path: str = "/health"
    host: str | None = None
    interval: Duration = 10
    timeout: Duration = 2
    rise: int = Field(2, ge=1)
    fall: int = Field(3, ge=1)
    expect: str = "200-399"
    send: str | None = None             # tcp: bytes to send after connect
    expect_bytes: str | None = None     # tcp: reply must start with these
    query: str = "health.example.com A" # dns: the question asked

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: str) -> str:
        if not _STATUS_RANGE.match(value):
            raise ValueError(f"invalid status list {value!r}: expected e.g. 200-399 or 200,204")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"health check path must start with '/': {value!r}")
        return value

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> "HealthCheckConfig":
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("interval and timeout must be greater than zero")
        return self


class PassiveConfig(Model):
    max_fails: int = Field(1, ge=0)     # 0 disables passive checks (nginx)
    fail_timeout: Duration = 10


class StickyConfig(Model):
    cookie: str = Field(min_length=1, pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
    max_age: Duration | None = None
    secure: bool = False


class UpstreamConfig(Model):
    balance: Balance = "round_robin"
    hash_key: str | None = None
    servers: list[ServerConfig] = Field(min_length=1)
    health_check: HealthCheckConfig | None = None
    passive: PassiveConfig = PassiveConfig()
    sticky: StickyConfig | None = None

    @model_validator(mode="after")
    def _hash_key(self) -> "UpstreamConfig":
        if self.balance == "hash" and not self.hash_key:
            raise ValueError("balance: hash needs hash_key, e.g. \"$cookie_user\" or \"$remote_addr\"")
        if self.hash_key is not None and not _HASH_KEY.match(self.hash_key):
            raise ValueError(f"invalid hash_key {self.hash_key!r}")
        return self


# --------------------------------------------------------------------------- dns records
# Health-aware A/AAAA records (issue 17, docs/dns.md "Records that follow health"). The
# answer is computed per query by edgeway.dns.records from the same health view the
# balancers use; here only their shape and what a single record can check on its own.

RecordPolicy = Literal["simple", "weighted", "failover", "multivalue", "ip"]
WhenAllDown = Literal["all", "servfail", "nodata"]
RECORD_UPSTREAM_PREFIX = "dns-record:"


def _ip_literal(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an IP address such as 192.0.2.10 or 2001:db8::10")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"invalid IP address {value!r}: DNS answers hold addresses, not names") from None


IpLiteral = Annotated[str, BeforeValidator(_ip_literal)]


class RecordHealthCheck(HealthCheckConfig):
    """The health_check of an `addresses` target: an upstream's keys plus the port checked."""

    port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _port(self) -> "RecordHealthCheck":
        if self.port is None and self.type in ("http", "tcp"):
            raise ValueError(f"a {self.type} health_check of addresses needs port: (the port it connects to)")
        return self

    def upstream_check(self) -> HealthCheckConfig:
        return HealthCheckConfig(**self.model_dump(exclude={"port"}))


class RecordTargetConfig(Model):
    upstream: str | None = None
    addresses: list[IpLiteral] | None = Field(None, min_length=1)
    listener: str | None = None
    address: IpLiteral | None = None        # listener targets: the address to answer with
    weight: int = Field(1, ge=1, le=1000)
    clients: list[Network] | None = Field(None, min_length=1)
    health_check: RecordHealthCheck | None = None

    @model_validator(mode="after")
    def _shape(self) -> "RecordTargetConfig":
        kinds = [k for k in ("upstream", "addresses", "listener") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a target is exactly one of upstream: NAME, addresses: [IP, ...] or listener: NAME"
                             + (f" (this one has {' and '.join(kinds)})" if kinds else ""))
        if self.health_check is not None and self.addresses is None:
            raise ValueError("health_check: is only for addresses targets (an upstream target uses its "
                             "upstream's checks, a listener target its routes' upstreams)")
        if self.address is not None and self.listener is None:
            raise ValueError("address: is only for listener targets")
        return self

    @property
    def kind(self) -> str:
        return "upstream" if self.upstream is not None else "addresses" if self.addresses is not None else "listener"


class RecordConfig(Model):
    name: str
    type: Literal["A", "AAAA"]
    ttl: Duration = 60
    policy: RecordPolicy = "simple"
    when_all_down: WhenAllDown = "all"
    targets: list[RecordTargetConfig] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            name = dns.name.from_text(value)
        except Exception as exc:  # dnspython raises several name errors
            raise ValueError(f"invalid name {value!r}: {exc}") from None
        if name.labels and name.labels[0] == b"*":
            raise ValueError(f"{value!r}: a record's name cannot be a wildcard")
        return name.to_text().lower()

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if value != int(value) or not 0 <= value <= 2**31 - 1:
            raise ValueError(f"ttl must be whole seconds from 0 to 2147483647 (RFC 2181); got {value:g}")
        return value

    def upstream_name(self, index: int) -> str:
        """The synthesized upstream that carries the health_check of target `index`."""
        return f"{RECORD_UPSTREAM_PREFIX}{self.name}/{self.type}/{index}"

    def problems(self) -> list[tuple[KeyPath, str]]:
        """What one record can get wrong on its own (key paths relative to the record)."""
        out: list[tuple[KeyPath, str]] = []
        version = 4 if self.type == "A" else 6
        for j, target in enumerate(self.targets):
            if target.clients is not None and self.policy != "ip":
                out.append((("targets", j, "clients"),
                            f"clients: is only for policy: ip (this record's policy is {self.policy})"))
            for k, address in enumerate(target.addresses or ()):
                if ipaddress.ip_address(address).version != version:
                    out.append((("targets", j, "addresses", k),
                                f"{address} is not an IPv{version} address (type {self.type})"))
            if target.address is not None and ipaddress.ip_address(target.address).version != version:
                out.append((("targets", j, "address"),
                            f"{target.address} is not an IPv{version} address (type {self.type})"))
        if self.policy == "ip" and sum(1 for t in self.targets if t.clients is None) > 1:
            second = [j for j, t in enumerate(self.targets) if t.clients is None][1]
            out.append((("targets", second),
                        "policy ip: more than one target without clients: (the default target is one)"))
        return out


class DnsConfig(Model):
    listen: list[HostPort] = Field(min_length=1)
    zones: list[ZoneConfig] = Field(default_factory=list)
    records: list[RecordConfig] = Field(default_factory=list)
    recursion: RecursionConfig = RecursionConfig()
    hosts_file: ConfigPath | None = None
    udp_payload_size: int = Field(1232, ge=512, le=65535)
    query_log: bool = False
    tcp: DnsTcpConfig = DnsTcpConfig()
    tsig_keys: list[TsigKeyConfig] = Field(default_factory=list)
    secondary_zones: list[SecondaryZoneConfig] = Field(default_factory=list)
    # each zone's IXFR history (<origin>journal) and last served version (<origin>last); relative
    # to the config file
    journal_dir: ConfigPath = Field(Path(".edgeway-journal"), validate_default=True)
    # (file name, key path -> line), set by the loader: checks made after validation (a
    # record against the zone files, edgeway.dns.records) name the file, line and key too
    _source: tuple[str, dict] | None = PrivateAttr(None)

    def where(self, loc: KeyPath) -> str:
        """`file:line: dns.records.0.name` for a key path below the root (the loader's way)."""
        dotted = ".".join(map(str, loc))
        if self._source is None:
            return dotted
        from edgeway.config.loader import line_for

        filename, lines = self._source
        return f"{filename}:{line_for(loc, lines)}: {dotted}"

    def reference_errors(self) -> list[tuple[KeyPath, str]]:
        """TSIG key names that must exist and be unique, origins served twice."""
        errors: list[tuple[KeyPath, str]] = []
        keys: dict[str, int] = {}
        for i, key in enumerate(self.tsig_keys):
            if key.name in keys:
                errors.append((("dns", "tsig_keys", i, "name"), f"duplicate key name {key.name!r} "
                               f"(first at dns.tsig_keys.{keys[key.name]})"))
            keys.setdefault(key.name, i)
        known = ", ".join(sorted(keys)) or "none defined in dns.tsig_keys"

        def check(path: KeyPath, name: str | None) -> None:
            if name is not None and name not in keys:
                errors.append((path, f"unknown TSIG key {name!r} (known: {known})"))

        origins: dict[str, str] = {}
        for i, zone in enumerate(self.zones):
            for j, entry in enumerate(zone.allow_transfer):
                check(("dns", "zones", i, "allow_transfer", j, "key"), entry.key)
            if zone.origin is not None:
                origins[zone.origin] = f"dns.zones.{i}"
        for i, zone in enumerate(self.secondary_zones):
            check(("dns", "secondary_zones", i, "key"), zone.key)
            for j, entry in enumerate(zone.allow_transfer):
                check(("dns", "secondary_zones", i, "allow_transfer", j, "key"), entry.key)
            if zone.origin in origins:
                errors.append((("dns", "secondary_zones", i, "origin"),
                               f"zone {zone.origin} is also served by {origins[zone.origin]}"))
            origins[zone.origin] = f"dns.secondary_zones.{i}"
        return errors


# --------------------------------------------------------------------------- listeners


class RouteMatch(Model):
    path_prefix: str | None = None
    path: str | None = None              # exact path
    path_regex: str | None = None
    host: str | None = None              # exact, or "*.example.com"
    method: str | None = None
    header: dict[str, str] = Field(default_factory=dict)
    cookie: dict[str, str] = Field(default_factory=dict)

    @field_validator("path_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @field_validator("path_prefix", "path")
    @classmethod
    def _slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"paths start with '/': {value!r}")
        return value


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# fields whose value edgeway writes itself: framing and connection management
_OWN_FIELDS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
                         "trailer", "proxy-connection"})


def _field_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}")
    if name.lower() in _OWN_FIELDS:
        raise ValueError(f"{name} is written by edgeway itself (framing, connection); it cannot be set")
    return name


def _template(value: str, allowed: frozenset[str] = variables.BASE) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header value cannot hold CR or LF: {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"a header value is Latin-1 text (percent-encode the rest): {value!r}") from None
    variables.compile_template(value, allowed)
    return value


class RespondConfig(Model):
    """A route that answers by itself (nginx `return`): no upstream."""

    status: int | None = Field(None, ge=100, le=599)   # default: 302 with location, else 200
    body: str = ""                       # variables expanded; empty: nginx's own page for 3xx/4xx/5xx
    headers: dict[str, str] = Field(default_factory=dict)
    location: str | None = None          # the Location field (redirects; 3xx only)

    @field_validator("body")
    @classmethod
    def _body(cls, value: str) -> str:
        variables.compile_template(value)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            _field_name(name)
            try:
                _template(text)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("location is empty")
            _template(value)
        return value

    @model_validator(mode="after")
    def _status(self) -> "RespondConfig":
        if self.status is None:
            object.__setattr__(self, "status", 302 if self.location is not None else 200)
        elif self.location is not None and not 300 <= self.status <= 399:
            raise ValueError(f"location: is for redirects (a 3xx status), not {self.status}")
        if self.location is not None and any(k.lower() == "location" for k in self.headers):
            raise ValueError("Location is given twice (location: and headers:)")
        return self


class ProxyHeaders(Model):
    """Which of the fields edgeway adds to a proxied request it adds for this route. The
    defaults are edgeway's behaviour; nginx's own (no proxy_set_header) is host: $proxy_host
    and all four off. A field turned off is passed on as the client sent it, as nginx does."""

    host: str | None = None              # None: the client's Host as it came ($http_host)
    x_real_ip: bool = True
    x_forwarded_for: bool = True         # the client's list with its address appended
    x_forwarded_proto: bool = True
    x_forwarded_host: bool = True

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("host is empty (leave it out to send the client's Host)")
            _template(value, variables.PROXY)
        return value


class RouteConfig(Model):
    match: RouteMatch = RouteMatch()
    upstream: str | None = None          # exactly one of upstream and respond
    respond: RespondConfig | None = None
    strip_prefix: bool = False           # = replace_prefix: "/"
    replace_prefix: str | None = None    # match.path_prefix replaced by this (nginx proxy_pass with a URI)
    set_host: str | None = None          # alias of proxy_headers.host (older configs)
    proxy_headers: ProxyHeaders = ProxyHeaders()
    set_headers: dict[str, str] = Field(default_factory=dict)   # nginx proxy_set_header; "" removes

    @field_validator("set_headers")
    @classmethod
    def _set_headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name, text in value.items():
            _field_name(name)
            lowered = name.lower()
            if lowered in ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"):
                key = lowered.replace("-", "_")
                raise ValueError(f"{name} is set with proxy_headers.{key}: (set_headers is for other fields)")
            if lowered in seen:
                raise ValueError(f"{name} is given twice (also as {seen[lowered]})")
            seen[lowered] = name
            try:
                _template(text, variables.PROXY)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("replace_prefix")
    @classmethod
    def _replace_prefix(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"replace_prefix starts with '/': {value!r}")
        return value

    @model_validator(mode="after")
    def _shape(self) -> "RouteConfig":
        if (self.upstream is None) == (self.respond is None):
            raise ValueError("a route has exactly one of upstream: NAME and respond: {status: ...}")
        if self.respond is not None:
            # (compared with the defaults, not by the keys given: a dump of this route reads back)
            proxy_only = [k for k in ("strip_prefix", "replace_prefix", "set_host", "proxy_headers", "set_headers")
                          if getattr(self, k) != RouteConfig.model_fields[k].get_default(call_default_factory=True)]
            if proxy_only:
                raise ValueError(f"{', '.join(proxy_only)}: only for a route with an upstream (this one responds)")
        if self.set_host is not None:
            if self.proxy_headers.host is not None:
                raise ValueError("set_host and proxy_headers.host both given; keep proxy_headers.host")
            _template(self.set_host, variables.PROXY)
            # moved to proxy_headers.host (a dump of this config, read back, is then valid)
            object.__setattr__(self, "proxy_headers", self.proxy_headers.model_copy(update={"host": self.set_host}))
            object.__setattr__(self, "set_host", None)
        if self.strip_prefix and self.replace_prefix is not None:
            raise ValueError("strip_prefix and replace_prefix both given (strip_prefix is replace_prefix: \"/\")")
        # (strip_prefix without a path_prefix has always been accepted, and does nothing)
        if self.replace_prefix is not None and self.match.path_prefix is None:
            raise ValueError("replace_prefix needs match.path_prefix (the part it replaces)")
        return self

    @property
    def prefix_replacement(self) -> str | None:
        """What replaces match.path_prefix in the target sent on (None: nothing replaced)."""
        if self.match.path_prefix is None:
            return None
        return "/" if self.strip_prefix else self.replace_prefix


class TlsCertificate(Model):
    cert: ExistingFile
    key: ExistingFile


class TlsConfig(Model):
    cert: ExistingFile | None = None     # the default certificate
    key: ExistingFile | None = None
    certificates: list[TlsCertificate] = Field(default_factory=list)   # more, chosen by SNI
    min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _some_cert(self) -> "TlsConfig":
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls needs both cert and key")
        if self.cert is None and not self.certificates:
            raise ValueError("tls needs cert and key (or certificates: [...])")
        return self


class HttpTimeouts(Model):
    connect: Duration = 5
    upstream_header: Duration = 60       # nginx proxy_read_timeout for the response head
    upstream_idle: Duration = 60
    client_header: Duration = 10         # 408 when the request head takes longer
    client_body: Duration = 60           # 408 when the request body stalls this long (nginx client_body_timeout)
    client_idle: Duration = 75           # nginx keepalive_timeout
    # nginx send_timeout: a response whose bytes buffered for the client have not gone down
    # for this long (the client stopped reading) -> both connections cut
    client_send: Annotated[Duration, Field(gt=0)] = 60
    # HAProxy's timeout tunnel: an upgraded connection with no byte either way this long -> closed
    tunnel_idle: Annotated[Duration, Field(gt=0)] = 3600
    # nginx lingering_close after an error answered while the client may still be sending: read
    # and discard for at most lingering_time in all and lingering_timeout between reads (0: none)
    lingering_time: Duration = 30
    lingering_timeout: Annotated[Duration, Field(gt=0)] = 5

    @model_validator(mode="after")
    def _lingering(self) -> "HttpTimeouts":
        if self.lingering_time and self.lingering_timeout > self.lingering_time:
            raise ValueError(f"lingering_timeout ({self.lingering_timeout:g}s, the longest wait between two "
                             f"reads) is longer than lingering_time ({self.lingering_time:g}s, the whole wait); "
                             "make it shorter")
        return self


class HttpLimits(Model):
    max_header_size: ByteSize = 16384    # whole request head; above -> 431
    # a server's response head; above -> 502, the server connection closed. Larger than
    # nginx's proxy_buffer_size (4k/8k, a page), which is sized for nginx's buffers rather than
    # for servers: 64k passes the large Set-Cookie and CSP heads of real applications while
    # bounding what one server connection can make the proxy hold
    max_response_header_size: ByteSize = Field(65536, ge=1024)
    max_uri_length: int = 8192           # above -> 414
    max_retries: int = Field(2, ge=0)    # extra servers tried for idempotent requests
    max_connections: int = Field(10_000, ge=1)


class ListenerConfig(Model):
    name: str = Field(min_length=1)
    protocol: Literal["http", "https", "tcp", "udp"]
    listen: HostPort
    routes: list[RouteConfig] = Field(default_factory=list)     # http/https
    upstream: str | None = None                                 # tcp/udp
    tls: TlsConfig | None = None
    redirect_https: str | None = None    # http: redirect every request to this https origin
    health_path: str | None = "/health"  # answered by the listener itself (null: proxied)
    trace_header: bool = False           # reveal the balancing decision to `edgeway trace`
    forwarded: bool = False              # add RFC 7239 Forwarded
    # http: forward request fields whose name has "_" (nginx underscores_in_headers; off:
    # dropped, since CGI-style servers read X_Forwarded_For as X-Forwarded-For)
    underscores_in_headers: bool = False
    access_log: bool = True
    # http/https: keep the client's X-Request-ID when sane, else make one; sent to the
    # server, returned to the client, logged (on by default, as Envoy's x-request-id). None is
    # that default, so that a tcp/udp listener's config, dumped and read back, stays valid
    request_id: bool | None = None
    proxy_protocol: Literal["v1", "v2"] | None = None           # tcp: sent to the server
    splice: bool = False                 # tcp: bulk directions through os.splice (docs/l4.md, "Splice")
    session_timeout: Duration = 30                             # udp flows
    idle_timeout: Duration = 300                               # tcp
    max_connections: int = Field(10_000, ge=1)                 # tcp: connections; udp: flows
    on_limit: Literal["refuse", "wait"] = "refuse"              # tcp: beyond a limit, refuse or queue
    queue_timeout: Duration = 10                               # tcp: longest wait in that queue
    timeouts: HttpTimeouts = HttpTimeouts()
    limits: HttpLimits = HttpLimits()

    @model_validator(mode="after")
    def _shape(self) -> "ListenerConfig":
        if self.protocol in ("http", "https"):
            if not self.routes and not self.redirect_https:
                raise ValueError(f"an {self.protocol} listener needs routes (or redirect_https)")
            if self.upstream is not None:
                raise ValueError("http listeners route with routes: [...], not upstream:")
        else:
            if self.upstream is None:
                raise ValueError(f"a {self.protocol} listener needs upstream: NAME")
            if self.routes:
                raise ValueError(f"a {self.protocol} listener has no routes (it sees no HTTP)")
        if self.underscores_in_headers and self.protocol not in ("http", "https"):
            raise ValueError("underscores_in_headers: is only for http and https listeners")
        if self.request_id is not None and self.protocol not in ("http", "https"):
            raise ValueError("request_id: is only for http and https listeners")
        if self.proxy_protocol is not None and self.protocol != "tcp":
            raise ValueError("proxy_protocol: is only for protocol: tcp listeners")
        if self.splice and self.protocol != "tcp":
            raise ValueError("splice: is only for protocol: tcp listeners")
        if self.protocol == "https" and self.tls is None:
            raise ValueError("an https listener needs tls: {cert: ..., key: ...}")
        if self.protocol != "https" and self.tls is not None:
            raise ValueError("tls: is only for protocol: https")
        return self


# --------------------------------------------------------------------------- admin


def _token_file(value: Path) -> Path:
    # Read now so that `edgeway check` and a reload name file, line and key of a bad token
    # file; the admin service reads it again when it starts and on every reload.
    from edgeway.admin.token import TokenError, read_token

    try:
        read_token(value)
    except TokenError as exc:
        raise ValueError(str(exc)) from None
    return value


class AdminConfig(Model):
    """The runtime API (docs/operations.md). Loopback by default, as Envoy's admin and
    unbound-control are: the bearer token is the only other barrier, and it is sent in clear."""

    listen: HostPort = Address("127.0.0.1", 9901)
    token_file: Annotated[ConfigPath, AfterValidator(_token_file)]
    # where servers' admin state and runtime weight are kept across restarts (HAProxy's
    # server-state-file); none: they survive reloads but not a restart
    state_file: ConfigPath | None = None
    # GET /metrics without the bearer token (Prometheus scrapers that cannot send one); the
    # metrics show names and addresses, so the default keeps them behind the token too
    metrics_without_token: bool = False


# --------------------------------------------------------------------------- logs


class LogConfig(Model):
    """How edgeway writes its lines on stderr: text for people, json (one object a line) for
    a log shipper (docs/operations.md, "Logs")."""

    format: Literal["text", "json"] = "text"


# --------------------------------------------------------------------------- root


MAX_WORKERS = 256


def worker_count(workers: int | str) -> int:
    if workers == "auto":
        import os

        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    return int(workers)


class Config(Model):
    admin: AdminConfig | None = None    # the runtime API; off when absent
    log: LogConfig = LogConfig()
    dns: DnsConfig | None = None
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    listeners: list[ListenerConfig] = Field(default_factory=list)
    # SIGTERM: how long in-flight requests, connections and resolutions may take to finish
    # before what is left is closed (nginx worker_shutdown_timeout, HAProxy hard-stop-after);
    # also how long a listener removed by a reload may drain
    shutdown_timeout: Duration = 10
    # worker processes (docs/operations.md, "Workers"): 1 is one process, as before; N > 1 (or
    # auto: the CPUs this process may run on) makes `edgeway serve` a supervisor of N workers
    # that share the listening sockets and one health view. Changing between 1 and N needs a
    # restart; from N to M a reload starts or stops workers.
    workers: int | Literal["auto"] = 1

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if value == "auto" or (type(value) is int and 1 <= value <= MAX_WORKERS):
            return value
        raise ValueError(f"workers must be auto or a number from 1 to {MAX_WORKERS}; got {value!r}")

    @model_validator(mode="after")
    def _record_upstreams(self) -> "Config":
        # An `addresses` target with a health_check is checked as an upstream of its own,
        # `dns-record:<name>/<type>/<index>`: the HealthChecker, the workers' one health view,
        # reloads, the API and the metrics then carry it as they carry any upstream.
        if self.dns is None or not self.dns.records:
            return self
        upstreams = dict(self.upstreams)
        for record in self.dns.records:
            for j, target in enumerate(record.targets):
                if target.health_check is None:
                    continue
                name = record.upstream_name(j)
                if name in self.upstreams:
                    raise ValueError(f"upstreams.{name}: this name is reserved for dns.records' health checks")
                check = target.health_check
                port = check.port if check.port is not None else 53
                upstreams[name] = UpstreamConfig(
                    servers=[ServerConfig(address=Address(ip, port)) for ip in target.addresses],
                    health_check=check.upstream_check())
        object.__setattr__(self, "upstreams", upstreams)   # (frozen: set once, while validating)
        return self

    @property
    def worker_count(self) -> int:
        """`workers` as a number: auto is the CPUs this process may run on (sched_getaffinity)."""
        return worker_count(self.workers)

    def _record_errors(self) -> list[tuple[KeyPath, str]]:
        """A record's own problems, and its references to upstreams and listeners. (Whether it
        lies inside a served zone, and clashes with none of its data, needs the zone files:
        edgeway.dns.records.zone_errors, when the DNS service loads them.)"""
        errors: list[tuple[KeyPath, str]] = []
        listeners = {listener.name: listener for listener in self.listeners}
        known = ", ".join(sorted(n for n in self.upstreams
                                 if not n.startswith(RECORD_UPSTREAM_PREFIX))) or "none defined"
        seen: dict[tuple[str, str], int] = {}
        for i, record in enumerate(self.dns.records):
            base = ("dns", "records", i)
            first = seen.setdefault((record.name, record.type), i)
            if first != i:
                errors.append(((*base, "name"),
                               f"{record.name} {record.type} is already defined by dns.records.{first}"))
            errors += [((*base, *loc), msg) for loc, msg in record.problems()]
            version = 4 if record.type == "A" else 6
            for j, target in enumerate(record.targets):
                where = (*base, "targets", j)
                if target.upstream is not None:
                    upstream = self.upstreams.get(target.upstream)
                    if upstream is None or target.upstream.startswith(RECORD_UPSTREAM_PREFIX):
                        errors.append(((*where, "upstream"), f"unknown upstream {target.upstream!r} (known: {known})"))
                        continue
                    family = 0
                    for k, server in enumerate(upstream.servers):
                        try:
                            ip = ipaddress.ip_address(server.address.host)
                        except ValueError:
                            errors.append(((*where, "upstream"),
                                           f"upstream {target.upstream}: server {server.address} "
                                           f"(upstreams.{target.upstream}.servers.{k}) is not an IP address; "
                                           "a DNS answer holds addresses: write the server as IP:port"))
                            continue
                        family += ip.version == version
                    if not family:
                        errors.append(((*where, "upstream"),
                                       f"upstream {target.upstream} has no IPv{version} server for a {record.type} "
                                       "record"))
                elif target.listener is not None:
                    listener = listeners.get(target.listener)
                    if listener is None:
                        errors.append(((*where, "listener"), f"unknown listener {target.listener!r} (known: "
                                       f"{', '.join(listeners) or 'none defined'})"))
                        continue
                    if target.address is None:
                        try:
                            ip = ipaddress.ip_address(listener.listen.host)
                        except ValueError:
                            ip = None
                        if ip is None or ip.is_unspecified:
                            errors.append(((*where, "listener"),
                                           f"listener {listener.name} listens on {listener.listen}: give the "
                                           "address to answer with (address: IP)"))
                        elif ip.version != version:
                            errors.append(((*where, "listener"),
                                           f"listener {listener.name} listens on {listener.listen}, not an "
                                           f"IPv{version} address: give address: for a {record.type} record"))
        return errors

    def reference_errors(self) -> list[tuple[KeyPath, str]]:
        """Cross references a single field cannot check: names that must exist or be unique."""
        errors: list[tuple[KeyPath, str]] = []
        names: set[str] = set()
        binds: dict[tuple, int] = {}
        known = ", ".join(sorted(self.upstreams)) or "none defined"
        for i, listener in enumerate(self.listeners):
            if listener.name in names:
                errors.append((("listeners", i, "name"), f"duplicate listener name {listener.name!r}"))
            names.add(listener.name)
            kind = "udp" if listener.protocol == "udp" else "tcp"
            bind = (kind, listener.listen)
            if bind in binds:
                errors.append(
                    (("listeners", i, "listen"), f"{listener.listen} is already used by listeners.{binds[bind]}")
                )
            binds[bind] = i
            if listener.upstream is not None and listener.upstream not in self.upstreams:
                errors.append(
                    (("listeners", i, "upstream"), f"unknown upstream {listener.upstream!r} (known: {known})")
                )
            for j, route in enumerate(listener.routes):
                if route.upstream is not None and route.upstream not in self.upstreams:
                    errors.append(
                        (
                            ("listeners", i, "routes", j, "upstream"),
                            f"unknown upstream {route.upstream!r} (known: {known})",
                        )
                    )
        if self.dns is not None:
            errors += self.dns.reference_errors()
            for i, address in enumerate(self.dns.listen):
                for kind in ("udp", "tcp"):
                    if (kind, address) in binds:
                        errors.append(
                            (("dns", "listen", i), f"{address} is also used by listeners.{binds[(kind, address)]}")
                        )
        if self.admin is not None:
            listen = self.admin.listen
            if ("tcp", listen) in binds:
                errors.append((("admin", "listen"), f"{listen} is also used by listeners.{binds[('tcp', listen)]}"))
            if self.dns is not None and listen in self.dns.listen:
                errors.append((("admin", "listen"), f"{listen} is also used by dns.listen"))
        if self.dns is not None:
            errors += self._record_errors()
        if self.dns is None and not self.listeners:
            errors.append(((), "nothing to run: the config names neither dns: nor listeners:"))
        return errors
