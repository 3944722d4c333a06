#!/usr/bin/env bash
# Authoritative DNS benchmark: edgeway beside NSD (and Knot) serving the same zone with the same
# query mix, through the shared reference scripts (../shared/bench: dnsperf, taskset pinning,
# cgroup CPU cap). Prints both tables: uncapped QPS/latency, and capacity per core (server capped
# at QUOTA% of one core, so the server, not dnsperf, is the limit).
#
#   sudo bench/dns_auth.sh                 # nsd + edgeway, both tables
#   sudo bench/dns_auth.sh nsd knot        # other references
# env: REPS, DUR (shared scripts), QUOTA=50, SHARED_BENCH (default ../shared/bench), EDGEWAY (edgeway command)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
EDGEWAY=${EDGEWAY:-$ROOT/.venv/bin/edgeway}
REFERENCES=${*:-nsd}
[ -x "$EDGEWAY" ] || { echo "no $EDGEWAY: run 'make venv' first (or set EDGEWAY=...)" >&2; exit 1; }
[ -x "$SHARED_BENCH/dns_auth.sh" ] || { echo "no reference scripts in $SHARED_BENCH (set SHARED_BENCH)" >&2; exit 1; }

# The shared scripts substitute {ip} {port} {zone} {origin}; edgeway takes them in a config file.
export CUSTOM_LABEL=edgeway
export CUSTOM_CMD="cfg=\$(mktemp --suffix=.yaml); printf 'dns:\n  listen: [\"{ip}:{port}\"]\n  zones:\n    - {file: \"{zone}\", origin: \"{origin}.\"}\n' > \$cfg; exec $EDGEWAY serve --config \$cfg --log-level warning"

bash "$SHARED_BENCH/dns_auth.sh" $REFERENCES custom
QUOTA=${QUOTA:-50} bash "$SHARED_BENCH/dns_capacity.sh" $REFERENCES custom
OUT=${BENCH_OUT:-/tmp/edgeway-bench}/results
python3 - "$OUT/dns_capacity_table${TAG:+_$TAG}.txt" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) >= 3 and parts[2].isdigit():
        rows[parts[0]] = int(parts[2])
if "edgeway" in rows:
    for name, qps in rows.items():
        if name != "edgeway":
            print(f"capacity per core: edgeway {rows['edgeway']} / {name} {qps} = {rows['edgeway'] / qps:.0%}")
PY
