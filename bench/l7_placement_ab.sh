#!/bin/bash
# Where does edgeway's unpinned L7 efficiency go? (issue 16, bench/results/scaling_l7_2026-12-03.md)
# Runs entries one after the other in one go, each the server in a cgroup with a CFS quota (as
# bench/scaling.sh: v1 cpu.cfs_quota_us, period 10 ms), wrk -t2 -c50 keep-alive and the 3 nginx
# backends unpinned, outside the cgroup. An entry is SERVER:PROCS:PCT:PLACE
#   SERVER  ew (edgeway, bench/http_l7.yaml, `workers: PROCS` when > 1) or ng (nginx proxy of ../shared/bench)
#   PCT     the quota, % of one core for the whole group
#   PLACE   none (not pinned), auto (process i on CPU i: taskset for edgeway's workers, nginx
#           `worker_cpu_affinity auto`), or a CPU list for
#           every process (taskset, e.g. 1)
# Per entry: req/s of each rep, the group's CPU (utime+stime of every process, /proc; in
# brackets the user part, % of it), requests
# per CPU-second (the efficiency: what a binding quota turns into req/s), context switches and
# CPU migrations of the server's processes (perf stat, software events: the VM has no hardware
# counters; in brackets voluntary (v) and involuntary (i) switches per request, /proc), and how wrk's 50 connections were spread over the processes (ss, 2 s into each rep).
#   sudo flock /tmp/edgeway-bench.lock env REPS=2 DUR=8 bench/l7_placement_ab.sh ew:1:25:none ew:1:25:1 ng:1:25:none
# env: REPS=2 DUR=8 CONNS=50 SRC PYTHON (as scaling.sh) EW_CFG_EXTRA (yaml lines added to edgeway's config)
#   PROBES=1 (0: no perf stat and no ss during the reps, to see what they cost) WRK_THREADS=2
#   (wrk -t) GEN_CPUS (default: every CPU) pins wrk and the backends (GEN_CPUS=0 with PLACE 1:
#   the layout of bench/http_l7.sh, where the server has a CPU of its own)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
EPY=${PYTHON:-$REPO/.venv/bin/python}
SRC=${SRC:-$REPO/src}
[ $# -gt 0 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (cgroup CPU quota)" >&2; exit 1; }
set +u
source "$SHARED/common.sh"; source "$SHARED/http_servers.sh"
RUN=$OUT/run/placement; mkdir -p "$RUN"
GEN_CPUS=${GEN_CPUS:-}; WRK_THREADS=${WRK_THREADS:-2}; PROBES=${PROBES:-1}; REPS=${REPS:-2}; DUR=${DUR:-8}; CONNS=${CONNS:-50}; TICK=$(getconf CLK_TCK); NCPU=$(nproc); ALL=0-$((NCPU - 1))
CG=/sys/fs/cgroup/cpu/edgeway_placement_$$
TABLE=$RES/l7_placement_table.txt; : > "$TABLE"
n=
cleanup() { set +e; [ -n "$n" ] && stop $n; stop backends; [ -d $CG ] && rmdir $CG; true; }
trap cleanup EXIT
procs() { tree "$(cat "$RUN/$n.pid")" | while read -r p; do
  c=$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null || true)
  case $c in *"workers.worker --index"*|"nginx: worker"*) echo "$p w" ;; *"edgeway serve"*|"nginx: master"*) echo "$p m" ;; esac; done; }
