"""The UDP flow table on a fake clock: stickiness, expiry, LRU eviction."""

import pytest
from hypothesis import given, strategies as st

from edgeway.l4.flows import FlowTable

A, B, C = ("10.0.0.1", 1000), ("10.0.0.2", 1000), ("10.0.0.3", 1000)


def test_a_flow_sticks_while_active_and_expires_when_idle():
    table = FlowTable(timeout=30, max_flows=10)
    flow, removed = table.add(A, "s1", now=0)
    assert removed == []
    for t in (10, 39, 68):                  # each datagram refreshes the flow
        assert table.get(A, now=t) is flow
    assert table.expire(now=97) == []
    assert table.get(A, now=98) is None     # idle 30 s: gone for new datagrams
    assert table.expire(now=98) == [flow]
    assert len(table) == 0 and table.expirations == 1


def test_replies_keep_a_flow_alive():
    table = FlowTable(timeout=5, max_flows=10)
    flow, _ = table.add(A, "s1", now=0)
    table.touch(flow, now=4)
    assert table.expire(now=8) == []
    assert table.get(A, now=8.5) is flow


def test_expired_flow_is_replaced_and_returned_for_closing():
    table = FlowTable(timeout=5, max_flows=10)
    old, _ = table.add(A, "s1", now=0)
    assert table.get(A, now=6) is None
    new, removed = table.add(A, "s2", now=6)
    assert removed == [old] and table.get(A, now=7) is new


def test_full_table_evicts_the_least_recently_used():
    table = FlowTable(timeout=100, max_flows=2)
    fa, _ = table.add(A, "s", now=0)
    fb, _ = table.add(B, "s", now=1)
    table.get(A, now=2)                     # A is now more recent than B
    fc, removed = table.add(C, "s", now=3)
    assert removed == [fb] and table.evictions == 1
    assert table.get(B, now=4) is None and table.get(A, now=4) is fa and table.get(C, now=4) is fc


def test_expire_returns_only_what_expired_in_order():
    table = FlowTable(timeout=10, max_flows=10)
    flows = [table.add((f"10.0.0.{i}", 1), "s", now=i)[0] for i in range(5)]
    assert table.next_expiry() == 10
    assert table.expire(now=12) == flows[:3]
    assert table.next_expiry() == 13
    assert table.remove(flows[3]) and not table.remove(flows[3])
    assert [f.client for f in table] == [flows[4].client]


def test_bad_parameters():
    with pytest.raises(ValueError):
        FlowTable(timeout=0, max_flows=1)
    with pytest.raises(ValueError):
        FlowTable(timeout=1, max_flows=0)


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 3)), max_size=60), st.integers(1, 4))
def test_invariants(events, max_flows):
    """Never more than max_flows; a returned flow is always live; expiry order = last use order."""
    table = FlowTable(timeout=2, max_flows=max_flows)
    now = 0.0
    for client, dt in events:
        now += dt
        flow = table.get(client, now)
        if flow is None:
            flow, _ = table.add(client, "s", now)
        assert now - flow.last_seen < table.timeout
        assert len(table) <= max_flows
        expired = table.expire(now)
        assert all(now - f.last_seen >= table.timeout for f in expired)
        seen = [f.last_seen for f in table]
        assert seen == sorted(seen)
