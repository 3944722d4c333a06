"""`edgeway ctl` as a real process against a real `edgeway serve` (issue 14, "edgeway ctl"):
the target and token from --config, --admin and --token-file, --json output parsed, exit
status 1 with the API's message on every failure, a clear message when nothing listens."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.admin import AdminServe
from tests.support.tools import free_port, run_edgeway

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ctl")
    config = {"upstreams": {"api": {"servers": [{"address": "127.0.0.1:1"}]}},
              "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{free_port()}",
                             "routes": [{"upstream": "api"}]}]}
    with AdminServe(tmp, config) as s:
        yield s


def test_status_as_a_table_and_as_json(serve):
    result = serve.ctl("status")
    assert result.returncode == 0, result.stderr
    assert str(serve.process.proc.pid) in result.stdout
    assert str(serve.path) in result.stdout
    assert f"127.0.0.1:{serve.port}" in result.stdout and "web" in result.stdout
    code, data = serve.ctl_json("status")
    assert code == 0
    assert data["pid"] == serve.process.proc.pid
    assert data["config_file"] == str(serve.path)


def test_admin_and_token_file_options_instead_of_config(serve):
    result = run_edgeway("ctl", "--admin", f"127.0.0.1:{serve.port}", "--token-file", str(serve.token_file),
                         "--json", "status")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pid"] == serve.process.proc.pid


def test_a_wrong_token_exits_1_with_the_apis_message(serve, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    result = serve.ctl("--token-file", str(wrong), "status")
    assert result.returncode == 1
    assert "edgeway ctl: error: the admin API refused the token: wrong bearer token" in result.stderr
    result = serve.ctl("--token-file", str(wrong), "--json", "status")
    assert result.returncode == 1
    assert "wrong bearer token" in json.loads(result.stdout)["error"]


def test_no_token_at_all(serve):
    result = run_edgeway("ctl", "--admin", f"127.0.0.1:{serve.port}", "status")
    assert result.returncode == 1
    assert "no token: give --token-file FILE, or --config FILE" in result.stderr


def test_nothing_listening_is_a_clear_message(serve):
    port = free_port()
    result = run_edgeway("ctl", "--admin", f"127.0.0.1:{port}", "--token-file", str(serve.token_file), "status")
    assert result.returncode == 1
    assert f"cannot reach the admin API at 127.0.0.1:{port}: connection refused" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_edgeway("ctl", "--admin", f"127.0.0.1:{port}", "--token-file", str(serve.token_file),
                         "--json", "status")
    assert result.returncode == 1
    assert "connection refused" in json.loads(result.stdout)["error"]


def test_api_errors_exit_1_with_the_message(serve):
    result = serve.ctl("drain", "nope", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.strip() == "edgeway ctl: error: no upstream 'nope' (known: api)"
    code, data = serve.ctl_json("upstreams", "nope")
    assert code == 1 and data == {"error": "no upstream 'nope' (known: api)"}
    result = serve.ctl("weight", "api", "127.0.0.1:1", "5000")
    assert result.returncode == 1
    assert "invalid weight 5000: expected 1 to 1000" in result.stderr
    result = serve.ctl("cache", "a..b")
    assert result.returncode == 1 and "invalid domain name 'a..b'" in result.stderr


def test_bad_usage_exits_2(serve):
    assert serve.ctl("drain", "api").returncode == 2                  # ADDRESS missing
    assert serve.ctl("weight", "api", "127.0.0.1:1", "many").returncode == 2
    assert serve.ctl("--admin", "nope", "status", config=False).returncode == 2


def test_reload_reaches_the_server_while_the_rest_of_the_config_is_broken(tmp_path):
    # ctl reads only the admin: section, so the server is the one that reports the mistake
    with AdminServe(tmp_path) as serve:
        good = serve.path.read_text()
        serve.write(good + "dns: {listen: ['127.0.0.1:99999']}\n")
        result = serve.ctl("reload")
        assert result.returncode == 1
        assert f"edgeway ctl: error: {serve.path}:" in result.stderr
        assert "dns.listen.0: invalid address" in result.stderr
        code, data = serve.ctl_json("reload")
        assert code == 1 and data["ok"] is False and "dns.listen.0: invalid address" in data["error"]
        code, data = serve.ctl_json("status")
        assert data["last_reload"]["ok"] is False


def test_a_config_without_admin_section(tmp_path):
    config = tmp_path / "edgeway.yaml"
    config.write_text(f"dns: {{listen: ['127.0.0.1:{free_port()}']}}\n")
    result = run_edgeway("ctl", "--config", str(config), "status")
    assert result.returncode == 1
    assert f"{config} has no admin: section, so the runtime API is off" in result.stderr


def test_an_invalid_admin_section_names_file_line_key(tmp_path):
    config = tmp_path / "edgeway.yaml"
    config.write_text("dns: {listen: ['127.0.0.1:5300']}\nadmin:\n  listen: nope\n  token_file: t\n")
    (tmp_path / "t").write_text("abc")
    os.chmod(tmp_path / "t", 0o600)
    result = run_edgeway("ctl", "--config", str(config), "status")
    assert result.returncode == 1
    assert f"{config}:3: admin.listen: invalid address" in result.stderr


def test_help_lists_ctl():
    result = run_edgeway("--help")
    assert result.returncode == 0 and "ctl" in result.stdout
    result = run_edgeway("ctl", "--help")
    assert result.returncode == 0
    for verb in ("status", "upstreams", "drain", "ready", "maint", "weight", "reload", "flush", "cache",
                 "zone-reload"):
        assert verb in result.stdout
