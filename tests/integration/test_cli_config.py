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


def test_check_names_the_zone_file_and_line_of_a_zone_error(tmp_path):
    (tmp_path / "z.zone").write_text("$ORIGIN z.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 1.2.3\n")
    config = tmp_path / "edgeway.yaml"
    config.write_text("dns:\n  listen: [\"127.0.0.1:5300\"]\n  zones:\n    - file: z.zone\n")
    for command in (["check", str(config)], ["serve", "--config", str(config)]):
        result = run_edgeway(*command)
        assert result.returncode == 1
        assert f"dns.zones.0: {tmp_path / 'z.zone'}:5:" in result.stderr
        assert "Traceback" not in result.stderr


def test_shipped_example_configs_are_valid():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    configs = sorted(p for p in examples.rglob("*.yaml") if p.name == "edgeway.yaml")
    assert configs
    for config in configs:
        result = run_edgeway("check", str(config))
        assert result.returncode == 0, (config, result.stderr)


def test_demo_with_a_config_runs_it_in_process():
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "src/edgeway/data/demo-authoritative/demo.yaml"
    result = run_edgeway("demo", "--once", "--config", str(config), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "api-lb-123.example.com. 60 IN A 127.0.0.10" in result.stdout
