"""_headscan.scan_request against its reference, httptools (llhttp) + messages.analyze_request:
any request head the scanner accepts must come out of the httptools path field for field, and
its upstream_head must be what upstream_request_head renders; declining is always allowed.
The oracle is tests/unit/http/test_headscan.py's (check_request), so the fuzzer and the unit
test hold the scanner to one definition.

    python fuzz/fuzz_request.py [libFuzzer flags] [corpus dirs]   (run.py sets up the sanitizers)
"""

import sys

import atheris

import fuzz_support  # first: it swaps in the sanitizer builds

import httptools  # noqa: F401,E402  (not instrumented: compiled)
import hypothesis  # noqa: F401,E402
import pytest  # noqa: F401,E402

with atheris.instrument_imports(include=["edgeway", "tests"]):
    from tests.unit.http.test_headscan import check_request


def one_input(data: bytes) -> None:
    try:
        check_request(data)
    except AssertionError:
        fuzz_support.mismatch("scan_request differs from the httptools path", data)
        raise


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
