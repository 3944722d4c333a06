"""Issue 18's config: tsig_keys, allow_transfer, notify, max_journal, journal_dir,
secondary_zones; every mistake named by file, line and key."""

import textwrap
from pathlib import Path

import pytest

from edgeway.config import ConfigError, load_config
from edgeway.dns.tsig import load_keyring

ZONE = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.1\n"
SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
CONFIG = """
dns:
  listen: ["127.0.0.1:5300"]
  tsig_keys:
    - {name: xfr-key., algorithm: hmac-sha256, secret_file: keys/xfr.key}
    - {name: block-key, algorithm: hmac-sha512, secret_file: keys/block.key}
  zones:
    - file: zones/example.com.zone
      origin: example.com.
      allow_transfer: [{from: 127.0.0.0/8, key: xfr-key.}, {from: "::1"}]
      notify: ["127.0.0.12:53", "127.0.0.13"]
      max_journal: 5
  secondary_zones:
    - origin: example.net.
      primaries: ["127.0.0.20:53"]
      key: xfr-key
      file: secondaries/example.net.zone
      allow_notify: [127.0.0.20]
"""


def write(tmp_path: Path, text: str = CONFIG, key_text: str = SECRET + "\n") -> Path:
    (tmp_path / "zones").mkdir(exist_ok=True)
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "zones" / "example.com.zone").write_text(ZONE)
    (tmp_path / "keys" / "xfr.key").write_text(key_text)
    (tmp_path / "keys" / "block.key").write_text(
        f'key "block-key" {{\n\talgorithm hmac-sha512;\n\tsecret "{SECRET}";\n}};\n')
    path = tmp_path / "edgeway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str = CONFIG, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text, **kw))
    return str(info.value)


def test_the_contract_shape_loads(tmp_path):
    config = load_config(write(tmp_path))
    dns_config = config.dns
    zone = dns_config.zones[0]
    assert [str(e.from_) for e in zone.allow_transfer] == ["127.0.0.0/8", "::1/128"]
    assert [e.key for e in zone.allow_transfer] == ["xfr-key.", None]
    assert [str(a) for a in zone.notify] == ["127.0.0.12:53", "127.0.0.13:53"]
    assert zone.max_journal == 5
    assert dns_config.journal_dir == tmp_path / ".edgeway-journal"
    secondary = dns_config.secondary_zones[0]
    assert secondary.key == "xfr-key." and secondary.file == tmp_path / "secondaries/example.net.zone"
    assert [str(n) for n in secondary.allow_notify] == ["127.0.0.20/32"]
    keyring = load_keyring(dns_config)
    assert {k.to_text() for k in keyring} == {"xfr-key.", "block-key."}
    assert keyring[next(iter(keyring))].secret == b"secretsecretsecretsecretsecret12"
    # dumped with `from`, as written
    assert zone.model_dump()["allow_transfer"][0]["from"] == "127.0.0.0/8"


def test_defaults(tmp_path):
    config = load_config(write(tmp_path, """
        dns:
          listen: ["127.0.0.1:5300"]
          journal_dir: state/journal
          zones: [{file: zones/example.com.zone}]
        """))
    zone = config.dns.zones[0]
    assert zone.allow_transfer == [] and zone.notify == [] and zone.max_journal == 100
    assert config.dns.journal_dir == tmp_path / "state/journal"


@pytest.mark.parametrize("change, expected", [
    (("key: xfr-key.}", "key: nokey.}"),
     ":10: dns.zones.0.allow_transfer.0.key: unknown TSIG key 'nokey.' (known: block-key., xfr-key.)"),
    (("key: xfr-key\n", "key: other\n"), ":16: dns.secondary_zones.0.key: unknown TSIG key 'other.'"),
    (("keys/xfr.key", "keys/missing.key"), ":5: dns.tsig_keys.0.secret_file: file not found"),
    (("{from: \"::1\"}", "{form: \"::1\"}"), ":10: dns.zones.0.allow_transfer.1.form: unknown key"),
    (("from: 127.0.0.0/8", "from: 127.0.0.0/88"), ":10: dns.zones.0.allow_transfer.0.from: invalid network"),
    (("algorithm: hmac-sha256", "algorithm: hmac-sha3"), ":5: dns.tsig_keys.0.algorithm: Input should be"),
    (("max_journal: 5", "max_journal: -1"), ":12: dns.zones.0.max_journal: Input should be greater"),
    (("name: block-key", "name: xfr-key."), ":6: dns.tsig_keys.1.name: duplicate key name 'xfr-key.'"),
    (("origin: example.net.", "origin: example.com."),
     ":14: dns.secondary_zones.0.origin: zone example.com. is also served by dns.zones.0"),
])
def test_errors_name_file_line_and_key(tmp_path, change, expected):
    assert expected in error_of(tmp_path, CONFIG.replace(*change))


def test_a_secret_that_does_not_decode(tmp_path):
    message = error_of(tmp_path, key_text="not base64!!\n")
    assert ":5: dns.tsig_keys.0.secret_file:" in message and "xfr.key: the secret" in message
    assert "is not base64" in message


def test_a_key_block_whose_algorithm_disagrees(tmp_path):
    message = error_of(tmp_path, CONFIG.replace("algorithm: hmac-sha512, ", ""))   # (default: sha256)
    assert ":6: dns.tsig_keys.1:" in message and "says algorithm hmac-sha512" in message
