"""Fixtures shared by the L7 integration tests: one background loop per module, an L7
environment (backends + proxy) per test, stopped after it, and real nginx backends."""

import pytest

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7
from tests.support.nginx_backends import nginx_backends


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def l7(bg):
    env = L7(bg)
    yield env
    env.stop()


@pytest.fixture
def nginx(tmp_path):
    """Two nginx backends on loopback (tests/support/nginx_backends.py); yields their ports."""
    with nginx_backends(tmp_path, 2) as ports:
        yield ports
