"""The token file's rules and the constant-time comparison; the `admin:` config section."""

from __future__ import annotations

import os

import pytest

from edgeway.admin.token import TokenCheck, TokenError, read_token
from edgeway.config import ConfigError, load_config_text


def token_file(tmp_path, content: bytes, mode: int = 0o600):
    path = tmp_path / "token"
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def test_the_token_is_the_content_stripped(tmp_path):
    assert read_token(token_file(tmp_path, b"  abc123\n\n")) == "abc123"


def test_a_group_may_read_it(tmp_path):
    assert read_token(token_file(tmp_path, b"abc", 0o640)) == "abc"


@pytest.mark.parametrize("content,mode,why", [
    (b"", 0o600, "is empty"),
    (b" \n\t\n", 0o600, "is empty"),
    (b"abc\n", 0o644, "readable by every user (mode 0644)"),
    (b"abc\n", 0o604, "chmod 600"),
    (b"two words\n", 0o600, "more than one word"),
    (b"abc\ndef\n", 0o600, "more than one word"),
    (b"\xff\xfe", 0o600, "not ASCII"),
    (b"a" * 5000, 0o600, "larger than 4096 bytes"),
])
def test_bad_token_files_are_refused_saying_why(tmp_path, content, mode, why):
    with pytest.raises(TokenError) as err:
        read_token(token_file(tmp_path, content, mode))
    assert why in str(err.value)
    assert str(tmp_path / "token") in str(err.value)


def test_a_missing_file(tmp_path):
    with pytest.raises(TokenError, match="cannot read the token file .*No such file"):
        read_token(tmp_path / "nope")


def test_ctl_reads_a_world_readable_file_the_server_would_refuse(tmp_path):
    assert read_token(token_file(tmp_path, b"abc", 0o644), check_mode=False) == "abc"


def test_token_check():
    check = TokenCheck("s3cret")
    assert check.authorized(b"Bearer s3cret")
    assert check.authorized(b"bearer  s3cret ")
    for value in (None, b"", b"Bearer", b"Bearer s3cre", b"Bearer s3cret2", b"Basic s3cret", b"s3cret",
                  b"Bearer s3cret, Bearer x"):
        assert not check.authorized(value), value


def config(tmp_path, admin: str):
    return load_config_text(f"admin: {admin}\ndns: {{listen: ['127.0.0.1:5300']}}\n",
                            filename="edgeway.yaml", base_dir=tmp_path)


def test_admin_section_defaults_to_loopback_9901_and_resolves_paths(tmp_path):
    token_file(tmp_path, b"abc")
    admin = config(tmp_path, "{token_file: token, state_file: state.json}").admin
    assert str(admin.listen) == "127.0.0.1:9901"
    assert admin.token_file == tmp_path / "token"
    assert admin.state_file == tmp_path / "state.json"


def test_no_admin_section_means_no_api(tmp_path):
    assert load_config_text("dns: {listen: ['127.0.0.1:5300']}").admin is None


@pytest.mark.parametrize("admin,why", [
    ("{listen: '127.0.0.1:9901'}", "edgeway.yaml:1: admin.token_file: Field required"),
    ("{token_file: nope}", "edgeway.yaml:1: admin.token_file: cannot read the token file"),
    ("{token_file: token, listen: 'x'}", "edgeway.yaml:1: admin.listen: invalid address"),
    ("{token_file: token, tokenfile: x}", "admin.tokenfile: unknown key"),
    ("{token_file: token, listen: '127.0.0.1:5300'}", "admin.listen: 127.0.0.1:5300 is also used by dns.listen"),
])
def test_admin_section_errors_name_file_line_key(tmp_path, admin, why):
    token_file(tmp_path, b"abc")
    with pytest.raises(ConfigError) as err:
        config(tmp_path, admin)
    assert why in str(err.value)


def test_an_empty_token_file_is_a_config_error(tmp_path):
    token_file(tmp_path, b"\n")
    with pytest.raises(ConfigError, match=r"edgeway.yaml:1: admin.token_file: the token file .* is empty"):
        config(tmp_path, "{token_file: token}")
