"""The admin API's bearer token: read from a file, checked in constant time.

The token is the file's content with surrounding whitespace stripped (so `echo TOKEN > f`
works). The file is refused when it is empty, or when every user of the host may read it:
the admin listener is on loopback, so the token is the only thing between a local user and
the power to drain every server (ssh refuses a private key readable by others for the same
reason). A group may read it (an ops group sharing the token is a deliberate choice).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from edgeway.errors import EdgewayError

# Below this length a token is guessable by a patient local client; we warn, not refuse,
# since the operator may have reasons (a test rig), and say how to make a good one.
SHORT_TOKEN = 16


class TokenError(EdgewayError):
    """The token file is missing, empty or readable by every user."""


def read_token(path: Path, check_mode: bool = True) -> str:
    """The token in `path`; raises TokenError saying what is wrong and how to fix it.

    `check_mode` is off for `edgeway ctl`, which only needs to read the file: whether others
    may read it is the server's concern."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(4097)
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror}") from None
    if check_mode and mode & stat.S_IROTH:
        raise TokenError(
            f"the token file {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
            f"anyone on this host could steer edgeway: chmod 600 {path} (or 640 for a group)"
        )
    if len(data) > 4096:
        raise TokenError(f"the token file {path} is larger than 4096 bytes: is it the right file?")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenError(f"the token file {path} is not ASCII text: "
                         "make one with `openssl rand -hex 32`") from None
    if not token:
        raise TokenError(f"the token file {path} is empty: put a token in it, "
                         f"e.g. `openssl rand -hex 32 > {path}`")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise TokenError(f"the token file {path} holds more than one word: a token is one "
                         "line of printable characters without spaces")
    return token


class TokenCheck:
    """Compares a presented token with the expected one in constant time.

    Both sides are hashed first: `hmac.compare_digest` does not leak where two values differ,
    but it may leak their lengths; equal-length digests leak nothing about the token."""

    def __init__(self, token: str):
        self._digest = hashlib.sha256(token.encode()).digest()

    def matches(self, presented: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha256(presented).digest(), self._digest)

    def authorized(self, authorization: bytes | None) -> bool:
        """True when an `Authorization` field value carries the token as `Bearer TOKEN`."""
        if authorization is None:
            # Still compare: a request without a token takes as long as one with a wrong one.
            self.matches(b"")
            return False
        scheme, _, credentials = authorization.strip().partition(b" ")
        ok = self.matches(credentials.strip())
        return ok and scheme.lower() == b"bearer"
