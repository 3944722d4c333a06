#!/bin/bash
# iperf3 throughput (1 stream) through HAProxy (mode tcp, nbthread 1) and through several edgeway
# source trees side by side (own ports), measured in turn each round, so a round's figures saw
# about the same neighbours. Per run: Gbit/s, the proxy's CPU time per GB relayed (utime+stime
# from /proc/PID/stat), how busy CPU0 (iperf3 client and server) and CPU1 (the proxy) were, and
# loopback packets per MB. For A/B of relay changes (e.g. read sizes) against HAProxy.
#   SRCS="new=src base=/tmp/base/src" [ROUNDS=3 DUR=5 PYTHON=... HAPROXY=1 EXTRA=", splice: true"] bench/tcp_l4_ab.sh
#   (a base tree: git archive <commit> src | tar -x -C /tmp/base; copy src/edgeway/http/*.so into it)
# Ports: iperf3 server 127.0.0.1:29301, HAProxy 29311, edgeway trees 29321 and up.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || { echo "no $PY: run 'make venv' first (or set PYTHON)" >&2; exit 1; }
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-3}; SRV_CPU=1; GEN_CPU=0
SRCS=${SRCS:-edgeway=$REPO/src}
EXTRA=${EXTRA:-}
D=$(mktemp -d /tmp/edgeway-l4ab.XXXXXX)
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
for p in 29301 29311 $(seq 29321 $((29320 + $(wc -w <<< "$SRCS")))); do   # ours alone
  if ss -Hltn "sport = :$p" | grep -q .; then echo "127.0.0.1:$p is in use" >&2; exit 1; fi
done
taskset -c $GEN_CPU iperf3 -s -B 127.0.0.1 -p 29301 >$D/iperf3.log 2>&1 & PIDS+=($!)
declare -A PORT PID
NAMES=()
if [ "${HAPROXY:-1}" != 0 ]; then
  printf 'global\n  nbthread 1\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten iperf\n  bind 127.0.0.1:29311\n  server s1 127.0.0.1:29301\n' > $D/h.cfg
  taskset -c $SRV_CPU haproxy -db -f $D/h.cfg >$D/h.log 2>&1 & PIDS+=($!)
  NAMES+=(haproxy); PORT[haproxy]=29311; PID[haproxy]=$!
fi
port=29321
for s in $SRCS; do
  name=${s%%=*}; src=${s#*=}
  printf 'upstreams:\n  iperf: {servers: [{address: "127.0.0.1:29301"}], passive: {max_fails: 0}}\nlisteners:\n  - {name: iperf, protocol: tcp, listen: "127.0.0.1:%s", upstream: iperf, idle_timeout: 60s%s}\n' $port "$EXTRA" > $D/$name.yaml
  (cd $REPO && PYTHONPATH=$src exec taskset -c $SRV_CPU $PY -m edgeway serve --config $D/$name.yaml --log-level warning) >$D/$name.log 2>&1 & PIDS+=($!)
  NAMES+=($name); PORT[$name]=$port; PID[$name]=$!
  port=$((port+1))
done
sleep 2
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
snap() { awk '/^cpu[01] /{printf "%s %d %d ", $1, $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
for n in "${NAMES[@]}"; do taskset -c $GEN_CPU iperf3 -c 127.0.0.1 -p ${PORT[$n]} -t 1 >/dev/null 2>&1 || { echo "$n failed"; cat $D/$n.log; exit 1; }; done
declare -A GB CPG
for r in $(seq $ROUNDS); do
  for n in "${NAMES[@]}"; do
    c0=$(cpu ${PID[$n]}); s0=$(snap); p0=$(cat /sys/class/net/lo/statistics/tx_packets)
    taskset -c $GEN_CPU iperf3 -c 127.0.0.1 -p ${PORT[$n]} -t $DUR -J > $D/out.json 2>&1 || true
    c1=$(cpu ${PID[$n]}); s1=$(snap); p1=$(cat /sys/class/net/lo/statistics/tx_packets)
    read -r gbit bytes < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["end"]["sum_received"]; print("%.2f %d" % (d["bits_per_second"]/1e9, d["bytes"]))' $D/out.json 2>/dev/null || echo "nan 0")
    busy=$(python3 -c 'import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); print(" ".join("%s=%.0f%%"%(a[i], 100*(int(b[i+1])-int(a[i+1]))/max(1,int(b[i+2])-int(a[i+2]))) for i in (0,3)))' "$s0" "$s1")
    cpg=$(awk -v c=$((c1-c0)) -v t=$tick -v b=$bytes 'BEGIN {printf "%.3f", b ? c/t/(b/1e9) : 0}')
    GB[$n]="${GB[$n]:-} $gbit"; CPG[$n]="${CPG[$n]:-} $cpg"
    ppm=$(awk -v p=$((p1-p0)) -v b=$bytes 'BEGIN {printf "%.1f", b ? p/(b/1e6) : 0}')
    printf "round %d  %-10s %6s Gbit/s  %6s s/GB  %s  lo pkts/MB %s\n" $r $n $gbit $cpg "$busy" $ppm
  done
done
med() { python3 -c 'import statistics,sys; v=sorted(float(x) for x in sys.argv[1:] if x != "nan"); print("%.2f (min %.2f, max %.2f)" % (statistics.median(v), v[0], v[-1]) if v else "n/a")' "$@"; }
for n in "${NAMES[@]}"; do printf "%-10s Gbit/s %-26s s/GB %s\n" $n "$(med ${GB[$n]})" "$(med ${CPG[$n]})"; done
