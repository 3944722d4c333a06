#!/bin/bash
# The cost of metrics (issue 15's goal: metrics on >= 0.95 of off), L7 keep-alive and DNS
# authoritative, two edgeway trees side by side under the same load at the same time:
#   off = the tree before any counting (BASE, default da73e86: no counter, no /metrics);
#   on  = this tree ($REPO/src) with the admin listener on and /metrics scraped every second.
# Counting cannot be switched off (it is plain integer additions in the hot paths), so "off"
# has to be the code without it; scraping every second adds the rendering cost as Prometheus
# would. Both servers are pinned to the same core (CPU 1) and get the same load from their own
# generator (CPU 0), so a shared machine's noise hits both; each is measured by the CPU time
# it spent per request/query (utime+stime of /proc/PID/stat). At a CPU cap (one core, a
# cgroup quota) throughput is that cap over the CPU per request, so
#     ratio = CPU per request off / CPU per request on   (= capped throughput on / off)
# and the request counts are printed too (both share CPU 1, so they compare when the core is
# the limit). No cgroup quota is needed, which this machine (no cpu controller) cannot give.
#   bench/metrics_cost.sh [R=5 DUR=5 BASE=rev QPS=8000 CONNS=20 PYTHON=...]
#   SCRAPE=N scrapes every N seconds (0: never).
#   ON=/path/to/src measures another tree as "on" (say, a merge of the metrics branches, its
#   extensions built) instead of this one.
# Ports: nginx 19101-19103 (bench/http_l7_backends.sh's, moved), L7 off/on 18196/18197, DNS 18253/18254,
# admin 18199.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
BASE=${BASE:-da73e86}; ON=${ON:-$REPO/src}; DUR=${DUR:-5}; R=${R:-5}; QPS=${QPS:-8000}; CONNS=${CONNS:-20}
D=$(mktemp -d /tmp/edgeway-mcost.XXXXXX)
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf $D' EXIT
# the base tree with its own C extensions built (the .so of this tree may not match its sources)
mkdir -p $D/off && git -C $REPO archive "$BASE" | tar -x -C $D/off
(cd $D/off && $PY setup.py -q build_ext --inplace >$D/build.log 2>&1) \
  || { echo "cannot build $BASE's extensions (see $D/build.log)" >&2; cat $D/build.log >&2; exit 1; }
python3 "$SHARED/gen_data.py" $D/data >/dev/null
openssl rand -hex 32 > $D/token && chmod 600 $D/token

# the same config for both, the benchmark's L7 one (access log off: it is not what is measured)
for side in off:18196:18253 on:18197:18254; do
  IFS=: read -r name http dns <<< "$side"
  sed -e 's/127.0.0.1:900\([123]\)/127.0.0.1:1910\1/g' -e "s/127.0.0.1:8090/127.0.0.1:$http/" \
      -e "s/access_log: true/access_log: false/" "$HERE/http_l7.yaml" > $D/$name.yaml
  printf 'dns:\n  listen: ["127.0.0.1:%s"]\n  zones: [{file: "%s", origin: "example.com."}]\n' \
      $dns $D/data/zones/example.com.zone >> $D/$name.yaml
done
printf 'admin: {listen: "127.0.0.1:18199", token_file: "%s"}\n' $D/token >> $D/on.yaml

# the L7 benches' nginx, on ports of its own (bench/http_l7_cpu_ab.sh may run at the same time)
source "$HERE/http_l7_backends.sh"; backend_nginx_conf $D; sed -i 's/127.0.0.1:1900/127.0.0.1:1910/' $D/nginx.conf
taskset -c 0 nginx -p $D -c $D/nginx.conf & PIDS+=($!)
(cd $D && PYTHONPATH=$D/off/src exec taskset -c 1 $PY -m edgeway serve --config $D/off.yaml --log-level warning) \
    >$D/off.log 2>&1 & POFF=$!; PIDS+=($POFF)
(cd $D && PYTHONPATH=$ON exec taskset -c 1 $PY -m edgeway serve --config $D/on.yaml --log-level warning) \
    >$D/on.log 2>&1 & PON=$!; PIDS+=($PON)
for _ in $(seq 150); do      # up to 15 s: both answer (a loaded machine starts Python slowly)
  curl -sf -o /dev/null -H "Authorization: Bearer $(cat $D/token)" http://127.0.0.1:18199/metrics \
    && curl -sf -o /dev/null http://127.0.0.1:18196/ && break
  sleep 0.1
done
curl -sf -o /dev/null -H "Authorization: Bearer $(cat $D/token)" http://127.0.0.1:18199/metrics \
  || { echo "no /metrics on the 'on' side (see $D/on.log)" >&2; cat $D/on.log >&2; exit 1; }
