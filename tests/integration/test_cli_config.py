"""`edgeway check` and `edgeway serve` as real processes, on valid and invalid configs."""

from tests.support.tools import run_edgeway


def test_check_reports_every_error_with_file_line_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "dns:\n  listen: [\"127.0.0.1:99999\"]\n  zones:\n    - file: missing.zone\n"
        "upstreams:\n  api:\n    balance: lest_conn\n    servers: [{address: \"127.0.0.1:1\"}]\n"
    )
    result = run_edgeway("check", str(config))
    assert result.returncode != 0
    assert f"{config}:2: dns.listen.0: invalid address" in result.stderr
    assert f"{config}:4: dns.zones.0.file: file not found" in result.stderr
    assert f"{config}:7: upstreams.api.balance:" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_invalid_config_the_same_way(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("dns:\n  listen: [\"127.0.0.1:5300\"]\n  zonez: []\n")
    result = run_edgeway("serve", "--config", str(config))
    assert result.returncode != 0
    assert f"{config}:3: dns.zonez: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_of_a_missing_file(tmp_path):
    result = run_edgeway("check", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0
    assert "cannot read config" in result.stderr


def test_help_lists_commands_without_importing_them():
    result = run_edgeway("--help")
    assert result.returncode == 0
    for name in ("serve", "check", "dig", "demo"):
        assert name in result.stdout
