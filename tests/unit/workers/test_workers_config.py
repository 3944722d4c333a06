"""`workers: N | auto`: validated at load (a number 1..256 or auto), read as a count."""

import os

import pytest

from edgeway.config import ConfigError
from edgeway.config.loader import load_config_text

BASE = 'dns: {listen: ["127.0.0.1:5300"]}\n'


@pytest.mark.parametrize("value, count", [("1", 1), ("2", 2), ("256", 256),
                                          ("auto", len(os.sched_getaffinity(0)))])
def test_workers_values(value, count):
    config = load_config_text(f"workers: {value}\n" + BASE, "e.yaml")
    assert config.worker_count == count


def test_workers_defaults_to_one_process():
    assert load_config_text(BASE, "e.yaml").worker_count == 1


@pytest.mark.parametrize("value", ["0", "257", "-1", "true", "'2'", "two", "1.5"])
def test_bad_workers_name_the_line_and_what_is_allowed(value):
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + f"workers: {value}\n", "e.yaml")
    assert str(info.value).startswith("e.yaml:2: workers: workers must be auto or a number from 1 to 256"), info.value
