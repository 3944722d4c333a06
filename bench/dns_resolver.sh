#!/bin/bash
# edgeway's caching resolver against Unbound (and the other references) on the shared local hierarchy:
#   root NSD 127.0.0.11 -> com. Knot 127.0.0.12 -> example.com. NSD 127.0.0.13, all on port 53 (needs root).
#
#   1. ../shared/bench/dns_resolver.sh unbound custom   cold / cached / sibling latency over COLD fresh starts,
#                                                        then uncapped cache-hit QPS (dnsperf, 209 names)
#   2. cache-hit capacity per core: each resolver capped at QUOTA% (50) of CPU $SRV_CPU by a cgroup, as
#      ../shared/bench/dns_capacity.sh does for authoritative servers; est. QPS/core = QPS x 100 / QUOTA
#
# usage: bench/dns_resolver.sh [resolver ...]    (default: unbound custom; custom = edgeway)
#   env: EDGEWAY_PY (python with edgeway's dependencies, default the repo's .venv; make venv), SHARED_BENCH,
#        BENCH_OUT (default /tmp/edgeway-bench-resolver), REPS DUR COLD QUOTA SKIP_SHARED=1 SKIP_CAPPED=1
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
[ -d "$SHARED" ] || SHARED=/work/shared/bench
export BENCH_OUT=${BENCH_OUT:-/tmp/edgeway-bench-resolver}
EDGEWAY_PY=${EDGEWAY_PY:-$REPO/.venv/bin/python}
RESOLVERS=${*:-unbound custom}
mkdir -p "$BENCH_OUT/run"
# The shared scripts want $BENCH_OUT/.venv/bin/python (dnspython for coldq.py): reuse edgeway's
# through a wrapper (a symlink to a venv's python, outside its venv, loses the venv's packages and
# coldq.py then fails on `import dns`: every cold figure "n/a").
if ! "$BENCH_OUT/.venv/bin/python" -c 'import dns.message' 2>/dev/null; then
  mkdir -p "$BENCH_OUT/.venv/bin"; rm -f "$BENCH_OUT/.venv/bin/python"
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$EDGEWAY_PY" > "$BENCH_OUT/.venv/bin/python"; chmod +x "$BENCH_OUT/.venv/bin/python"
  "$BENCH_OUT/.venv/bin/python" -c 'import dns.message' || { echo "$EDGEWAY_PY has no dnspython" >&2; exit 1; }
fi

CONFIG=$BENCH_OUT/run/edgeway-resolver.yaml
cat > "$CONFIG" <<EOC
# edgeway as the bench's custom resolver: 127.0.0.35:53, root hints of the shared hierarchy
dns:
  listen: ["127.0.0.35:53"]
  recursion:
    enabled: true
    root_hints: $BENCH_OUT/data/zones/root.hints
    allow: ["127.0.0.0/8"]
    query_port: 53
EOC
export CUSTOM_CMD="cd '$REPO' && PYTHONPATH='$REPO/src' exec '$EDGEWAY_PY' -m edgeway serve --config '$CONFIG' --log-level warning"
export CUSTOM_LABEL=${CUSTOM_LABEL:-edgeway}

if [ "${SKIP_SHARED:-0}" != 1 ]; then
  bash "$SHARED/dns_resolver.sh" $RESOLVERS
fi
[ "${SKIP_CAPPED:-0}" = 1 ] && exit 0

# ---------------------------------------------------------------- 2. capped cache-hit capacity
source "$SHARED/common.sh"; source "$SHARED/dns_servers.sh"; source "$SHARED/dns_resolvers.sh"
QUOTA=${QUOTA:-50}
TABLE=$RES/dns_resolver_capacity_table${TAG:+_$TAG}.txt; : > $TABLE
for a in 127.0.0.11 127.0.0.12 127.0.0.13; do in_use $a 53 && { echo "$a:53 already in use" >&2; exit 1; }; done
n=none
trap 'stop $n; cg_done; for x in h-root h-com h-example; do stop $x; done' EXIT
start_nsd h-root $GEN_CPU 127.0.0.11 53 root.zone . lab.zone lab
start_knot h-com $GEN_CPU 127.0.0.12 53 com.zone com
start_nsd h-example $GEN_CPU 127.0.0.13 53 example.com.zone example.com
wait_dns 127.0.0.11 53 . && wait_dns 127.0.0.12 53 com && wait_dns 127.0.0.13 53 || exit 1
repin h-com $GEN_CPU
declare -A IPS=([unbound]=127.0.0.31 [kresd]=127.0.0.32 [pdnsrec]=127.0.0.33 [twisted]=127.0.0.34 [custom]=127.0.0.35)
declare -A FN=([unbound]=start_unbound [kresd]=start_kresd [pdnsrec]=start_pdnsrec [twisted]=start_twres [custom]=start_custom_res)
echo "# dns_resolver capacity $(date -Is) resolver capped at ${QUOTA}% of CPU$SRV_CPU; cache hits (queries_resolver.txt, warmed); dnsperf -c 10 -q 500 on CPU$GEN_CPU; REPS=$REPS DUR=${DUR}s" | tee -a $TABLE
printf "%-16s %-24s %-22s %-12s %s\n" resolver "QPS@${QUOTA}% m/m/m" "est. QPS/core (median)" "$CPUHDR" "throttled_periods" | tee -a $TABLE
qf=$DATA/queries_resolver.txt
for s in $RESOLVERS; do
  ip=${IPS[$s]}; n=cap-res-$s; label=$s; [ $s = custom ] && label=$LABEL_CUSTOM
  if in_use $ip 53; then echo "$label: $ip:53 already in use, skipped" | tee -a $TABLE; continue; fi
  ${FN[$s]} $n $SRV_CPU $ip 53
  for i in $(seq 150); do ss -Hlun "src $ip:53" | grep -q . && break; sleep 0.1; done; sleep 0.5; repin $n $SRV_CPU
  taskset -c $GEN_CPU dnsperf -s $ip -d $qf -n 1 -c 1 -q 20 >/dev/null 2>&1            # warm: every name cached
  wait_dns $ip 53 || { echo "$label: not answering (see $RUN/$n.log)" | tee -a $TABLE; stop $n; continue; }
  cg_cap $n $QUOTA || { echo "no usable cgroup cpu controller (need root)"; stop $n; exit 1; }
  t0=$(cg_throttled)
  taskset -c $GEN_CPU dnsperf -s $ip -d $qf -l 2 -c 10 -q 500 >/dev/null 2>&1
  qps=(); c1=$(cpu_snap)
  for i in $(seq $REPS); do
    qps+=($(taskset -c $GEN_CPU dnsperf -s $ip -d $qf -l $DUR -c 10 -q 500 -t 2 2>&1 | awk '/Queries per second/{print $4}'))
  done
  cpu=$(cpu_busy "$c1" "$(cpu_snap)"); t1=$(cg_throttled)
  med=$(mmm ${qps[@]} | cut -d/ -f2)
  printf "%-16s %-24s %-22s %-12s %s\n" "$label" "$(mmm ${qps[@]})" "$(python3 -c "print(round(float('$med')*100/$QUOTA))" 2>/dev/null || echo n/a)" "$cpu" "$((t1-t0))" | tee -a $TABLE
  stop $n; cg_done
done
echo "tables: $RES/dns_resolver_table*.txt $RES/dns_resolver_cold*.txt $TABLE"
