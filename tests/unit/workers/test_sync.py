"""The health view across processes, sans-IO: a supervisor's Upstream and two workers' Upstreams
built from the same config, joined by the sync messages passed through JSON (as the control
channel carries them), with a fake clock."""

from __future__ import annotations

import json

import pytest

from edgeway.config.model import UpstreamConfig
from edgeway.upstream import HealthChecker, Upstream
from edgeway.workers import sync

A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


def config(servers=(A, B), **extra) -> UpstreamConfig:
    return UpstreamConfig.model_validate({"servers": [{"address": a} for a in servers], **extra})


def group(n_workers=2, **extra):
    """(supervisor upstreams, [worker upstreams...]) of one upstream "api"."""
    make = lambda: {"api": Upstream("api", config(**extra), seed=1)}   # noqa: E731
    return make(), [make() for _ in range(n_workers)]


def wire(msg: dict) -> dict:
    """Through the channel: JSON there and back."""
    return json.loads(json.dumps(msg))


def broadcast(sup, workers):
    for msg in sync.full_state(sup):
        for w in workers:
            sync.apply_state(w, wire(msg))


def servers(upstreams, name="api"):
    return {s.label: s for s in upstreams[name].servers}


# ---------------------------------------------------------------------- state


def test_state_round_trip_makes_the_worker_see_what_the_supervisor_sees():
    sup, (w1, w2) = group(health_check={"interval": "1s"})
    s = servers(sup)
    s[A].healthy = False
    s[A].last_cause = "status 503"
    s[A].last_check, s[A].last_check_result = 1700000000.0, "status 503"
    sup["api"].set_state(B, "drain")
    sup["api"].set_weight(B, 7)
    broadcast(sup, [w1, w2])
    for w in (w1, w2):
        got = servers(w)
        assert (got[A].healthy, got[A].last_cause, got[A].last_check_result) == (False, "status 503", "status 503")
        assert (got[B].state, got[B].weight, got[B].runtime_weight) == ("drain", 7, 7)
        # the lists pick() walks were rebuilt: only A is in rotation, and it is down
        assert w["api"].pick(now=0.0) is None
        assert sync.state_message(w["api"])["servers"] == sync.state_message(sup["api"])["servers"]


def test_a_state_that_changes_nothing_says_so():
    sup, (w1, _) = group()
    (msg,) = sync.full_state(sup)
    assert sync.apply_state(w1, wire(msg)) is False
    servers(sup)[A].healthy = False
    assert sync.apply_state(w1, wire(sync.state_message(sup["api"]))) is True
    assert sync.apply_state(w1, wire(sync.state_message(sup["api"]))) is False


def test_back_to_ready_and_weight_dropped_follow_too():
    sup, (w1, _) = group()
    sup["api"].set_state(A, "maint")
    sup["api"].set_weight(A, 9)
    broadcast(sup, [w1])
    sup["api"].set_state(A, "ready")
    sup["api"].reset_weight(A)
    broadcast(sup, [w1])
    got = servers(w1)[A]
    assert (got.state, got.weight, got.runtime_weight) == ("ready", 1, None)
    assert {w1["api"].pick(now=0.0).label for _ in range(4)} == {A, B}


def test_unknown_upstream_and_server_are_ignored():
    # a reload half-way: the supervisor still names what the worker no longer has, and back
    sup, (w1, _) = group(servers=(A, B, C))
    worker = {"api": Upstream("api", config(servers=(A,)), seed=1)}
    for s in sup["api"].servers:
        s.healthy = False
    assert sync.apply_state(worker, wire(sync.state_message(sup["api"]))) is True
    assert not servers(worker)[A].healthy
    assert sync.apply_state(worker, {"t": "state", "upstream": "gone", "servers": [{"address": A}]}) is False
    assert sync.apply_state({}, wire(sync.state_message(sup["api"]))) is False


def test_ejection_lasts_until_the_later_deadline():
    sup, (w1, _) = group()
    servers(w1)[A].ejected_until = 500.0          # the worker's own passive check
    servers(sup)[A].ejected_until = 300.0
    broadcast(sup, [w1])
    assert servers(w1)[A].ejected_until == 500.0
    servers(sup)[A].ejected_until = 800.0
    servers(sup)[A].fails = 3
    broadcast(sup, [w1])
    assert servers(w1)[A].ejected_until == 800.0
    assert "after 3 failure(s)" in servers(w1)[A].why_unavailable(600.0)


def test_a_first_check_lets_the_new_server_into_rotation_in_every_worker():
    sup, workers = group()
    for ups in (sup, *workers):
        servers(ups)[B].pending = True
        ups["api"]._refresh()
    assert {workers[0]["api"].pick(now=0.0).label for _ in range(4)} == {A}
    servers(sup)[B].pending = False
    broadcast(sup, workers)
    for w in workers:
        assert {w["api"].pick(now=0.0).label for _ in range(4)} == {A, B}


def test_a_weight_of_another_config_weight_is_not_adopted():
    # the worker runs the new config (weight 5 for A), the supervisor the old one still
    sup, _ = group()
    sup["api"].set_weight(A, 3)
    worker = {"api": Upstream("api", UpstreamConfig.model_validate(
        {"servers": [{"address": A, "weight": 5}, {"address": B}]}), seed=1)}
    sync.apply_state(worker, wire(sync.state_message(sup["api"])))
    assert (servers(worker)[A].weight, servers(worker)[A].runtime_weight) == (5, None)


