from hypothesis import given
from hypothesis import strategies as st

from edgeway.upstream import Hysteresis

from .helpers import make


def test_passive_max_fails_within_fail_timeout_ejects_for_fail_timeout():
    up = make(servers=(("127.0.0.1:1", 1), ("127.0.0.1:2", 1)), passive={"max_fails": 3, "fail_timeout": 10})
    s = up.servers[0]
    up.report_failure(s, 100.0, "connection refused")
    up.report_failure(s, 101.0, "connection refused")
    assert s.available(101.0)
    up.report_failure(s, 102.0, "connection refused")
    assert not s.available(102.0) and not s.available(111.9)
    assert "connection refused" in s.why_unavailable(105.0)
    assert {up.pick(now=105.0).address.port for _ in range(4)} == {2}
    assert s.available(112.0)


def test_passive_failures_spread_beyond_fail_timeout_do_not_eject():
    up = make(passive={"max_fails": 2, "fail_timeout": 10})
    s = up.servers[0]
    up.report_failure(s, 0.0, "reset")
    up.report_failure(s, 11.0, "reset")
    assert s.available(11.0)
    up.report_failure(s, 12.0, "reset")
    assert not s.available(12.0)


def test_passive_success_resets_count_and_zero_disables():
    up = make(passive={"max_fails": 2, "fail_timeout": 10})
    s = up.servers[0]
    up.report_failure(s, 0.0, "reset")
    up.report_success(s, 1.0)
    up.report_failure(s, 2.0, "reset")
    assert s.available(2.0)
    off = make(passive={"max_fails": 0, "fail_timeout": 10})
    for t in range(10):
        off.report_failure(off.servers[0], float(t), "reset")
    assert off.servers[0].available(10.0)


def test_default_passive_is_one_fail_ten_seconds():
    up = make()
    up.report_failure(up.servers[0], 0.0, "reset")
    assert not up.servers[0].available(9.9) and up.servers[0].available(10.0)


def test_hysteresis_fall_and_rise():
    h = Hysteresis(rise=2, fall=3)
    assert [h.record(False) for _ in range(3)] == [False, False, True] and not h.healthy
    assert [h.record(True), h.record(True)] == [False, True] and h.healthy


def test_hysteresis_flapping_never_changes_state():
    h = Hysteresis(rise=2, fall=2)
    for _ in range(20):
        assert not h.record(False)
        assert not h.record(True)
    assert h.healthy


@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.booleans(), max_size=60))
def test_hysteresis_changes_only_after_a_full_streak(rise, fall, results):
    h = Hysteresis(rise, fall)
    streak_value, streak = None, 0
    for ok in results:
        before = h.healthy
        streak = streak + 1 if ok == streak_value else 1
        streak_value = ok
        changed = h.record(ok)
        assert changed == (h.healthy != before)
        if changed:
            assert h.healthy == ok and streak >= (rise if ok else fall)
