"""Admin states, runtime weights, counters and the snapshot, on a fake clock (now=0)."""

from collections import Counter

import pytest

from edgeway.upstream import UpstreamError

from .helpers import make, ports

THREE = (("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1))
BALANCES = ["round_robin", "least_conn", "ip_hash", "hash", "random_two"]


def picks(up, n, key=None):
    return ports(up.pick(key, (), now=0.0) for _ in range(n))


@pytest.mark.parametrize("balance", BALANCES)
@pytest.mark.parametrize("state", ["drain", "maint"])
def test_a_drained_or_maint_server_gets_no_new_pick(balance, state):
    up = make(balance, servers=THREE)
    up.set_state("127.0.0.1:2", state)
    keys = [f"client{i}".encode() for i in range(60)]
    assert 2 not in {port for key in keys for port in picks(up, 2, key)}
    up.set_state("127.0.0.1:2", "ready")
    assert 2 in {port for key in keys for port in picks(up, 2, key)}


def test_find_returns_a_drained_server_but_not_a_maint_one():
    up = make(servers=THREE)
    server = up.server("127.0.0.1:2")
    up.set_state(server, "drain")
    assert up.find(server.id) is server          # sticky requests still reach it
    up.set_state(server, "maint")
    assert up.find(server.id) is None            # balanced elsewhere, as if down
    up.set_state(server, "ready")
    assert up.find(server.id) is server


def test_hash_keys_of_the_others_do_not_move_while_one_drains():
    up = make("hash", servers=THREE)
    keys = [f"user{i}".encode() for i in range(300)]
    before = {k: up.pick(k, now=0.0) for k in keys}
    up.set_state("127.0.0.1:3", "drain")
    after = {k: up.pick(k, now=0.0) for k in keys}
    moved = [k for k in keys if before[k] is not after[k]]
    assert moved and all(before[k].address.port == 3 for k in moved)


def test_backups_take_over_when_every_primary_is_drained():
    up = make(servers=(("127.0.0.1:1", 1),), backups=("127.0.0.1:9",))
    up.set_state("127.0.0.1:1", "drain")
    assert picks(up, 3) == [9, 9, 9]
    up.set_state("127.0.0.1:9", "maint")
    assert up.pick(now=0.0) is None
    assert "drain (set by an operator" in up.down_reason(0.0) and "maint" in up.down_reason(0.0)
    decision = up.decide(now=0.0)
    assert decision.server is None and len(decision.excluded) == 2


def test_pick_does_not_copy_the_list_for_a_drained_server():
    # the hot path: a drained server is out of the list itself, not filtered per pick
    up = make(servers=THREE)
    up.set_state("127.0.0.1:1", "maint")
    assert [s.address.port for s in up.primaries] == [2, 3]
    assert len(up.servers) == 3


def test_set_state_and_set_weight_refuse_bad_input_with_a_clear_error():
    up = make(servers=THREE)
    with pytest.raises(UpstreamError, match=r"invalid state 'down': expected one of ready, drain, maint"):
        up.set_state("127.0.0.1:1", "down")
    with pytest.raises(UpstreamError, match=r"upstream api has no server 127.0.0.1:7 \(servers: 127.0.0.1:1, "):
        up.set_state("127.0.0.1:7", "drain")
    for bad in (0, 1001, 2.5, "3", True):
        with pytest.raises(UpstreamError, match="invalid weight .*: expected an integer from 1 to 1000"):
            up.set_weight("127.0.0.1:1", bad)
    assert up.server("127.0.0.1:1").weight == 1 and up.server("127.0.0.1:1").state == "ready"


@pytest.mark.parametrize("balance", ["round_robin", "hash"])
def test_runtime_weight_changes_the_share(balance):
    up = make(balance, servers=(("127.0.0.1:1", 1), ("127.0.0.1:2", 1)))
    up.set_weight("127.0.0.1:1", 4)
    if balance == "round_robin":
        assert Counter(picks(up, 500)) == {1: 400, 2: 100}
    else:   # the ring is rebuilt with 4x the points for server 1
        share = Counter(up.pick(f"k{i}".encode(), now=0.0).address.port for i in range(4000))
        assert 0.7 < share[1] / 4000 < 0.9


def test_server_by_address_text_v4_v6_and_names():
    up = make(servers=(("127.0.0.1:8080", 1), ("[::1]:80", 1), ("host.example:80", 1)))
    assert up.server("[::1]:80").address.host == "::1"
    assert up.server("host.example:80").address.port == 80
    assert up.server("::1:80") is None and up.server("127.0.0.1:8081") is None


def test_counters_and_snapshot():
    up = make(servers=THREE, passive={"max_fails": 0})
    a, b, c = up.servers
    up.acquire(a)
    up.acquire(a)
    up.release(a)
    up.report_failure(a, now=0.0, cause="connection refused")   # counted though passive is off
    b.healthy = False
    b.last_cause = b.last_check_result = "status 503"
    b.last_check = 1764740000.0
    up.set_state(c, "drain")
    snap = up.snapshot(now=0.0)
    assert snap["name"] == "api" and snap["balance"] == "round_robin"
    rows = {r["address"]: r for r in snap["servers"]}
    assert rows["127.0.0.1:1"] == {
        "address": "127.0.0.1:1", "weight": 1, "config_weight": 1, "backup": False, "state": "up", "why": None,
        "in_flight": 1, "requests": 2, "failures": 1, "last_check": None, "last_check_result": None,
        "healthy": True, "ejected_for": 0.0}
    assert rows["127.0.0.1:2"]["state"] == "down"
    assert rows["127.0.0.1:2"]["why"] == "down (active health check: status 503)"
    assert rows["127.0.0.1:2"]["last_check"] == 1764740000.0
    assert rows["127.0.0.1:3"]["state"] == "drain" and rows["127.0.0.1:3"]["why"].startswith("drain")


def test_snapshot_shows_a_passive_ejection():
    up = make(servers=THREE, passive={"max_fails": 1, "fail_timeout": 10})
    up.report_failure(up.servers[0], now=100.0, cause="status 502")
    row = up.snapshot(now=104.0)["servers"][0]
    assert row["state"] == "down" and row["ejected_for"] == 6.0 and row["healthy"] is True
    assert row["why"].startswith("ejected for 6.0s after 1 failure(s) (status 502)")
    assert up.snapshot(now=111.0)["servers"][0]["state"] == "up"
