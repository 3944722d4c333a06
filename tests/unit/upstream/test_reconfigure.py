"""Upstream.reconfigure and HealthChecker.reconfigure: what a reload keeps, drops and adds."""

import asyncio

import pytest

from edgeway.config.model import UpstreamConfig
from edgeway.upstream import HealthChecker, Upstream, UpstreamError

from .helpers import make, ports

HC = {"interval": 60, "timeout": 0.2, "rise": 2, "fall": 2}


def cfg(*servers, **extra):
    return UpstreamConfig.model_validate(
        {"servers": [s if isinstance(s, dict) else {"address": s} for s in servers], **extra})


def test_kept_servers_keep_their_object_health_counters_state_and_id():
    up = make(servers=(("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)))
    a, b, c = up.servers
    up.acquire(a)
    b.healthy = False
    up.set_state(c, "drain")
    up.reconfigure(cfg("127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:4", balance="least_conn"))
    assert up.servers[0] is c and up.servers[1] is a
    assert a.in_flight == 1 and a.requests == 1 and c.state == "drain"
    assert up.algorithm == "least_conn" and up.config.balance == "least_conn"
    new = up.servers[2]
    assert str(new) == "127.0.0.1:4" and new.state == "ready" and not new.pending   # no health check
    assert up.find(c.id) is c and up.find(b.id) is None       # removed: its cookies are balanced anew
    assert up.server("127.0.0.1:2") is None
    assert ports(up.pick(now=0.0) for _ in range(2)) == [4, 4]   # least_conn: 1 has a request
    up.release(a)
    assert sorted(ports(up.pick(now=0.0) for _ in range(4))) == [1, 1, 4, 4]
    # a request still on a removed server completes and counts down on the object it holds
    up.acquire(b)
    up.release(b)
    assert b.in_flight == 0


def test_runtime_weight_survives_unless_the_config_weight_changed():
    up = make(servers=(("127.0.0.1:1", 1), ("127.0.0.1:2", 1)))
    up.set_weight("127.0.0.1:1", 7)
    up.set_weight("127.0.0.1:2", 7)
    up.reconfigure(cfg({"address": "127.0.0.1:1", "weight": 1}, {"address": "127.0.0.1:2", "weight": 3}))
    one, two = up.servers
    assert one.weight == 7 and one.runtime_weight == 7          # config said the same: kept
    assert two.weight == 3 and two.runtime_weight is None and two.config_weight == 3   # HAProxy's rule
    up.reconfigure(cfg({"address": "127.0.0.1:1", "weight": 2}, {"address": "127.0.0.1:2", "weight": 3}))
    assert one.weight == 2 and one.runtime_weight is None


def test_backup_max_conns_and_passive_follow_the_config():
    up = make(servers=(("127.0.0.1:1", 1),), backups=("127.0.0.1:2",))
    up.reconfigure(cfg("127.0.0.1:2", {"address": "127.0.0.1:1", "backup": True, "max_conns": 1},
                       passive={"max_fails": 2, "fail_timeout": 5}))
    two, one = up.servers
    assert not two.backup and one.backup and one.max_conns == 1
    assert ports(up.pick(now=0.0) for _ in range(2)) == [2, 2]
    assert not up.report_failure(two, now=0.0) and two.fails == 1       # max_fails 2 now
    up.report_failure(two, now=1.0)
    assert two.ejected_until == 6.0


def test_duplicate_addresses_are_matched_in_order():
    up = make(servers=(("127.0.0.1:1", 1), ("127.0.0.1:1", 2)))
    first, second = up.servers
    up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:1"))
    assert up.servers == [first, second]


def test_prepare_is_pure():
    up = make(servers=(("127.0.0.1:1", 1),))
    before = up.servers[0]
    up.prepare(cfg("127.0.0.1:9", balance="hash", hash_key="$remote_addr"))
    assert up.servers == [before] and up.algorithm == "round_robin"
    bogus = cfg("127.0.0.1:9").model_copy(update={"balance": "fastest"})
    with pytest.raises(UpstreamError, match="upstream api: unknown balancing algorithm 'fastest'"):
        up.prepare(bogus)


# ------------------------------------------------------------------ new servers and checks


class AttachedChecker:
    """Stands for a running HealthChecker: what Upstream.reconfigure looks at."""


def checked(*servers):
    up = Upstream("api", cfg(*servers, health_check=HC))
    up.checker = AttachedChecker()
    return up


def test_new_server_waits_for_its_first_check_while_others_serve():
    up = checked("127.0.0.1:1")
    up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:2", health_check=HC))
    new = up.server("127.0.0.1:2")
    assert new.pending and ports(up.pick(now=0.0) for _ in range(4)) == [1, 1, 1, 1]
    assert up.find(new.id) is None
    assert up.snapshot(0.0)["servers"][1]["state"] == "checking"
    checker = HealthChecker(up)
    assert checker.record(new, True, "status 200", wall=5.0)
    assert not new.pending and new.healthy and new.last_check == 5.0 and new.last_check_result == "status 200"
    assert sorted(ports(up.pick(now=0.0) for _ in range(4))) == [1, 1, 2, 2]


def test_new_server_failing_its_first_check_is_down_at_once():
    up = checked("127.0.0.1:1")
    up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:2", health_check=HC))
    new = up.server("127.0.0.1:2")
    checker = HealthChecker(up)
    checker.record(new, False, "connection refused")
    assert not new.pending and not new.healthy
    assert ports(up.pick(now=0.0) for _ in range(3)) == [1, 1, 1]
    checker.record(new, True, "status 200")            # then rise (2) passing checks as usual
    assert not new.healthy
    checker.record(new, True, "status 200")
    assert new.healthy


@pytest.mark.parametrize("before", ["replaced", "down", "maint"])
def test_new_servers_serve_at_once_when_nothing_else_is_in_rotation(before):
    up = checked("127.0.0.1:1")
    if before == "down":
        up.servers[0].healthy = False
    elif before == "maint":
        up.set_state("127.0.0.1:1", "maint")
    servers = ["127.0.0.1:2", "127.0.0.1:3"] if before == "replaced" else ["127.0.0.1:1", "127.0.0.1:2"]
    up.reconfigure(cfg(*servers, health_check=HC))
    assert up.pick(now=0.0) is not None and up.pick(now=0.0).address.port != 1
    assert not any(s.pending for s in up.servers)


def test_no_running_checker_means_no_waiting():
    # a new server would otherwise wait for a check that never comes
    up = Upstream("api", cfg("127.0.0.1:1", health_check=HC))
    up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:2", health_check=HC))
    assert not up.server("127.0.0.1:2").pending


def test_health_check_removed_brings_every_server_back():
    up = checked("127.0.0.1:1", "127.0.0.1:2")
    up.servers[1].healthy = False
    up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"))
    assert all(s.healthy and not s.pending for s in up.servers)


async def test_checker_reconfigure_tasks_follow_the_servers_and_keep_hysteresis():
    up = Upstream("api", cfg("127.0.0.1:1", "127.0.0.1:2", health_check=HC))
    checker = HealthChecker(up)
    await checker.start()
    try:
        one, two = up.servers
        assert set(checker._tasks) == {one, two} and up.checker is checker
        checker.record(one, False, "status 503")
        checker.record(one, False, "status 503")
        assert not one.healthy
        hysteresis = checker.states[one]
        old_one_task, old_two_task = checker._tasks[one], checker._tasks[two]

        up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:3", health_check=HC))
        checker.reconfigure()
        three = up.server("127.0.0.1:3")
        assert set(checker._tasks) == {one, three}
        assert checker._tasks[one] is old_one_task           # same settings: the task goes on
        assert checker.states[one] is hysteresis and not one.healthy
        await asyncio.sleep(0)
        assert old_two_task.cancelled() or old_two_task.done()

        up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:3", health_check={**HC, "rise": 5, "path": "/ready"}))
        checker.reconfigure()
        assert checker._tasks[one] is not old_one_task       # new settings: every task restarts
        assert checker.states[one] is hysteresis and hysteresis.rise == 5 and not one.healthy

        up.reconfigure(cfg("127.0.0.1:1", "127.0.0.1:3"))
        checker.reconfigure()
        assert checker._tasks == {} and one.healthy

        up.reconfigure(cfg("127.0.0.1:1", health_check=HC))  # and back on
        checker.reconfigure()
        assert set(checker._tasks) == {one}
    finally:
        await checker.stop()
    assert checker._tasks == {} and checker._stopping == set() and up.checker is None
