"""_headscan.forward_response against its reference, UpstreamConnection's httptools path +
messages.client_response_head: any response the scanner accepts must have the same status,
framing, reuse and body there, and the bytes for the client must be client_response_head's
(for both client versions, keep-alive or not, with and without extra fields). The oracle is
tests/unit/http/test_headscan.py's (check_response).

    python fuzz/fuzz_response.py [libFuzzer flags] [corpus dirs]   (run.py sets up the sanitizers)
"""

import sys

import atheris

import fuzz_support  # first: it swaps in the sanitizer builds

import httptools  # noqa: F401,E402
import hypothesis  # noqa: F401,E402
import pytest  # noqa: F401,E402

with atheris.instrument_imports(include=["edgeway", "tests"]):
    from tests.unit.http.test_headscan import check_response


def one_input(data: bytes) -> None:
    try:
        check_response(data)
    except AssertionError:
        fuzz_support.mismatch("forward_response differs from the httptools path", data)
        raise


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