curl -sf -o /dev/null http://127.0.0.1:18196/ \
  || { echo "the 'off' side does not answer (see $D/off.log)" >&2; cat $D/off.log >&2; exit 1; }
curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer x" http://127.0.0.1:18199/metrics | grep -q 401
# SCRAPE=0: no scraping (to tell the cost of counting from the cost of rendering)
[ "${SCRAPE:-1}" = 0 ] || ( while sleep ${SCRAPE:-1}; do curl -s -o /dev/null -H "Authorization: Bearer $(cat $D/token)" \
    http://127.0.0.1:18199/metrics; done ) & PIDS+=($!)

tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
declare -A RES
run_l7() {
  wrk -t1 -c$CONNS -d1s http://127.0.0.1:18196/ >/dev/null & local w=$!   # warm up both
  wrk -t1 -c$CONNS -d1s http://127.0.0.1:18197/ >/dev/null; wait $w
  local a0 b0 a1 b1; a0=$(cpu $POFF); b0=$(cpu $PON)
  taskset -c 0 wrk -t1 -c$CONNS -d${DUR}s http://127.0.0.1:18196/ > $D/w-off.txt & local wa=$!
  taskset -c 0 wrk -t1 -c$CONNS -d${DUR}s http://127.0.0.1:18197/ > $D/w-on.txt & local wb=$!
  wait $wa $wb
  a1=$(cpu $POFF); b1=$(cpu $PON)
  report l7-ka off $((a1-a0)) $(awk '/requests in/ {print $1}' $D/w-off.txt) "$(grep -E 'Non-2xx|Socket errors' $D/w-off.txt || true)"
  report l7-ka on  $((b1-b0)) $(awk '/requests in/ {print $1}' $D/w-on.txt) "$(grep -E 'Non-2xx|Socket errors' $D/w-on.txt || true)"
}
run_dns() {
  local a0 b0 a1 b1; a0=$(cpu $POFF); b0=$(cpu $PON)
  taskset -c 0 dnsperf -s 127.0.0.1 -p 18253 -d $D/data/queries.txt -l $DUR -Q $QPS -c 4 -q 200 > $D/d-off.txt 2>&1 & local da=$!
  taskset -c 0 dnsperf -s 127.0.0.1 -p 18254 -d $D/data/queries.txt -l $DUR -Q $QPS -c 4 -q 200 > $D/d-on.txt 2>&1 & local db=$!
  wait $da $db
  a1=$(cpu $POFF); b1=$(cpu $PON)
  report dns off $((a1-a0)) $(awk '/Queries completed/ {print $3}' $D/d-off.txt) "$(grep -E 'Queries lost' $D/d-off.txt | xargs)"
  report dns on  $((b1-b0)) $(awk '/Queries completed/ {print $3}' $D/d-on.txt) "$(grep -E 'Queries lost' $D/d-on.txt | xargs)"
}
report() {   # test side cpu-ticks count note
  local us; us=$(awk -v c=$3 -v t=$tick -v n=$4 'BEGIN {printf "%.2f", c/t/n*1e6}')
  RES[$1-$2]="${RES[$1-$2]:-} $us"
  RES[$1-$2-n]="${RES[$1-$2-n]:-} $4"
  printf "%-6s %-4s %9d answered  %7.2f us CPU each  %s\n" $1 $2 $4 $us "$5"
}
for r in $(seq $R); do
  echo "# round $r"
  run_l7
  run_dns
done
echo "# medians of $R x ${DUR}s; off = $BASE (default da73e86: no counting), on = $ON ($(git -C $REPO rev-parse --short HEAD)$(git -C $REPO diff --quiet || echo +dirty)) with /metrics scraped every ${SCRAPE:-1}s (0: never)"
for t in l7-ka dns; do
  python3 - $t "${RES[$t-off]}" "${RES[$t-on]}" "${RES[$t-off-n]}" "${RES[$t-on-n]}" <<'PY'
import statistics, sys
name = sys.argv[1]
off, on, n_off, n_on = ([float(x) for x in a.split()] for a in sys.argv[2:6])
m_off, m_on = statistics.median(off), statistics.median(on)
pairs = sorted(a / b for a, b in zip(off, on))
print(f"{name:<6} CPU/answer off {m_off:.2f} us, on {m_on:.2f} us: on/off capped throughput {m_off / m_on:.3f} "
      f"(per round {', '.join(f'{p:.3f}' for p in pairs)}); answered on/off {statistics.median(n_on) / statistics.median(n_off):.3f}"
      f"  goal >= 0.95")
PY
done