def test_an_address_listed_twice_is_matched_in_order():
    sup = {"api": Upstream("api", config(servers=(A, A, B)), seed=1)}
    worker = {"api": Upstream("api", config(servers=(A, A, B)), seed=1)}
    sup["api"].servers[1].healthy = False
    sync.apply_state(worker, wire(sync.state_message(sup["api"])))
    assert [s.healthy for s in worker["api"].servers] == [True, False, True]


# ---------------------------------------------------------------------- the change hook


def test_watch_hears_every_kind_of_change():
    up = Upstream("api", config(health_check={"interval": "1s", "fall": 1}, passive={"max_fails": 1}), seed=1)
    heard = []
    sync.watch({"api": up}, heard.append)
    checker = HealthChecker(up)
    checker.record(up.servers[0], False, "status 503", wall=1.0)     # fall 1: down
    assert len(heard) == 1
    checker.record(up.servers[0], False, "status 503", wall=2.0)     # still down: nothing
    assert len(heard) == 1
    up.set_state(A, "drain")
    up.set_state(A, "drain")                                         # no change: nothing
    up.set_weight(B, 4)
    up.reset_weight(B)
    up.report_failure(up.servers[1], 10.0, "refused")                # max_fails 1: ejected
    up.reconfigure(config(servers=(A, B, C), health_check={"interval": "1s"}))
    assert len(heard) == 6 and all(u is up for u in heard)


def test_a_first_check_is_heard():
    up = Upstream("api", config(health_check={"interval": "1s"}), seed=1)
    checker = HealthChecker(up)
    up.checker = checker
    up.reconfigure(config(servers=(A, B, C), health_check={"interval": "1s"}))
    new = up.servers[2]
    assert new.pending
    heard = []
    sync.watch({"api": up}, heard.append)
    checker.record(new, True, "status 200", wall=1.0)
    assert heard == [up] and not new.pending


def test_without_hooks_nothing_is_called():
    up = Upstream("api", config(passive={"max_fails": 1}), seed=1)
    assert up.on_change is None and up.on_failure is None
    up.report_failure(up.servers[0], 1.0, "refused")    # no hook: no error
    up.set_state(A, "maint")


# ---------------------------------------------------------------------- failures


def test_failures_of_two_workers_add_up_to_max_fails_in_the_supervisor():
    sup, (w1, w2) = group(passive={"max_fails": 3, "fail_timeout": 10})
    sent = []
    sync.report_failures(w1, sent.append)
    sync.report_failures(w2, sent.append)
    w1["api"].report_failure(servers(w1)[A], 100.0, "refused")
    w2["api"].report_failure(servers(w2)[A], 100.5, "refused")
    # neither worker alone reached max_fails: A is still in both
    assert servers(w1)[A].available(101.0) and servers(w2)[A].available(101.0)
    assert [sync.apply_failure(sup, wire(m)) for m in sent] == [False, False]
    sent.clear()
    w2["api"].report_failure(servers(w2)[A], 101.0, "reset")
    (msg,) = sent
    assert msg == {"t": "failure", "upstream": "api", "address": A, "now": 101.0, "cause": "reset"}
    assert sync.apply_failure(sup, wire(msg)) is True                # the third in the group
    broadcast(sup, [w1, w2])
    for w in (w1, w2):
        assert not servers(w)[A].available(105.0)
        assert servers(w)[A].available(111.0)
        assert {w["api"].pick(now=105.0).label for _ in range(4)} == {B}


def test_failures_spread_beyond_fail_timeout_do_not_eject_the_group():
    sup, _ = group(passive={"max_fails": 2, "fail_timeout": 10})
    msg = lambda now: {"t": "failure", "upstream": "api", "address": A, "now": now, "cause": "refused"}  # noqa: E731
    assert sync.apply_failure(sup, msg(0.0)) is False
    assert sync.apply_failure(sup, msg(11.0)) is False
    assert sync.apply_failure(sup, msg(12.0)) is True


@pytest.mark.parametrize("msg", [
    {"t": "failure", "upstream": "gone", "address": A, "now": 1.0, "cause": "x"},
    {"t": "failure", "upstream": "api", "address": C, "now": 1.0, "cause": "x"},
])
def test_a_failure_on_something_removed_by_a_reload_is_ignored(msg):
    sup, _ = group(passive={"max_fails": 1})
    assert sync.apply_failure(sup, msg) is False


def test_checking_decided_by_the_supervisors_reload_is_adopted():
    sup, (w1, _) = group()
    servers(sup)[B].pending = True
    assert sync.apply_state(w1, wire(sync.state_message(sup["api"]))) is True
    assert servers(w1)[B].pending
    assert {w1["api"].pick(now=0.0).label for _ in range(4)} == {A}


def test_without_passive_checks_a_worker_sends_no_failure():
    _, (w1, _) = group(passive={"max_fails": 0})
    sent = []
    sync.report_failures(w1, sent.append)
    w1["api"].report_failure(servers(w1)[A], 1.0, "refused")
    assert sent == [] and servers(w1)[A].failures == 1
