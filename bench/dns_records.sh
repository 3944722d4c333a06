#!/usr/bin/env bash
# Health-aware answers (policy records, issue 17) against static ones, over real sockets:
# one `edgeway serve` (pinned to one CPU with taskset when there are two) answers dnsperf for
# a zone A record and for policy records of each kind, DUR seconds each, REPS times; prints
# the best QPS per name over REPS interleaved rounds and each one's cost relative to the static answer (static QPS / its QPS).
# The issue's budget: a health-aware answer costs at most 2x a static one.
#
#   bench/dns_records.sh              # env: DUR=5 REPS=3 EDGEWAY=.venv/bin/edgeway CLIENTS=4
# In-process CPU per query (no kernel, steadier on a shared machine): bench/dns_records_inproc.py
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EDGEWAY=${EDGEWAY:-$ROOT/.venv/bin/edgeway}
DUR=${DUR:-5}; REPS=${REPS:-3}; CLIENTS=${CLIENTS:-4}
command -v dnsperf >/dev/null || { echo "dnsperf is not installed" >&2; exit 1; }
DIR=$(mktemp -d); trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$DIR/example.com.zone" <<ZONE
\$ORIGIN example.com.
\$TTL 300
@ SOA ns1 hostmaster 1 3600 900 1209600 300
@ NS ns1
ns1 A 192.0.2.53
static A 192.0.2.10
static A 192.0.2.11
ZONE
cat > "$DIR/edgeway.yaml" <<YAML
dns:
  listen: ["127.0.0.1:$PORT"]
  zones: [{file: example.com.zone}]
  records:
    - {name: failover.example.com., type: A, ttl: 20, policy: failover, targets: [{upstream: east}, {upstream: west}]}
    - {name: weighted.example.com., type: A, ttl: 20, policy: weighted, targets: [{upstream: east, weight: 3}, {upstream: west}]}
    - {name: ip.example.com., type: A, ttl: 20, policy: ip, targets: [{upstream: east, clients: [10.0.0.0/8]}, {upstream: west}]}
    - {name: multivalue.example.com., type: A, ttl: 20, policy: multivalue, targets: [{upstream: east}, {upstream: west}]}
upstreams:
  east: {servers: [{address: "192.0.2.10:80"}, {address: "192.0.2.11:80"}]}
  west: {servers: [{address: "192.0.2.20:80"}, {address: "192.0.2.21:80"}]}
YAML
PIN=""; [ "$(nproc)" -ge 2 ] && PIN="taskset -c 1"
$PIN $EDGEWAY serve --config "$DIR/edgeway.yaml" --log-level warning & PID=$!
for _ in $(seq 100); do dig +time=1 +tries=1 @127.0.0.1 -p "$PORT" static.example.com +short >/dev/null 2>&1 && break; sleep 0.1; done
DNSPIN=""; [ "$(nproc)" -ge 2 ] && DNSPIN="taskset -c 0"
declare -A QPS
NAMES="static failover weighted ip multivalue"
for name in $NAMES; do QPS[$name]=0; done
for _ in $(seq "$REPS"); do          # (names interleaved: a noisy neighbour hits them alike)
  for name in $NAMES; do
    echo "$name.example.com A" > "$DIR/q.txt"
    q=$($DNSPIN dnsperf -s 127.0.0.1 -p "$PORT" -d "$DIR/q.txt" -l "$DUR" -c "$CLIENTS" -q 100 2>/dev/null \
        | awk '/Queries per second/ {print int($4)}')
    [ "${q:-0}" -gt "${QPS[$name]}" ] && QPS[$name]=$q
  done
done
printf '%-12s %10s %8s\n' name qps cost
for name in $NAMES; do
  python3 -c "import sys; s,q=int(sys.argv[2]),int(sys.argv[3]); print(f'{sys.argv[1]:12s} {q:10d} {s/q if q else 0:7.2f}x')" \
    "$name" "${QPS[static]}" "${QPS[$name]}"
done
