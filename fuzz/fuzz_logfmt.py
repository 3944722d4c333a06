"""_logfmt.format_entries against its definition, listener.AccessLog.format: for a batch of
entries made from the input, the C formatter must give exactly
"".join(log.format(e) for e in entries).encode("utf-8", "replace"), or raise where format
raises (a field of a type the access log never records, as None for the total).

Entries are what AccessLog records: (when, line) or the 14-tuple of a request, their fields of
the types they have in the proxy and now and then another (any int, float or text, lone
surrogates, NaN and infinities, None where a time may be missing, or where it may not).

    python fuzz/fuzz_logfmt.py [libFuzzer flags] [corpus dirs]   (run.py sets up the sanitizers)
"""

import math
import sys

import atheris

import fuzz_support  # first: it swaps in the sanitizer builds

with atheris.instrument_imports(include=["edgeway"]):
    from edgeway.http.listener import AccessLog, format_entries

FLOATS = [0.0, -0.0, 0.0005, 0.004999999, 0.005, 1e-9, 1.5e-5, 0.12345, 9999.99999, 1e4, 1e7, 1e300,
          math.inf, -math.inf, math.nan, -1.0, 1.7e9, 1.7e9 + 0.999999]


def text(fdp) -> str:
    return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 24))


def number(fdp, kind: int):
    if kind == 0:
        return fdp.ConsumeFloat()
    if kind == 1:
        return fdp.PickValueInList(FLOATS)
    if kind == 2:
        return fdp.ConsumeProbability() * 10 ** fdp.ConsumeIntInRange(-6, 8)
    # an int time (never recorded: the proxy's times are float differences) only as large as
    # a double holds times 1000 exactly: for larger ones format() multiplies the int exactly
    # and the C side the double, which differ in the last digits by design
    return fdp.ConsumeIntInRange(-(2 ** 40), 2 ** 40)


def seconds(fdp, optional: bool):
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 7:
        return None if optional or fdp.ConsumeBool() else text(fdp)
    return number(fdp, kind % 4)


def integer(fdp):
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind == 5:
        return fdp.PickValueInList([True, -1, 2 ** 63, 2 ** 64 + 1, -(2 ** 63) - 1, 1.5, "200", None])
    return fdp.ConsumeIntInRange(0, 10 ** 12) if kind < 3 else fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 20))


def entry(fdp) -> tuple:
    when = fdp.PickValueInList([1.7e9, 1.7e9 + 0.5, 1.7e9 + 1]) if fdp.ConsumeIntInRange(0, 7) else seconds(fdp, False)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return (when, text(fdp))
    return (when, text(fdp), fdp.PickValueInList(["GET", "HEAD", "POST"]) if fdp.ConsumeBool() else text(fdp),
            text(fdp), fdp.PickValueInList(["1.1", "1.0"]), integer(fdp), text(fdp), integer(fdp),
            seconds(fdp, True), seconds(fdp, True), seconds(fdp, False),
            fdp.PickValueInList(["", "connection refused by 127.0.0.1:9001 (port closed)"])
            if fdp.ConsumeBool() else text(fdp),
            None,   # the route: not in the text line
            fdp.PickValueInList([None, "", "0123456789abcdef0123456789abcdef"]) if fdp.ConsumeBool() else text(fdp))


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    entries = [entry(fdp) for _ in range(fdp.ConsumeIntInRange(0, 12))]
    try:
        log = AccessLog("fuzz", fd=-1)
        expected = "".join(log.format(e) for e in entries).encode("utf-8", "replace")
    except (TypeError, ValueError, OverflowError):
        expected = None              # format() refuses some field: the C side must raise too
    try:
        got = format_entries(entries, AccessLog("fuzz", fd=-1)._stamp)
    except (TypeError, ValueError, OverflowError) as exc:
        got = exc
    if isinstance(got, bytes) != (expected is not None) or (expected is not None and got != expected):
        fuzz_support.mismatch("format_entries differs from AccessLog.format", entries)
        print(f"=== format: {expected!r}\n=== format_entries: {got!r}", file=sys.stderr, flush=True)
        raise AssertionError("format_entries differs from AccessLog.format")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
