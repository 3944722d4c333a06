#!/bin/bash
# Splice against copy for L4 TCP bulk transfers: iperf3 (1 stream, DUR s) through `edgeway serve`
# with splicing (the listener's `splice: true`) and without (the default), and through HAProxy
# (mode tcp) with and without `option splice-auto`, all side by side on their own ports, measured
# in turn, ROUNDS times. Prints per round and as medians: Gbit/s, and the proxy's CPU time per GB relayed
# (utime+stime from /proc/PID/stat), which the neighbours disturb less than the rate.
#   bench/tcp_l4_splice.sh [ROUNDS=5 DUR=5 PYTHON=... SRV_CPU=1 GEN_CPU=0 HAPROXY=1]
# Ports: iperf3 server 127.0.0.1:29201, HAProxy 29211 (splice 29212), edgeway 29221 (copy 29222).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || { echo "no $PY: run 'make venv' first (or set PYTHON)" >&2; exit 1; }
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-5}; SRV_CPU=${SRV_CPU:-1}; GEN_CPU=${GEN_CPU:-0}
D=$(mktemp -d /tmp/edgeway-l4splice.XXXXXX)
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
taskset -c $GEN_CPU iperf3 -s -B 127.0.0.1 -p 29201 >$D/iperf3.log 2>&1 & PIDS+=($!)
declare -A PORT PID
NAMES=()
if [ "${HAPROXY:-1}" != 0 ]; then
  for v in haproxy haproxy-splice; do
    port=29211; opt=""
    [ $v = haproxy-splice ] && { port=29212; opt="option splice-auto"; }
    printf 'global\n  nbthread 1\n  maxconn 1000\ndefaults\n  mode tcp\n  %s\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten iperf\n  bind 127.0.0.1:%s\n  server s1 127.0.0.1:29201\n' \
      "$opt" $port > $D/$v.cfg
    taskset -c $SRV_CPU haproxy -db -f $D/$v.cfg >$D/$v.log 2>&1 & PIDS+=($!)
    NAMES+=($v); PORT[$v]=$port; PID[$v]=$!
  done
fi
for v in edgeway edgeway-copy; do
  port=29221; splice=true
  [ $v = edgeway-copy ] && { port=29222; splice=false; }
  printf 'upstreams:\n  iperf: {servers: [{address: "127.0.0.1:29201"}], passive: {max_fails: 0}}\nlisteners:\n  - {name: iperf, protocol: tcp, listen: "127.0.0.1:%s", upstream: iperf, idle_timeout: 60s, splice: %s}\n' \
    $port $splice > $D/$v.yaml
  (cd $REPO && PYTHONPATH=$REPO/src exec taskset -c $SRV_CPU $PY -m edgeway serve \
    --config $D/$v.yaml --log-level warning) >$D/$v.log 2>&1 & PIDS+=($!)
  NAMES+=($v); PORT[$v]=$port; PID[$v]=$!
done
sleep 2
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for n in "${NAMES[@]}"; do   # warm up (and check that each relays)
  taskset -c $GEN_CPU iperf3 -c 127.0.0.1 -p ${PORT[$n]} -t 1 >/dev/null 2>&1 \
    || { echo "$n: no answer on ${PORT[$n]} (see below)" >&2; cat $D/$n.log >&2 || true; exit 1; }
done
declare -A GB CPG
for r in $(seq $ROUNDS); do
  for n in "${NAMES[@]}"; do
    c0=$(cpu ${PID[$n]})
    taskset -c $GEN_CPU iperf3 -c 127.0.0.1 -p ${PORT[$n]} -t $DUR -J > $D/out.json 2>&1 || true
    c1=$(cpu ${PID[$n]})
    read -r gbit bytes < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["end"]["sum_received"]; print("%.2f %d" % (d["bits_per_second"]/1e9, d["bytes"]))' $D/out.json 2>/dev/null || echo "nan 0")
    cpg=$(awk -v c=$((c1-c0)) -v t=$tick -v b=$bytes 'BEGIN {printf "%.3f", b ? c/t/(b/1e9) : 0}')
    GB[$n]="${GB[$n]:-} $gbit"; CPG[$n]="${CPG[$n]:-} $cpg"
    printf "round %d  %-15s %6s Gbit/s  %6s s CPU/GB\n" $r $n $gbit $cpg
  done
done
echo "# medians of $ROUNDS x ${DUR}s, iperf3 1 stream (client and server on CPU$GEN_CPU, proxy on CPU$SRV_CPU)"
med() { python3 -c 'import statistics,sys; v=sorted(float(x) for x in sys.argv[1:] if x != "nan"); print("%.2f (min %.2f, max %.2f)" % (statistics.median(v), v[0], v[-1]) if v else "n/a")' "$@"; }
for n in "${NAMES[@]}"; do
  printf "%-15s Gbit/s %-26s CPU s/GB %s\n" $n "$(med ${GB[$n]})" "$(med ${CPG[$n]})"
done
python3 - "${GB[edgeway]}" "${GB[edgeway-copy]}" "${CPG[edgeway]}" "${CPG[edgeway-copy]}" "${GB[haproxy]:-}" <<'PY'
import statistics, sys
m = lambda s: statistics.median(float(x) for x in s.split() if x != "nan")
g, gc, c, cc = (m(a) for a in sys.argv[1:5])
print(f"edgeway splice / copy: {g / gc:.2f}x Gbit/s, {c / cc:.2f}x CPU per GB")
if sys.argv[5].strip():
    h = m(sys.argv[5])
    print(f"edgeway / haproxy: {g / h:.2f} (splice), {gc / h:.2f} (copy)")
PY
