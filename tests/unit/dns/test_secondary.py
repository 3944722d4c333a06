"""The secondary side without sockets: the SOA timers (edgeway.dns.refresh), who may NOTIFY
(edgeway.dns.notify_in), SERVFAIL for a zone with no data (handlers.zones.UnavailableZone),
and the atomic zone file (edgeway.dns.xfrin)."""

from __future__ import annotations

import base64
from pathlib import Path

import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.tsig
import dns.zone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeway.config.loader import load_config_text
from edgeway.dns.handlers.base import Query
from edgeway.dns.handlers.zones import UnavailableZone, ZonesHandler
from edgeway.dns.notify_in import NotifyHandler
from edgeway.dns.refresh import MIN_INTERVAL, NO_DATA_RETRY, NO_DATA_RETRY_MAX, RefreshState, SoaTimers
from edgeway.dns.xfrin import write_zone_file
from edgeway.dns.zone import Zone, ZoneSet, load_zone

T = SoaTimers(serial=10, refresh=100, retry=20, expire=300)


def test_timers_of_a_soa_raise_zero_intervals():
    soa = dns.zone.from_text("@ 60 IN SOA ns admin 5 0 0 0 60\n@ NS ns\n", origin="x.test.").find_rdataset("@", "SOA")[0]
    assert SoaTimers.of(soa) == SoaTimers(5, MIN_INTERVAL, MIN_INTERVAL, MIN_INTERVAL)


def test_refresh_retry_expire_as_rfc_1035_says():
    s = RefreshState("x.test.")
    assert not s.servable and s.next_check == 0          # nothing held: check at once
    s.transferred(1000, T)
    assert s.servable and s.next_check == 1100 and s.expires_at() == 1300
    # REFRESH: a primary says our serial is current: the timers start again from now
    assert not s.wants_transfer(10) and not s.wants_transfer(9)    # (lower: kept, as NSD)
    assert s.wants_transfer(11)
    s.confirmed(1100)
    assert s.next_check == 1200 and s.expires_at() == 1400
    # RETRY while no primary answers, until EXPIRE after the last confirmation
    now, expired_at = 1200, None
    for _ in range(50):                                    # (bounded)
        if s.failed(now, "no answer"):
            expired_at = now
            break
        assert s.next_check == now + 20 and s.servable
        now = s.wake_at()
    assert expired_at == 1400 and not s.servable and s.failures == 11
    assert s.last_error == "no answer"
    # a primary answers again: served again, failures forgotten
    s.confirmed(1500)
    assert s.servable and s.failures == 0 and s.next_check == 1600


def test_expiry_happens_between_checks_too():
    s = RefreshState("x.test.")
    s.transferred(0, SoaTimers(1, refresh=1000, retry=1000, expire=50))
    assert s.wake_at() == 50                                 # expiry comes before the refresh
    assert not s.tick(49) and s.tick(50) and not s.tick(51)   # (reported once)
    assert not s.servable


def test_notify_makes_the_check_due_now():
    s = RefreshState("x.test.")
    s.transferred(0, T)
    s.notified(5)
    assert s.next_check == 5 and s.wake_at() == 5


def test_no_data_backs_off_and_never_expires():
    s = RefreshState("x.test.")
    waits = []
    for now in range(0, 10_000, 1000):
        assert not s.failed(now, "refused")
        waits.append(s.next_check - now)
    assert waits[0] == NO_DATA_RETRY and waits[1] == 2 * NO_DATA_RETRY and max(waits) == NO_DATA_RETRY_MAX
    assert not s.expired and s.expires_at() is None


def test_a_file_past_its_expiry_is_not_served_at_start():
    s = RefreshState("x.test.")
    s.loaded(now=1000, timers=T, confirmed_at=600)          # mtime 400 s ago, EXPIRE 300
    assert s.expired and not s.servable and s.next_check == 1000
    s = RefreshState("x.test.")
    s.loaded(now=1000, timers=T, confirmed_at=900)
    assert s.servable and s.expires_at() == 1200 and s.next_check == 1000
    s = RefreshState("x.test.")
    s.loaded(now=1000, timers=T, confirmed_at=5000)          # (a clock that went back: now)
    assert s.confirmed_at == 1000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ok", "fail", "notify", "tick", "transfer"]),
                          st.integers(min_value=0, max_value=500)), max_size=40))
def test_state_machine_invariants(steps):
    s = RefreshState("x.test.")
    now = 0
    for event, step in steps:
        now += step
        s.tick(now)                                 # (the manager looks at every wake-up)
        if event == "transfer":
            s.transferred(now, T)
        elif event == "ok" and s.timers is not None:
            s.confirmed(now)
        elif event == "fail":
            s.failed(now, "x")
        elif event == "notify":
            s.notified(now)
        else:
            continue
        assert s.next_check >= now
        if s.timers is not None and not s.expired:
            assert now < s.expires_at()            # served only within EXPIRE of a confirmation
        if s.timers is None:
            assert not s.expired                   # no data: nothing to expire


# ---------------------------------------------------------------------- NOTIFY


SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def notify_handler(tmp_path: Path, key: bool = True, allow: str | None = None) -> NotifyHandler:
    (tmp_path / "k.key").write_text(SECRET)
    zone = {"origin": "sec.test.", "primaries": ["192.0.2.1:53", "[2001:db8::1]:5300"], "file": "s.zone"}
    if key:
        zone["key"] = "k."
    if allow is not None:
        zone["allow_notify"] = [allow]
    import yaml

    text = yaml.safe_dump({"dns": {"listen": ["127.0.0.1:5300"], "secondary_zones": [zone],
                                   "tsig_keys": [{"name": "k.", "secret_file": "k.key"}]}})
    config = load_config_text(text, filename=str(tmp_path / "e.yaml"), base_dir=tmp_path)
    return NotifyHandler(config.dns)


