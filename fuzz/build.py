"""Build the HTTP proxy's compiled modules (_headscan, _rawio, _logfmt, _udpio) with AddressSanitizer
and UndefinedBehaviorSanitizer into build/fuzz/ (never the in-place .so files of src/).

    python fuzz/build.py [--cc clang|gcc] [--out DIR] [--extra-source NAME=FILE]

With clang the modules are also compiled with -fsanitize=fuzzer-no-link, so that atheris'
libFuzzer sees the C code's edges and comparisons (coverage guidance inside the scanner, not
only in the Python around it); they then need atheris' ASan runtime (asan_with_fuzzer.so)
preloaded. gcc gives the same sanitizers without that coverage (gcc has no libFuzzer
instrumentation); its libasan/libubsan are preloaded instead. run.py chooses the preload.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "edgeway" / "http"
MODULES = {"_headscan": [], "_rawio": [], "_logfmt": ["-lm"], "_udpio": []}
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
            "-O1", "-g"]
# float-cast-overflow is part of clang's -fsanitize=undefined but not gcc's: asked for by name
GCC_EXTRA = ["-fsanitize=float-cast-overflow"]
CLANG_EXTRA = ["-fsanitize=fuzzer-no-link"]
WARN = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]


def build(cc: str, out: Path, sources: dict[str, Path] | None = None) -> list[Path]:
    """Compile each module to out/edgeway/http/<name><EXT_SUFFIX>; the paths made."""
    sources = sources or {}
    dest = out / "edgeway" / "http"
    dest.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    extra = CLANG_EXTRA if "clang" in os.path.basename(cc) else GCC_EXTRA
    made = []
    for name, libs in MODULES.items():
        source = sources.get(name, SRC / f"{name}.c")
        target = dest / f"{name}{suffix}"
        obj = dest / f"{name}.o"
        # compiled with the sanitizers, linked without their runtimes: those come from the
        # preload (run.py), which the interpreter, not ASan-built itself, needs loaded first
        # anyway (and Debian's clang has no compiler-rt unless libclang-rt-dev is installed)
        for cmd in ([cc, "-c", "-fPIC", *SANITIZE, *extra, *WARN, f"-I{include}", f"-I{SRC}", str(source),
                     "-o", str(obj)],
                    [cc, "-shared", str(obj), "-o", str(target), *libs]):
            print("fuzz build:", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        made.append(target)
    (dest / "CC").write_text(cc + "\n")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", default=os.environ.get("FUZZ_CC", "clang"))
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz")
    parser.add_argument("--extra-source", action="append", default=[], metavar="NAME=FILE",
                        help="compile FILE instead of src/edgeway/http/NAME.c (the sanitizer self-check)")
    args = parser.parse_args()
    sources = dict((name, Path(file)) for name, file in (s.split("=", 1) for s in args.extra_source))
    try:
        build(args.cc, args.out, sources)
    except subprocess.CalledProcessError as exc:
        sys.exit(f"fuzz build: {exc}")
    except FileNotFoundError:
        sys.exit(f"fuzz build: no {args.cc} here (apt-get install clang llvm, or FUZZ_CC=gcc)")


if __name__ == "__main__":
    main()
