import random

import dns.name
import dns.rdatatype

from edgeway.dns.resolver.infra import Infra

ZONE = dns.name.from_text("example.com.")


def test_unknown_servers_first_then_fastest():
    infra = Infra(rng=random.Random(1))
    infra.answered("10.0.0.1", 0.050, now=0)
    infra.answered("10.0.0.2", 0.005, now=0)
    assert infra.order(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ZONE, 1) == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]


def test_smoothing_moves_an_eighth():
    infra = Infra()
    infra.answered("10.0.0.1", 0.080, now=0)
    infra.answered("10.0.0.1", 0.000, now=1)
    assert abs(infra.info("10.0.0.1", 1).srtt - 0.070) < 1e-9


def test_timeouts_back_off_then_unreachable_for_a_while():
    infra = Infra(timeout=1.0, unreachable_after=2, unreachable_for=60)
    infra.answered("10.0.0.1", 0.01, now=0)
    infra.timed_out("10.0.0.1", now=1)
    assert not infra.is_unreachable("10.0.0.1", 1) and infra.info("10.0.0.1", 1).srtt >= 1.0
    infra.timed_out("10.0.0.1", now=2)
    assert infra.is_unreachable("10.0.0.1", 3)
    assert infra.order(["10.0.0.1", "10.0.0.2"], ZONE, 3)[0] == "10.0.0.2"
    assert not infra.is_unreachable("10.0.0.1", 63)


def test_lame_is_per_zone_and_expires():
    infra = Infra(lame_for=10)
    infra.mark_lame("10.0.0.1", ZONE, now=0)
    assert infra.is_lame("10.0.0.1", ZONE, 5)
    assert not infra.is_lame("10.0.0.1", dns.name.from_text("example.net."), 5)
    assert not infra.is_lame("10.0.0.1", ZONE, 11)


def test_lame_for_one_type_leaves_the_others():
    infra = Infra(lame_for=10)
    infra.mark_lame("10.0.0.1", ZONE, now=0, rdtype=dns.rdatatype.AAAA)
    assert infra.is_lame("10.0.0.1", ZONE, 5, dns.rdatatype.AAAA)
    assert not infra.is_lame("10.0.0.1", ZONE, 5, dns.rdatatype.A)
    assert not infra.is_lame("10.0.0.1", ZONE, 5)
    assert infra.order(["10.0.0.1", "10.0.0.2"], ZONE, 5, dns.rdatatype.AAAA)[0] == "10.0.0.2"
    infra.mark_lame("10.0.0.1", ZONE, now=0)      # REFUSED: lame for every type
    assert infra.is_lame("10.0.0.1", ZONE, 5, dns.rdatatype.A)


def test_query_timeout_is_rto_within_bounds():
    infra = Infra(timeout=1.5, min_timeout=0.25)
    assert infra.query_timeout("10.0.0.9", 0) == 1.5
    infra.answered("10.0.0.9", 0.001, now=0)
    assert infra.query_timeout("10.0.0.9", 0) == 0.25


def test_entries_bounded():
    infra = Infra(max_entries=10)
    for i in range(50):
        infra.answered(f"10.0.1.{i}", 0.01, now=0)
    assert len(infra.snapshot()) == 10
