"""`edgeway ctl workers`'s table (the API's rows in, text out; the real process is in
tests/integration/test_workers_group.py)."""

from __future__ import annotations

from edgeway.admin import ctl


def test_the_workers_table_shows_each_worker(capsys):
    ctl.print_workers([
        {"index": 1, "pid": 4242, "generation": 2, "state": "running", "started_at": 1.0, "uptime": 3725.0,
         "restarts": 1, "last_exit": "killed by SIGKILL", "requests": 120},
        {"index": 2, "pid": 4243, "generation": 2, "state": "starting", "started_at": 1.0, "uptime": None,
         "restarts": 0, "last_exit": None, "requests": 0},
    ])
    out = capsys.readouterr().out
    line1 = next(line for line in out.splitlines() if "4242" in line)
    assert "running" in line1 and "1h2m5s" in line1 and "killed by SIGKILL" in line1 and "120" in line1
    assert "starting" in next(line for line in out.splitlines() if "4243" in line)


def test_one_process_says_so(capsys):
    ctl.print_workers([])
    assert capsys.readouterr().out.strip() == "one process (workers: 1): no worker processes"


def test_upstreams_per_worker_adds_a_column_only_when_asked(capsys):
    row = {"address": "127.0.0.1:1", "state": "up", "weight": 1, "in_flight": 0, "requests": 42, "failures": 0}
    ctl.print_upstreams([{"name": "api", "balance": "round_robin", "servers": [row]}])
    assert "per worker" not in capsys.readouterr().out
    row["workers"] = [{"worker": 0, "requests": 30}, {"worker": 1, "requests": 12}]
    ctl.print_upstreams([{"name": "api", "balance": "round_robin", "servers": [row]}])
    out = capsys.readouterr().out
    assert "per worker" in out and "w0: 30  w1: 12" in out
