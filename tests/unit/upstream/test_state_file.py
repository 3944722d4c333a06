"""The state file: round trip, atomic write, tolerant load, HAProxy's weight rule."""

import json
import logging
import os

from edgeway.config.model import UpstreamConfig
from edgeway.upstream import Upstream, state_file


def upstreams(weights=(1, 1, 1)):
    cfg = {"servers": [{"address": f"127.0.0.1:{i + 1}", "weight": w} for i, w in enumerate(weights)]}
    return {"api": Upstream("api", UpstreamConfig.model_validate(cfg))}


def test_round_trip_restores_states_and_runtime_weights(tmp_path):
    path = tmp_path / "state.json"
    ups = upstreams()
    ups["api"].set_state("127.0.0.1:1", "drain")
    ups["api"].set_state("127.0.0.1:2", "maint")
    ups["api"].set_weight("127.0.0.1:3", 9)
    state_file.save(path, ups)
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["upstreams"]["api"]["127.0.0.1:3"] == {"state": "ready", "weight": 9, "config_weight": 1}

    fresh = upstreams()
    assert state_file.apply(fresh, state_file.load(path)) == []
    one, two, three = fresh["api"].servers
    assert (one.state, two.state, three.state) == ("drain", "maint", "ready")
    assert three.weight == 9 and three.runtime_weight == 9 and one.weight == 1
    assert [s.address.port for s in fresh["api"].primaries] == [3]


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old content")
    ups = upstreams()
    state_file.save(path, ups)
    assert os.listdir(tmp_path) == ["state.json"]
    assert json.loads(path.read_text())["upstreams"]["api"]["127.0.0.1:1"]["state"] == "ready"


def test_save_into_a_missing_directory_fails_and_keeps_nothing(tmp_path):
    try:
        state_file.save(tmp_path / "nope" / "state.json", upstreams())
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("saving into a missing directory must fail")
    assert os.listdir(tmp_path) == []


def test_load_is_tolerant(tmp_path, caplog):
    assert state_file.load(tmp_path / "absent.json") == {}      # first start: no warning
    assert caplog.records == []
    cases = {"broken.json": ("{not json", "not valid JSON"),
             "list.json": ("[1, 2]", 'no "upstreams" object'),
             "future.json": ('{"version": 7, "upstreams": {}}', "version 7, expected 1")}
    for name, (text, warning) in cases.items():
        (tmp_path / name).write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "edgeway.state"):
            assert state_file.load(tmp_path / name) == {}
        assert warning in caplog.text and name in caplog.text and "starting from the config" in caplog.text


def test_apply_warns_for_what_it_cannot_set():
    data = {"version": 1, "upstreams": {
        "gone": {"127.0.0.1:1": {"state": "maint"}},
        "api": {"127.0.0.1:7": {"state": "maint"},
                "127.0.0.1:1": {"state": "sleeping", "weight": 5, "config_weight": 1},
                "127.0.0.1:2": {"state": "drain", "weight": 5, "config_weight": 4},
                "127.0.0.1:3": {"state": "ready", "weight": 5000, "config_weight": 1}}}}
    ups = upstreams()
    warnings = state_file.apply(ups, data)
    assert warnings == [
        "state file: upstream 'gone' is not in the config; skipped",
        "state file: upstream api has no server 127.0.0.1:7 any more; skipped",
        "state file: upstream api server 127.0.0.1:1: invalid state 'sleeping'; kept ready",
        "state file: upstream api server 127.0.0.1:2: the config's weight changed (4 -> 1); runtime weight 5 dropped",
        "state file: upstream api server 127.0.0.1:3: invalid weight 5000: expected an integer from 1 to 1000; kept 1",
    ]
    one, two, three = ups["api"].servers
    assert one.weight == 5 and one.state == "ready"         # its weight was still valid
    assert two.state == "drain" and two.weight == 1 and two.runtime_weight is None
    assert three.weight == 1
