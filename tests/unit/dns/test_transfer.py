"""Outgoing transfers without sockets: the journal's versions and files, the responder's
answers to AXFR/IXFR (ACL, NOTAUTH, UDP rules, message splitting, TSIG on every message)."""

import ipaddress
import json
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.xfr
import dns.zone
import pytest

from edgeway.dns.handlers.zones import ZonesHandler
from edgeway.dns.journal import Journal, difference, read_journal, record_version, rrsets
from edgeway.dns.responder import Responder
from edgeway.dns.transfer import Served, Stream, Transfers, allowed
from edgeway.dns.zone import Zone, ZoneSet, load_zone

KEY = dns.tsig.Key("xfr-key.", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=", dns.tsig.HMAC_SHA256)
OTHER = dns.tsig.Key("other.", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=", dns.tsig.HMAC_SHA256)
CLIENT = ("127.0.0.1", 40000)


class Entry:
    def __init__(self, network: str, key: str | None = None):
        self.from_ = ipaddress.ip_network(network)
        self.key = key


def zone_text(serial: int, extra: str = "", mail: str = "192.0.2.25", ttl: int = 300) -> str:
    return (f"$ORIGIN example.com.\n$TTL {ttl}\n@ SOA ns1 host {serial} 3600 600 86400 300\n@ NS ns1\n"
            f"ns1 A 127.0.0.1\nmail A {mail}\nmx MX 10 mail\n{extra}")


def write_zone(tmp_path: Path, text: str) -> Zone:
    path = tmp_path / "example.com.zone"
    path.write_text(text)
    return load_zone(path)


# --------------------------------------------------------------------------- journal


def test_difference_lists_deleted_and_added_records(tmp_path):
    old = write_zone(tmp_path, zone_text(1, "gone A 10.0.0.1\n"))
    new = write_zone(tmp_path, zone_text(2, "came A 10.0.0.2\n", mail="192.0.2.26"))
    version = difference(old, new)
    assert (version.start, version.end) == (1, 2)
    assert sorted(version.deleted) == [("gone.example.com.", 300, "A", "10.0.0.1"),
                                       ("mail.example.com.", 300, "A", "192.0.2.25")]
    assert sorted(version.added) == [("came.example.com.", 300, "A", "10.0.0.2"),
                                     ("mail.example.com.", 300, "A", "192.0.2.26")]


def test_a_changed_ttl_deletes_and_adds(tmp_path):
    old = write_zone(tmp_path, zone_text(1))
    new = write_zone(tmp_path, zone_text(2, ttl=600))
    version = difference(old, new)
    assert ("ns1.example.com.", 300, "A", "127.0.0.1") in version.deleted
    assert ("ns1.example.com.", 600, "A", "127.0.0.1") in version.added


def test_rrsets_read_back_absolute_names():
    (rrset,) = rrsets([("mx.example.com.", 300, "MX", "10 mail.example.com.")])
    assert rrset[0].exchange.is_absolute()


def test_record_version_keeps_a_bounded_history_on_disk(tmp_path):
    journal_dir = tmp_path / "journal"
    first = record_version(journal_dir, write_zone(tmp_path, zone_text(1)), "f1", 2)
    assert first.journal.versions == [] and not first.new_serial
    assert (journal_dir / "example.com.last").read_text().startswith("; edgeway last served version: fingerprint f1 serial 1")
    # the same file again (a restart): nothing new
    again = record_version(journal_dir, write_zone(tmp_path, zone_text(1)), "f1", 2)
    assert again.journal.versions == [] and not again.new_serial
    for serial in (2, 3, 4):
        update = record_version(journal_dir, write_zone(tmp_path, zone_text(serial, f"v{serial} A 10.0.0.{serial}\n")),
                                f"f{serial}", 2)
        assert update.new_serial
    assert [(v.start, v.end) for v in update.journal.versions] == [(2, 3), (3, 4)]     # (max_journal 2)
    assert [(v.start, v.end) for v in read_journal(journal_dir, update.journal.origin).versions] == [(2, 3), (3, 4)]
    assert update.journal.chain_from(2) == update.journal.versions
    assert update.journal.chain_from(1) is None
    data = json.loads((journal_dir / "example.com.journal").read_text())
    assert data["versions"][-1]["added"] == [["v4.example.com.", 300, "A", "10.0.0.4"]]
    assert not list(journal_dir.glob(".*"))     # (no temporary file left behind)


def test_same_serial_other_content_empties_the_history(tmp_path):
    journal_dir = tmp_path / "journal"
    record_version(journal_dir, write_zone(tmp_path, zone_text(1)), "f1", 10)
    assert len(record_version(journal_dir, write_zone(tmp_path, zone_text(2)), "f2", 10).journal.versions) == 1
    update = record_version(journal_dir, write_zone(tmp_path, zone_text(2, "x A 10.0.0.9\n")), "f3", 10)
    assert update.journal.versions == [] and not update.new_serial


def test_a_lower_serial_at_start_is_served_with_a_warning(tmp_path):
    journal_dir = tmp_path / "journal"
    record_version(journal_dir, write_zone(tmp_path, zone_text(5)), "f5", 10)
    update = record_version(journal_dir, write_zone(tmp_path, zone_text(3)), "f3", 10)
    assert update.warning and "serial 3 is not higher than 5" in update.warning
    assert update.journal.versions == [] and not update.new_serial


def test_max_journal_zero_keeps_no_history_but_the_last_version(tmp_path):
    journal_dir = tmp_path / "journal"
    record_version(journal_dir, write_zone(tmp_path, zone_text(1)), "f1", 0)
    update = record_version(journal_dir, write_zone(tmp_path, zone_text(2)), "f2", 0)
    assert update.journal.versions == [] and update.new_serial


def test_a_second_worker_finds_the_version_recorded(tmp_path):
    """Two processes loading the same new file: the second takes the first's journal."""
    journal_dir = tmp_path / "journal"
    record_version(journal_dir, write_zone(tmp_path, zone_text(1)), "f1", 10)
    zone = write_zone(tmp_path, zone_text(2, "x A 10.0.0.9\n"))
    first = record_version(journal_dir, zone, "f2", 10)
    second = record_version(journal_dir, zone, "f2", 10)
    assert first.journal.versions == second.journal.versions and len(second.journal.versions) == 1
    assert second.new_serial      # (worker 0 may be the second: it still sends the NOTIFYs)


# --------------------------------------------------------------------------- answers


@pytest.fixture
def setup(tmp_path):
    journal_dir = tmp_path / "journal"
    record_version(journal_dir, write_zone(tmp_path, zone_text(1)), "f1", 10)
    zone = write_zone(tmp_path, zone_text(2, "".join(f"h{i} TXT \"{'x' * 200}\"\n" for i in range(600))))
    journal = record_version(journal_dir, zone, "f2", 10).journal
    transfers = Transfers({KEY.name: KEY, OTHER.name: OTHER})
    transfers.zones = {zone.origin: Served(zone, journal, [Entry("127.0.0.0/8", "xfr-key."), Entry("10.0.0.0/8")])}
    responder = Responder([ZonesHandler(ZoneSet([zone]))], transfers=transfers)
    return responder, zone


def query(qtype: str, name: str = "example.com.", serial: int | None = None, key=KEY) -> dns.message.Message:
    message = dns.message.make_query(name, qtype)
    if serial is not None:
        message.authority.append(dns.rrset.from_text(name, 0, "IN", "SOA", f". . {serial} 0 0 0 0"))
    if key is not None:
        message.use_tsig(key)
    return message


def messages(result, request: dns.message.Message) -> list[dns.message.Message]:
    """Each message of an answer, verified message by message as a secondary does."""
    wires = list(result.messages) if isinstance(result, Stream) else [result]
    out, ctx, mac = [], None, request.mac
    keyring = {KEY.name: KEY, OTHER.name: OTHER} if request.had_tsig else None
    for wire in wires:
        message = dns.message.from_wire(wire, keyring=keyring, request_mac=mac or b"", xfr=True, tsig_ctx=ctx,
                                        multi=True, origin=None)
        ctx, mac = message.tsig_ctx, message.mac
        out.append(message)
    return out


def test_axfr_in_several_signed_messages_rebuilds_the_zone(setup):
    responder, zone = setup
    request = query("AXFR")
    result = responder.respond(request.to_wire(), CLIENT, "tcp")
    assert isinstance(result, Stream)
    got = messages(result, request)
    assert len(got) >= 2 and all(m.had_tsig for m in got)
    assert all(len(m.to_wire()) <= 65535 for m in got)
    assert got[0].question and not got[1].question          # (the question in the first only)
    copy = dns.zone.Zone("example.com.", relativize=False)
    with dns.xfr.Inbound(copy, dns.rdatatype.AXFR) as inbound:
        done = [inbound.process_message(m) for m in got]
    assert done[-1] and not any(done[:-1])
    assert len(copy.nodes) == len(zone.nodes)


def test_ixfr_from_the_journal(setup):
    responder, zone = setup
    request = query("IXFR", serial=1)
    got = messages(responder.respond(request.to_wire(), CLIENT, "tcp"), request)
    answer = [rrset for m in got for rrset in m.answer]
    soas = [rrset[0].serial for rrset in answer if rrset.rdtype == dns.rdatatype.SOA]
    assert soas == [2, 1, 2, 2]
    added = [rrset for rrset in answer if rrset.rdtype == dns.rdatatype.TXT]
    assert sum(len(rrset) for rrset in added) == 600


@pytest.mark.parametrize("serial", [2, 3])
def test_ixfr_at_or_above_our_serial_is_the_soa_alone(setup, serial):
    responder, _ = setup
    request = query("IXFR", serial=serial)
    (message,) = messages(responder.respond(request.to_wire(), CLIENT, "tcp"), request)
    assert [rrset.rdtype for rrset in message.answer] == [dns.rdatatype.SOA] and message.answer[0][0].serial == 2


def test_ixfr_older_than_the_history_is_the_whole_zone(setup):
    responder, zone = setup
    request = query("IXFR", serial=0)
    got = messages(responder.respond(request.to_wire(), CLIENT, "tcp"), request)
    answer = [rrset for m in got for rrset in m.answer]
    assert answer[0].rdtype == answer[-1].rdtype == dns.rdatatype.SOA
    assert sum(1 for r in answer if r.rdtype == dns.rdatatype.SOA) == 2


def test_ixfr_over_udp_is_the_soa_alone_and_axfr_over_udp_notimp(setup):
    responder, _ = setup
    request = query("IXFR", serial=1)
    (message,) = messages(responder.respond(request.to_wire(), CLIENT, "udp"), request)
    assert [r.rdtype for r in message.answer] == [dns.rdatatype.SOA] and message.had_tsig
    request = query("AXFR")
    (message,) = messages(responder.respond(request.to_wire(), CLIENT, "udp"), request)
    assert message.rcode() == dns.rcode.NOTIMP


@pytest.mark.parametrize("key", [KEY, None])
def test_ixfr_without_the_clients_soa_is_formerr(setup, key):
    responder, _ = setup
    request = query("IXFR", key=key)
    client = CLIENT if key is not None else ("10.0.0.1", 1)
    (message,) = messages(responder.respond(request.to_wire(), client, "tcp"), request)
    assert message.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("client, key, rcode", [
    (("127.0.0.1", 1), KEY, dns.rcode.NOERROR),
    (("127.0.0.1", 1), None, dns.rcode.REFUSED),          # the entry wants a key
    (("127.0.0.1", 1), OTHER, dns.rcode.REFUSED),         # a known key, not this zone's
    (("10.1.2.3", 1), None, dns.rcode.NOERROR),           # keyless entry
    (("10.1.2.3", 1), KEY, dns.rcode.REFUSED),            # keyless means unsigned (NSD's NOKEY)
    (("192.0.2.1", 1), KEY, dns.rcode.REFUSED),           # in no entry
])
def test_allow_transfer(setup, client, key, rcode):
    responder, _ = setup
    request = query("AXFR", key=key)
    result = responder.respond(request.to_wire(), client, "tcp")
    got = messages(result, request)
    assert got[0].rcode() == rcode


def test_a_zone_we_do_not_serve_is_notauth(setup):
    responder, _ = setup
    for name in ("example.org.", "mail.example.com."):
        request = query("AXFR", name=name)
        (message,) = messages(responder.respond(request.to_wire(), CLIENT, "tcp"), request)
        assert message.rcode() == dns.rcode.NOTAUTH


def test_signed_ordinary_queries_get_signed_answers_and_skip_the_fast_path(setup):
    responder, _ = setup
    for _ in range(2):
        request = query("A", name="mail.example.com.")
        response = dns.message.from_wire(responder.respond(request.to_wire(), CLIENT, "udp"),
                                         keyring={KEY.name: KEY}, request_mac=request.mac)
        assert response.had_tsig and response.answer[0][0].address == "192.0.2.25"
    assert not responder.fast_udp


def test_a_zone_without_allow_transfer_is_refused(setup):
    responder, zone = setup
    served = responder.transfers.zones[zone.origin]
    responder.transfers.zones = {zone.origin: Served(served.zone, served.journal, [])}
    request = query("AXFR")
    (message,) = messages(responder.respond(request.to_wire(), CLIENT, "tcp"), request)
    assert message.rcode() == dns.rcode.REFUSED


def test_without_transfers_axfr_is_refused_and_signed_queries_notauth(tmp_path):
    zone = write_zone(tmp_path, zone_text(1))
    responder = Responder([ZonesHandler(ZoneSet([zone]))])
    response = dns.message.from_wire(responder.respond(query("AXFR", key=None).to_wire(), CLIENT, "tcp"))
    assert response.rcode() == dns.rcode.REFUSED
    wire = responder.respond(query("A", name="mail.example.com.").to_wire(), CLIENT, "udp")
    assert wire[3] & 0xF == dns.rcode.NOTAUTH


def test_allowed_matches_address_and_key():
    entries = [Entry("127.0.0.0/8", "xfr-key."), Entry("::1/128")]
    assert allowed(entries, "127.9.9.9", dns.name.from_text("xfr-key."))
    assert not allowed(entries, "127.9.9.9", None)
    assert allowed(entries, "::1", None)
    assert not allowed(entries, "not an address", None)


def test_an_rrset_larger_than_a_message_is_split(tmp_path):
    big = "".join(f'big TXT "{i:05d} {"y" * 100}"\n' for i in range(1500))     # ~160 KB in one RRset
    zone = write_zone(tmp_path, zone_text(1, big))
    transfers = Transfers({KEY.name: KEY})
    transfers.zones = {zone.origin: Served(zone, Journal(zone.origin), [Entry("127.0.0.0/8", "xfr-key.")])}
    responder = Responder([ZonesHandler(ZoneSet([zone]))], transfers=transfers)
    request = query("AXFR")
    got = messages(responder.respond(request.to_wire(), CLIENT, "tcp"), request)
    assert len(got) >= 3
    copy = dns.zone.Zone("example.com.", relativize=False)
    with dns.xfr.Inbound(copy, dns.rdatatype.AXFR) as inbound:
        for message in got:
            inbound.process_message(message)
    assert len(copy.get_rdataset("big.example.com.", "TXT")) == 1500


def test_a_secondary_zone_is_served_onward(setup, tmp_path):
    responder, zone = setup
    other = tmp_path / "other"
    other.mkdir()
    (other / "z.zone").write_text(zone_text(9).replace("example.com.", "example.net."))
    net = load_zone(other / "z.zone")
    responder.transfers.secondaries[net.origin] = Served(net, Journal(net.origin), [Entry("127.0.0.0/8")])
    request = query("AXFR", name="example.net.", key=None)
    got = messages(responder.respond(request.to_wire(), CLIENT, "tcp"), request)
    assert got[0].answer[0][0].serial == 9
