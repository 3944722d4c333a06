"""`make fuzz`: build the compiled modules with ASan and UBSan (fuzz/build.py), then run each
fuzzer (atheris, coverage-guided) for FUZZ_SECONDS with those builds loaded, and fail on any
sanitizer report or oracle mismatch.

    python fuzz/run.py [--seconds N] [--cc clang|gcc] [TARGET ...] [-- libFuzzer flags]

Targets: request, response (_headscan against httptools), logfmt (_logfmt against
AccessLog.format), rawio (_rawio on loopback sockets), udpio (_udpio's recvmmsg/sendmmsg on
loopback sockets against socket.recvfrom/sendto). Each one's corpus grows in
build/fuzz/corpus/<target> (fuzz/corpus/<target> holds the seeds, read only); a failing input is
saved as fuzz/crashes/<target>-crash-<sha1> and printed; its log is build/fuzz/logs/<target>.log.
To replay one input: python fuzz/run.py TARGET -- fuzz/crashes/<file>  (runs just that input).

The interpreter is not built with ASan, so the sanitizer runtime is preloaded: with clang
(the default) atheris' own asan_with_fuzzer.so (ASan + UBSan + libFuzzer, which then also
sees the C modules' edges), with gcc gcc's libasan and libubsan. PYTHONMALLOC=malloc puts
Python's objects in ASan's heap (bytes objects included, so a read past a bytes' end is
caught); leak detection is off, Python's own allocations outlive the process by design.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402

BUILD = Path(os.environ.get("FUZZ_BUILD", ROOT / "build" / "fuzz"))   # the sanitizer builds
TARGETS = ["request", "response", "logfmt", "rawio", "udpio"]
DICTIONARIES = {"request": "http.dict", "response": "http.dict"}
MAX_LEN = {"request": 1024, "response": 1024, "logfmt": 2048, "rawio": 1024, "udpio": 1024}
# what one target is allowed besides the time (a runaway input is a finding too)
LIMITS = ["-rss_limit_mb=4096", "-timeout=30", "-print_final_stats=1"]


def preload(cc: str) -> list[str]:
    if "clang" in os.path.basename(cc):
        import atheris
        runtime = Path(atheris.path()) / "asan_with_fuzzer.so"
        if not runtime.exists():
            sys.exit(f"fuzz: {runtime} missing (atheris installed without its sanitizer runtimes?)")
        return [str(runtime)]
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        path = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path):
            sys.exit(f"fuzz: {cc} has no {name} (apt-get install {cc}'s libasan/libubsan)")
        libs.append(path)
    return libs


def environment(cc: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(preload(cc) + ([env["LD_PRELOAD"]] if env.get("LD_PRELOAD") else []))
    env["PYTHONMALLOC"] = "malloc"
    # detect_leaks=0: CPython frees little at exit by design; the quarantine is kept modest
    # so that a long round's RSS stays bounded
    env["ASAN_OPTIONS"] = "detect_leaks=0:quarantine_size_mb=64:malloc_context_size=20:" + env.get("ASAN_OPTIONS", "")
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:" + env.get("UBSAN_OPTIONS", "")
    symbolizer = shutil.which("llvm-symbolizer")
    if symbolizer:
        env.setdefault("ASAN_SYMBOLIZER_PATH", symbolizer)
    env["FUZZ_BUILD"] = str(BUILD)
    env["FUZZ_EXPECT_ASAN"] = "1"
    return env


def run_target(target: str, seconds: int, env: dict[str, str], extra: list[str]) -> tuple[bool, str]:
    work = ROOT / "build" / "fuzz" / "corpus" / target
    work.mkdir(parents=True, exist_ok=True)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    logs = ROOT / "build" / "fuzz" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{target}.log"
    replay = [a for a in extra if not a.startswith("-")]
    cmd = [sys.executable, str(HERE / f"fuzz_{target}.py")]
    if replay:                          # given inputs: run just those
        cmd += extra
    else:
        cmd += [str(work), str(HERE / "corpus" / target), f"-max_total_time={seconds}",
                f"-artifact_prefix={crashes}/{target}-", f"-max_len={MAX_LEN[target]}", *LIMITS]
        if target in DICTIONARIES:
            cmd.append(f"-dict={HERE / DICTIONARIES[target]}")
        cmd += extra
    started = time.monotonic()
    print(f"fuzz {target}: {' '.join(cmd[1:])}", flush=True)
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    text = log.read_text(errors="replace")
    took = time.monotonic() - started
    ok = code == 0 and "ERROR: AddressSanitizer" not in text and "runtime error:" not in text
    return ok, summary(target, text, took, code, log)


def summary(target: str, text: str, took: float, code: int, log: Path) -> str:
    stats = dict(re.findall(r"^stat::(\w+):\s*(\d+)", text, re.M))
    done = re.findall(r"^#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED).*?cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", text, re.M)
    line = f"{target:9s} {took:6.0f} s  exit {code}"
    if stats:
        line += (f"  execs {stats.get('number_of_executed_units', '?')}"
                 f" ({stats.get('average_exec_per_sec', '?')}/s)")
    if done:
        _, cov, ft, corp, size = done[-1]
        line += f"  cov {cov} ft {ft} corpus {corp} ({size})"
    return line + f"  log {log.relative_to(ROOT)}"


def main() -> None:
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 15)),
                        help="per target (FUZZ_SECONDS; default 15: 75 s for the five)")
    parser.add_argument("--cc", default=os.environ.get("FUZZ_CC", "clang"))
    parser.add_argument("--no-build", action="store_true", help="use build/fuzz as it is")
    parser.add_argument("targets", nargs="*", choices=[[]] + TARGETS, default=[])
    args = parser.parse_args(argv)
    targets = args.targets or TARGETS
    if not args.no_build:
        if shutil.which(args.cc) is None:
            sys.exit(f"fuzz: no {args.cc} here (apt-get install clang llvm, or FUZZ_CC=gcc)")
        try:
            build.build(args.cc, BUILD)
        except subprocess.CalledProcessError as exc:
            sys.exit(f"fuzz build: {exc}")
    env = environment(args.cc)
    failed = []
    lines = []
    for target in targets:
        ok, line = run_target(target, args.seconds, env, extra)
        lines.append(("ok    " if ok else "FAILED ") + line)
        print(lines[-1], flush=True)
        if not ok:
            failed.append(target)
            text = (ROOT / "build" / "fuzz" / "logs" / f"{target}.log").read_text(errors="replace")
            print("\n".join(text.splitlines()[-80:]), file=sys.stderr)
    print("\nfuzz summary\n" + "\n".join(lines))
    crashes = sorted((HERE / "crashes").glob("*"))
    if failed:
        print(f"fuzz: FAILED: {', '.join(failed)}; inputs saved: "
              + ", ".join(str(c.relative_to(ROOT)) for c in crashes[-5:]), file=sys.stderr)
        sys.exit(1)
    print(f"{len(targets)} passed, 0 failed")


if __name__ == "__main__":
    main()
