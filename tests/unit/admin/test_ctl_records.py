"""`edgeway ctl records`'s tables, and doctor's verdict on them: rows made by the real
PolicyRecord.explain over real upstreams (the process is in tests/integration/test_admin_records.py)."""

from __future__ import annotations

import time

from edgeway.admin import ctl
from edgeway.config import load_config_text
from edgeway.dns.records import RecordSet
from edgeway.doctor.dnscheck import judge_records
from edgeway.upstream import build_upstreams

CONFIG = """
upstreams:
  east: {servers: [{address: "10.0.0.1:80"}, {address: "10.0.0.2:80"}]}
  west: {servers: [{address: "10.0.1.1:80"}]}
dns:
  listen: ["127.0.0.1:5300"]
  records:
    - {name: api.example.com., type: A, ttl: 20s, policy: failover, when_all_down: WHEN,
       targets: [{upstream: east}, {upstream: west}]}
    - {name: w.example.com., type: A, policy: weighted, targets: [{upstream: east, weight: 3}, {upstream: west}]}
"""


def explained(when: str = "all", down: tuple[str, ...] = ()) -> list[dict]:
    config = load_config_text(CONFIG.replace("WHEN", when))
    upstreams = build_upstreams(config.upstreams)
    for name in down:
        for server in upstreams[name].servers:
            server.healthy = False
    records = RecordSet(config.dns.records, upstreams, [])
    out = []
    for record in records:
        row = record.explain(time.monotonic())
        row["answers"], row["all_down"] = {"upstream:east": 7}, {"all": 2}
        out.append(row)
    return out


def line_with(out: str, text: str) -> str:
    return next(line for line in out.splitlines() if text in line)


def test_each_record_in_one_line_then_its_targets(capsys):
    ctl.print_records(explained(down=("east",)))
    out = capsys.readouterr().out
    row = line_with(out, "api.example.com.")
    assert "failover" in row and "normal" in row and "10.0.1.1" in row and "upstream:west" in row
    east = [cell.strip() for cell in line_with(out, "│ upstream:east").split("│")]
    assert east[1:4] == ["upstream:east", "upstream", "no"] and "10.0.0.1 (upstream east: 10.0.0.1:80 down" in east[4]
    assert east[5] == "7"
    assert "weight" in out          # the weighted record's targets show their weights
    assert "answered in when_all_down mode: all 2" in out


def test_all_down_is_marked_with_its_mode(capsys):
    ctl.print_records(explained("servfail", down=("east", "west")))
    row = line_with(capsys.readouterr().out, "api.example.com.")
    assert "all_down (servfail)" in row and "SERVFAIL" in row


def test_no_records(capsys):
    ctl.print_records([])
    assert capsys.readouterr().out.strip() == "no policy records (dns.records is empty)"


def test_doctor_says_when_a_record_answers_in_when_all_down_mode():
    verdict = judge_records(explained("nodata", down=("east", "west"))[:1], "A")
    (line,) = verdict.down
    assert line.startswith("api.example.com. A answers in when_all_down mode (nodata: NODATA (no address))")
    assert "upstream:east (10.0.0.1 " in line and "upstream:west (10.0.1.1 " in line
    # a record with a target down but answering: a note, not a failure
    verdict = judge_records(explained(down=("east",))[:1], "A")
    assert verdict.down == [] and "1 of 2 target(s) down" in verdict.notes[0]
    # another type at the name is not this question
    assert judge_records(explained("nodata", down=("east", "west")), "AAAA").down == []


def test_doctor_notes_that_weighted_answers_vary():
    verdict = judge_records(explained()[1:], "A")
    assert verdict.down == [] and "may answer each query differently" in verdict.notes[0]
