#!/bin/bash
# L4 TCP benchmark: edgeway next to HAProxy (mode tcp) and nginx (stream), each pinned to one core,
# using the shared reference script (../shared/bench/tcp_l4.sh) with edgeway as its `custom` entry.
#   iperf3 throughput (1 stream, DUR s) and new connections/s (wrk -c50, Connection: close, to nginx).
# usage: sudo bench/tcp_l4.sh [proxies...]   (default: haproxy nginx custom; env REPS DUR TAG BENCH_OUT as there)
#   SPLICE=1: edgeway's listeners with `splice: true` (tcp_l4.yaml, copied with that key added)
# Prints the shared table, then edgeway's ratios to HAProxy and nginx.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
[ -x "$SHARED/tcp_l4.sh" ] || SHARED=/work/shared/bench
PY=${EDGEWAY_PYTHON:-$REPO/.venv/bin/python}   # make venv
[ -x "$PY" ] || { echo "no $PY: run 'make venv' first (or set EDGEWAY_PYTHON)" >&2; exit 1; }
export CUSTOM_LABEL=${CUSTOM_LABEL:-edgeway}
CONFIG=$HERE/tcp_l4.yaml
if [ "${SPLICE:-0}" != 0 ]; then
  CONFIG=$(mktemp --suffix=.yaml /tmp/edgeway-tcp_l4-splice.XXXXXX)
  trap 'rm -f "$CONFIG"' EXIT
  sed 's/idle_timeout: 60s}/idle_timeout: 60s, splice: true}/' "$HERE/tcp_l4.yaml" > "$CONFIG"
fi
export CUSTOM_CMD="cd $REPO && exec env PYTHONPATH=$REPO/src $PY -m edgeway serve --config $CONFIG --log-level warning"
OUT=${BENCH_OUT:-/tmp/edgeway-bench}
"$SHARED/tcp_l4.sh" ${*:-haproxy nginx custom}
TABLE=$OUT/results/tcp_l4_table${TAG:+_$TAG}.txt
[ -f "$TABLE" ] || exit 0
python3 - "$TABLE" "$CUSTOM_LABEL" <<'PY'
import re, sys
text = open(sys.argv[1]).read().splitlines()
me = sys.argv[2]
gbit, conn = {}, {}
section = "gbit"
for line in text:
    if line.startswith("# new connections"):
        section = "conn"
    parts = line.split()
    if len(parts) < 2 or line.startswith("#") or parts[0] == "proxy":
        continue
    med = (parts[2] if section == "conn" else parts[1]).split("/")
    value = med[1] if len(med) == 3 else med[0]
    try:
        value = float(value)
    except ValueError:
        continue
    (gbit if section == "gbit" else conn)[parts[0]] = value
print("# edgeway / reference (medians)")
for ref in ("haproxy", "nginx"):
    if me in gbit and ref in gbit:
        print(f"throughput  {me}/{ref}: {gbit[me] / gbit[ref]:.2f}  ({gbit[me]} vs {gbit[ref]} Gbit/s)")
    if me in conn and ref in conn:
        print(f"conn/s      {me}/{ref}: {conn[me] / conn[ref]:.2f}  ({conn[me]:.0f} vs {conn[ref]:.0f})")
PY
