"""Fixtures shared by the L7 integration tests: one background loop per module, and an L7
environment (backends + proxy) per test, stopped after it."""

import pytest

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def l7(bg):
    env = L7(bg)
    yield env
    env.stop()
