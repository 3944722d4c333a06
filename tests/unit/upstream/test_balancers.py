"""Distribution and stability of each balancing algorithm, on a fake clock (now=0)."""

from collections import Counter

import pytest

from edgeway.config.model import UpstreamConfig
from edgeway.upstream import Upstream

from .helpers import make, ports

THREE = (("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1))


def picks(up, n, key=None, exclude=()):
    return [up.pick(key, exclude, now=0.0) for _ in range(n)]


# ------------------------------------------------------------------ round robin


def test_smooth_weighted_round_robin_interleaves_like_nginx():
    up = make(servers=(("127.0.0.1:1", 5), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)))
    assert ports(picks(up, 7)) == [1, 1, 2, 1, 3, 1, 1]
    assert Counter(ports(picks(up, 700))) == {1: 500, 2: 100, 3: 100}


def test_round_robin_equal_weights_cycles():
    up = make(servers=THREE)
    assert ports(picks(up, 6)) == [1, 2, 3, 1, 2, 3]


def test_round_robin_skips_unhealthy_and_excluded():
    up = make(servers=THREE)
    up.servers[1].healthy = False
    assert set(ports(picks(up, 10))) == {1, 3}
    assert set(ports(picks(up, 10, exclude=[up.servers[0]]))) == {3}


# ------------------------------------------------------------------ least_conn


def test_least_conn_prefers_fewest_in_flight():
    up = make("least_conn", servers=THREE)
    up.servers[0].in_flight = 3
    up.servers[1].in_flight = 1
    up.servers[2].in_flight = 2
    assert up.pick(now=0).address.port == 2


def test_least_conn_is_weighted():
    up = make("least_conn", servers=(("127.0.0.1:1", 3), ("127.0.0.1:2", 1)))
    up.servers[0].in_flight = 2     # 2/3 per weight
    up.servers[1].in_flight = 1     # 1/1
    assert up.pick(now=0).address.port == 1


def test_least_conn_ties_rotate():
    up = make("least_conn", servers=THREE)
    assert sorted(ports(picks(up, 3))) == [1, 2, 3]


def test_least_conn_with_acquire_release_spreads_concurrent_requests():
    up = make("least_conn", servers=THREE)
    held = []
    for _ in range(9):
        s = up.pick(now=0)
        up.acquire(s)
        held.append(s)
    assert Counter(ports(held)) == {1: 3, 2: 3, 3: 3}
    for s in held:
        up.release(s)
    assert all(s.in_flight == 0 for s in up.servers)


# ------------------------------------------------------------------ consistent hashing


def keys(n):
    return [f"10.0.{i // 256}.{i % 256}" for i in range(n)]


@pytest.mark.parametrize("balance", ["ip_hash", "hash"])
def test_hash_is_stable_and_balanced(balance):
    up = make(balance, servers=THREE)
    first = {k: up.pick(k, now=0) for k in keys(3000)}
    again = {k: up.pick(k, now=0) for k in keys(3000)}
    assert first == again
    counts = Counter(s.address.port for s in first.values())
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_hash_server_down_moves_only_its_keys():
    up = make("hash", servers=THREE + (("127.0.0.1:4", 1),))
    before = {k: up.pick(k, now=0) for k in keys(4000)}
    down = up.servers[1]
    down.healthy = False
    after = {k: up.pick(k, now=0) for k in keys(4000)}
    moved = [k for k in before if before[k] is not after[k]]
    assert all(before[k] is down for k in moved)
    assert 0.15 < len(moved) / 4000 < 0.35           # about 1/N
    # its keys are shared among the others, not dumped on one neighbour
    assert len({after[k].address.port for k in moved}) == 3


def test_hash_removing_a_server_from_config_moves_about_one_nth():
    four = THREE + (("127.0.0.1:4", 1),)
    a, b = make("hash", servers=four), make("hash", servers=THREE)
    moved = sum(a.pick(k, now=0).address.port != b.pick(k, now=0).address.port for k in keys(4000))
    assert 0.15 < moved / 4000 < 0.35


def test_hash_weight_scales_share():
    up = make("hash", servers=(("127.0.0.1:1", 3), ("127.0.0.1:2", 1)))
    counts = Counter(up.pick(k, now=0).address.port for k in keys(4000))
    assert 2.2 < counts[1] / counts[2] < 4.0


def test_hash_without_key_still_answers():
    up = make("hash", servers=THREE)
    assert set(ports(picks(up, 6))) == {1, 2, 3}


# ------------------------------------------------------------------ random_two


def test_random_two_avoids_the_loaded_server():
    up = make("random_two", servers=THREE)
    up.servers[0].in_flight = 50
    counts = Counter(ports(picks(up, 300)))
    assert counts[1] == 0 and counts[2] > 100 and counts[3] > 100


def test_random_two_spreads_when_idle():
    up = make("random_two", servers=THREE)
    counts = Counter(ports(picks(up, 3000)))
    assert all(700 < c < 1300 for c in counts.values()), counts


# ------------------------------------------------------------------ backups, exclude, max_conns


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "ip_hash", "random_two"])
def test_backup_only_while_every_primary_is_down(balance):
    up = make(balance, servers=THREE[:2], backups=("127.0.0.1:9",))
    assert 9 not in ports(picks(up, 20, key="k"))
    up.servers[0].healthy = False
    assert 9 not in ports(picks(up, 20, key="k"))
    up.servers[1].healthy = False
    assert set(ports(picks(up, 5, key="k"))) == {9}
    up.servers[2].healthy = False
    assert up.pick("k", now=0) is None
    up.servers[0].healthy = True
    assert set(ports(picks(up, 5, key="k"))) == {1}