ticks() { local p s=0; for p; do s=$((s + $(sed 's/.*) //' /proc/$p/stat | awk '{print $12 + $13}'))); done; echo $s; }
# csw PID... -> "voluntary nonvoluntary" context switches of every thread of them (/proc)
csw() { local p; for p; do cat /proc/$p/task/*/status 2>/dev/null; done | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v+0, n+0}'; }
uticks() { local p s=0; for p; do s=$((s + $(sed 's/.*) //' /proc/$p/stat | awk '{print $12}'))); done; echo $s; }   # user only
echo "# l7_placement_ab $(date -Is); edgeway $(git -C "$SRC" log -1 --format='%h' 2>/dev/null); wrk -t$WRK_THREADS -c$CONNS keep-alive, wrk and backends on CPUs ${GEN_CPUS:-$ALL}, REPS=$REPS DUR=${DUR}s; quota period 10 ms; load1 $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$TABLE"
printf "%-18s %-22s %-10s %-9s %-12s %-22s %-14s %s\n" entry "req/s each rep" "cpu%" "req/cpu-s" "worker cpu%" "ctxsw/s" "migr/s" "conns per worker" | tee -a "$TABLE"
start_backends ${GEN_CPUS:-$ALL}; wait_tcp 127.0.0.1 9003
for e; do
  IFS=: read -r srv np pct place <<< "$e"
  if [ $srv = ew ]; then
    port=8090; cfg=$RUN/ew.yaml
    { [ $np -gt 1 ] && echo "workers: $np"; [ -n "${EW_CFG_EXTRA:-}" ] && printf '%s\n' "$EW_CFG_EXTRA"; cat "$HERE/http_l7.yaml"; } > $cfg
    n=pl-ew; start $n $ALL env PYTHONPATH=$SRC "$EPY" -m edgeway serve --config $cfg --log-level warning
  else
    port=8081; n=pl-ng
    ( start() { :; }; start_nginx_lb $n $ALL )
    sed -i "s/^worker_processes 1;/worker_processes $np;/" $RUN/$n/nginx.conf
    [ $place = auto ] && sed -i "s/^worker_processes $np;/worker_processes $np;\nworker_cpu_affinity auto;/" $RUN/$n/nginx.conf
    start $n $ALL nginx -p $RUN/$n -c $RUN/$n/nginx.conf
  fi
  url=http://127.0.0.1:$port/; wait_tcp 127.0.0.1 $port
  want=$np; [ $srv = ew ] && [ $np = 1 ] && want=0   # one edgeway process: no worker processes
  for i in $(seq 50); do [ "$(procs | grep -c ' w$' || true)" -ge $want ] && break; sleep 0.2; done
  sleep 0.5
  mkdir -p $CG; echo 10000 > $CG/cpu.cfs_period_us; echo $((pct * 100)) > $CG/cpu.cfs_quota_us
  for p in $(tree "$(cat "$RUN/$n.pid")"); do echo $p > $CG/cgroup.procs; done
  mapfile -t W < <(procs | awk '$2=="w"{print $1}'); [ ${#W[@]} -gt 0 ] || mapfile -t W < <(procs | awk '{print $1}')
  ALLP=$(tree "$(cat "$RUN/$n.pid")" | tr '\n' ' ')
  case $place in
    none) ;;
    auto) if [ $srv = ew ]; then i=0; for p in "${W[@]}"; do taskset -a -pc $((i % NCPU)) $p >/dev/null; i=$((i + 1)); done; fi ;;
    *) for p in $ALLP; do taskset -a -pc $place $p >/dev/null; done ;;
  esac
  WRK="taskset -c ${GEN_CPUS:-$ALL} wrk"
  $WRK -t$WRK_THREADS -c$CONNS -d2s $url >/dev/null 2>&1 || true
  v=(); t0=$(ticks $ALLP); u0=$(uticks $ALLP); c0=$(csw $ALLP); w0=(); for p in "${W[@]}"; do w0+=($(ticks $p)); done; s0=$(date +%s.%N)
  : > $RUN/perf.txt; pp=
  if [ $PROBES = 1 ]; then
    perf stat -x, -e context-switches,cpu-migrations -p "$(echo $ALLP | tr ' ' ,)" -o $RUN/perf.txt -- sleep $((REPS * DUR)) &
    pp=$!
  fi
  conns=
  for r in $(seq $REPS); do
    $WRK -t$WRK_THREADS -c$CONNS -d${DUR}s $url > $RUN/wrk.txt 2>&1 &
    wp=$!; sleep 2
    [ $PROBES = 1 ] && conns="$conns${conns:+ }$(for p in "${W[@]}"; do ss -Htnp state established "( sport = :$port )" | grep -c "pid=$p," || true; done | paste -sd/)"
    wait $wp || true
    v+=($(awk '/Requests\/sec/{printf "%.0f", $2}' $RUN/wrk.txt))
    grep -q "Socket errors\|Non-2xx" $RUN/wrk.txt && grep "Socket errors\|Non-2xx" $RUN/wrk.txt | sed "s/^/    $e: /" | tee -a "$TABLE"
  done
  [ -z "$pp" ] || wait $pp || true
  s1=$(date +%s.%N); t1=$(ticks $ALLP); u1=$(uticks $ALLP); c1=$(csw $ALLP); wcpu=(); i=0
  for p in "${W[@]}"; do wcpu+=($(python3 -c "import sys; print(round(100*($(ticks $p)-${w0[$i]})/$TICK/($s1-$s0)))")); i=$((i + 1)); done
  read -r cpu eff cs mg < <(python3 - "$t0" "$t1" "$s0" "$s1" "$TICK" "$RUN/perf.txt" "$u0" "$u1" "$c0" "$c1" "${v[@]}" <<'EOP'
import sys
t0, t1, s0, s1, tick = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
ev = {}
for line in open(sys.argv[6]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        ev[f[2]] = float(f[0])
u0, u1 = int(sys.argv[7]), int(sys.argv[8])
(v0, n0), (v1, n1) = [map(int, x.split()) for x in sys.argv[9:11]]
reqs = [float(x) for x in sys.argv[11:]]
wall = s1 - s0; cpu = (t1 - t0) / tick / wall
mean = sum(reqs) / len(reqs)
user = (u1 - u0) / max(1, t1 - t0)
nreq = mean * wall   # (about: wrk's mean rate over the timed window)
print(f"{100 * cpu:.0f}({100 * user:.0f}u) {mean / cpu:.0f} {ev.get('context-switches', 0) / wall:.0f}"
      f"({(v1 - v0) / nreq:.2f}v/{(n1 - n0) / nreq:.2f}i) {ev.get('cpu-migrations', 0) / wall:.0f}")
EOP
)
  printf "%-18s %-22s %-10s %-9s %-12s %-22s %-14s %s\n" "$e" "$(echo ${v[@]} | tr ' ' /)" "$cpu" "$eff" "$(echo ${wcpu[@]} | tr ' ' /)" "$cs" "$mg" "$conns" | tee -a "$TABLE"
  stop $n; n=; rmdir $CG
done
echo "table: $TABLE"
