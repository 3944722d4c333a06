"""What the fuzzers share. Importing it makes `edgeway.http._headscan`, `_rawio`, `_logfmt` and `_udpio` the sanitizer builds of build/fuzz/
(fuzz/build.py) for this process, before anything imports them: the package's search path
gets that folder first, so the pure-Python modules still come from src/ and the compiled
ones from the build. The modules are checked to come from there (a fuzzer that silently ran
the ordinary builds would find nothing and say so)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("FUZZ_BUILD", ROOT / "build" / "fuzz")) / "edgeway" / "http"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))     # tests.support / tests.unit: the oracles


def load() -> None:
    if os.environ.get("FUZZ_EXPECT_ASAN") == "1":
        import ctypes
        if not hasattr(ctypes.CDLL(None), "__asan_init"):
            raise RuntimeError("no AddressSanitizer runtime in this process (run through fuzz/run.py)")
    import edgeway.http
    if "edgeway.http._headscan" in sys.modules:
        raise RuntimeError("a compiled module was imported before fuzz/sanitized.py could swap it")
    edgeway.http.__path__.insert(0, str(BUILD))
    for name in ("_headscan", "_rawio", "_logfmt", "_udpio"):
        module = importlib.import_module(f"edgeway.http.{name}")
        if Path(module.__file__).resolve().parent != BUILD.resolve():
            raise RuntimeError(f"{module.__name__} came from {module.__file__}, not the sanitizer build in {BUILD}"
                               " (run `make fuzz`, or python fuzz/build.py first)")


def mismatch(what: str, data) -> None:
    """Say what differed and on which input, before the exception reaches libFuzzer (which
    then saves the input under the artifact prefix, fuzz/crashes/<target>-)."""
    print(f"\n=== FUZZ MISMATCH: {what}\n=== input: {data!r}", file=sys.stderr, flush=True)


load()