def test_max_conns_makes_server_unavailable():
    up = Upstream("x", UpstreamConfig.model_validate(
        {"servers": [{"address": "127.0.0.1:1", "max_conns": 1}, {"address": "127.0.0.1:2"}]}))
    s = up.pick(now=0)
    assert s.address.port == 1
    up.acquire(s)
    assert {up.pick(now=0).address.port for _ in range(4)} == {2}
    assert "full (1/1" in up.servers[0].why_unavailable(0)


def test_decide_explains():
    up = make(servers=THREE)
    up.servers[2].healthy = False
    d = up.decide(exclude=[up.servers[0]], now=0)
    assert d.server is up.servers[1]
    assert d.reason == "smooth weighted round robin"
    assert d.excluded == ["127.0.0.1:1: already tried", "127.0.0.1:3: down (active health check)"]
    up.servers[1].healthy = False
    assert up.decide(exclude=[up.servers[0]], now=0).server is None


def test_server_ids_are_stable_opaque_and_findable():
    a, b = make(servers=THREE), make(servers=THREE)
    assert [s.id for s in a.servers] == [s.id for s in b.servers]
    assert len({s.id for s in a.servers}) == 3
    assert all("127.0.0.1" not in s.id for s in a.servers)
    assert a.find(a.servers[2].id) is a.servers[2] and a.find("nope") is None


def test_least_conn_ties_take_smooth_weighted_turns_as_nginx():
    # nginx's least_conn: among the equally loaded, weighted round robin (weights 2,1,1 -> a b a c)
    up = make("least_conn", servers=(("127.0.0.1:1", 2), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)))
    assert ports(picks(up, 8)) == [1, 2, 3, 1, 1, 2, 3, 1]
    up.servers[0].in_flight = 1     # 1/2 per weight: b and c (0) are less loaded, alone in the tie
    assert set(ports(picks(up, 4))) == {2, 3}


def _least_conn_reference(current, candidates):
    """LeastConn.choose as first written (a loop over indices, nothing kept in locals): the
    reference that the faster form must pick the same servers as, with the same turns."""
    best, ties = candidates[0], 1
    for i in range(1, len(candidates)):
        server = candidates[i]
        lhs, rhs = server.in_flight * best.weight, best.in_flight * server.weight
        if lhs < rhs:
            best, ties = server, 1
        elif lhs == rhs:
            ties += 1
    if ties == 1:
        return best
    total, pick, pick_value = 0, None, 0
    for server in candidates:
        if server.in_flight * best.weight != best.in_flight * server.weight:
            continue
        value = current.get(server, 0) + server.weight
        current[server] = value
        total += server.weight
        if pick is None or value > pick_value:
            pick, pick_value = server, value
    current[pick] = pick_value - total
    return pick


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_least_conn_picks_as_its_reference_under_random_loads(count):
    import random

    from edgeway.upstream.balancers.least_conn import LeastConn

    rng = random.Random(count)
    up = make("least_conn", servers=tuple((f"127.0.0.1:{i + 1}", rng.randint(1, 4)) for i in range(count)))
    servers = up.servers
    balancer = LeastConn(servers)
    reference: dict = {}
    ties = 0
    for _ in range(3000):
        for server in servers:   # loads that tie often (small numbers), and sometimes not
            server.in_flight = rng.randint(0, 3)
        candidates = [s for s in servers if rng.random() < 0.9] or servers[:1]
        expected = _least_conn_reference(reference, candidates)
        ties += sum(s.in_flight * expected.weight == expected.in_flight * s.weight for s in candidates) > 1
        assert balancer.choose(candidates) is expected
        assert {s: v for s, v in balancer.current.items() if v or s in reference} == reference
    assert ties > 100 or count == 1   # the turn-taking part was exercised