K = dns.name.from_text("k.")
SEC = dns.name.from_text("sec.test.")


@pytest.mark.parametrize("origin,client,key,key_in_config,allow,rcode", [
    ("sec.test.", "192.0.2.1", K, True, None, "NOERROR"),
    ("SEC.test.", "2001:db8::1", K, True, None, "NOERROR"),      # (names and v6: any spelling)
    ("sec.test.", "192.0.2.1", None, True, None, "REFUSED"),     # unsigned, the zone wants its key
    ("sec.test.", "192.0.2.1", K, False, None, "REFUSED"),       # signed, the zone has no key (NOKEY)
    ("sec.test.", "192.0.2.1", None, False, None, "NOERROR"),
    ("sec.test.", "192.0.2.2", K, True, None, "REFUSED"),        # not a primary
    ("sec.test.", "192.0.2.2", K, True, "192.0.2.0/24", "NOERROR"),
    ("sec.test.", "192.0.2.1", K, True, "198.51.100.0/24", "REFUSED"),   # allow_notify replaces the default
    ("other.test.", "192.0.2.1", K, True, None, "NXDOMAIN"),     # not a secondary zone here (as NSD)
])
def test_notify_verdict(tmp_path, origin, client, key, key_in_config, allow, rcode):
    handler = notify_handler(tmp_path, key_in_config, allow)
    got, why = handler.verdict(dns.name.from_text(origin), client, key)
    assert dns.rcode.to_text(got) == rcode, why


def make_notify(origin: str = "sec.test.", key=None) -> bytes:
    message = dns.message.make_query(origin, "SOA", use_edns=False)
    message.set_opcode(dns.opcode.NOTIFY)
    if key is not None:
        message.use_tsig(key)
    return message.to_wire()


def test_notify_answers_signed_and_reaches_the_sink(tmp_path):
    handler = notify_handler(tmp_path)
    heard = []
    handler.sink = lambda origin, source: heard.append((origin, source))
    key = dns.tsig.Key(K, SECRET, dns.tsig.HMAC_SHA256)
    query = dns.message.make_query("sec.test.", "SOA")
    wire = make_notify(key=key)
    reply = dns.message.from_wire(handler.respond(wire, ("192.0.2.1", 5353)), keyring={K: key},
                                  request_mac=dns.message.from_wire(wire, keyring={K: key}).mac)
    assert reply.rcode() == dns.rcode.NOERROR and reply.opcode() == dns.opcode.NOTIFY and reply.had_tsig
    assert heard == [(SEC, "192.0.2.1")]
    # wrong secret: NOTAUTH (BADSIG), nothing heard
    bad = dns.tsig.Key(K, base64.b64encode(b"x" * 32).decode(), dns.tsig.HMAC_SHA256)
    reply = handler.respond(make_notify(key=bad), ("192.0.2.1", 5353))
    assert reply[3] & 0xF == dns.rcode.NOTAUTH and len(heard) == 1
    # unsigned: REFUSED
    reply = dns.message.from_wire(handler.respond(make_notify(), ("192.0.2.1", 5353)))
    assert reply.rcode() == dns.rcode.REFUSED and len(heard) == 1
    # not a SOA question: taken all the same (NSD 4.6 does)
    message = dns.message.make_query("sec.test.", "A")
    message.set_opcode(dns.opcode.NOTIFY)
    message.use_tsig(key)
    reply = handler.respond(message.to_wire(), ("192.0.2.1", 5353))
    assert reply[3] & 0xF == dns.rcode.NOERROR and len(heard) == 2
    # no question: FORMERR
    message = dns.message.Message()
    message.set_opcode(dns.opcode.NOTIFY)
    reply = handler.respond(message.to_wire(), ("192.0.2.1", 5353))
    assert reply[3] & 0xF == dns.rcode.FORMERR and len(heard) == 2
    assert query is not None


# ---------------------------------------------------------------------- serving


def test_a_zone_with_no_data_answers_servfail_and_hides_no_parent(tmp_path):
    parent = tmp_path / "p.zone"
    parent.write_text("$ORIGIN test.\n$TTL 60\n@ SOA ns admin 1 60 60 60 60\n@ NS ns\nns A 127.0.0.1\n"
                      "www.sec A 192.0.2.9\n")
    zones = ZoneSet([load_zone(parent), UnavailableZone.of(SEC)])
    handler = ZonesHandler(zones)

    def ask(name: str):
        return handler.handle(Query(dns.name.from_text(name), 1, 1, ("127.0.0.1", 1), "udp", False))

    answer = ask("www.sec.test.")
    assert answer.rcode == dns.rcode.SERVFAIL and not answer.authoritative and not answer.cacheable
    assert ask("ns.test.").rcode == dns.rcode.NOERROR


def test_zone_file_is_written_whole_and_reads_back(tmp_path):
    zone = dns.zone.from_text("$TTL 60\n@ SOA ns admin 42 60 60 60 60\n@ NS ns\nns A 127.0.0.1\n"
                              "t TXT \"a b\"\n", origin="w.test.", relativize=False)
    path = tmp_path / "deep" / "w.test.zone"
    write_zone_file(path, zone)
    write_zone_file(path, zone)                    # (over an existing file: renamed over it)
    back = load_zone(path, "w.test.")
    assert isinstance(back, Zone) and back.serial == 42
    assert [p.name for p in path.parent.iterdir()] == ["w.test.zone"]     # no temporary file left
