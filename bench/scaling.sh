#!/bin/bash
# Worker scaling under a fixed CPU budget (issue 16, "Speed"): the server under test runs in a
# cgroup with a CFS quota of SHARE% of a core per worker, spread over both CPUs (no pinning of the
# server; the load generator and the HTTP backends are outside the cgroup and not pinned either).
#
#   sudo bench/scaling.sh all    # l7 then dns
#   sudo bench/scaling.sh l7     # wrk keep-alive: edgeway workers 1 @40%, workers 2 @2x40%, nginx worker_processes 2 @2x40%
#   sudo bench/scaling.sh dns    # dnsperf: edgeway workers 1 @40%, workers 2 @2x40%, NSD server-count 2 @2x40%
#                                # (and nginx / NSD with 1 process @40%: the method check, REF1=0 skips it)
#   sudo SRC=/path/to/other/tree/src bench/scaling.sh all   # bench another tree's edgeway
#
# Prints each figure (median of REPS x DUR s) and the ratios edgeway 2w/1w (goal >= 1.8),
# edgeway 2w / nginx 2w and edgeway 2w / NSD 2 (goal >= 0.60). Each row says whether the quota
# was binding: the cgroup was throttled (cpu.stat nr_throttled > 0) and used at least 90% of its
# budget (cpuacct / cpu.stat usage). On 2 cores the generator, the backends and the loopback
# softirq share the CPUs left over: a row below its budget was limited by them (or by other
# load), not by the quota; the row then also shows its figure extrapolated to the budget, and a
# ratio with such a side is printed both as measured and extrapolated (an estimate).
# Columns: used/budget (% of one core), throttled/periods, gen% (wrk or dnsperf + backends, in
# a cpuacct group of their own, not capped), si% (softirq: loopback network work, charged to no
# cgroup nor quota), others% (the rest of the machine: other people's work), load1 (uptime).
# L7: the shared bench's 3 nginx backends on 127.0.0.1:9001-9003 and its nginx proxy config
# (../shared/bench/http_servers.sh) with worker_processes 2; edgeway with bench/http_l7.yaml on
# :8090 (plus `workers: N` when N > 1). DNS: the shared bench's zone and query file on
# 127.0.0.20:53 (dnsperf -c 10 -q 500 as dns_capacity.sh), edgeway configured as
# bench/dns_auth.sh does, NSD as dns_servers.sh with server-count 2. A build that refuses the
# `workers` key gets a "workers: 2 not supported by this build" row, no figure.
# cgroup v2 (cpu.max) where the cpu controller is on v2, else v1 (cpu.cfs_quota_us + cpuacct).
# env: REPS=3 DUR=10 CONNS=50 DNS_Q=500 SHARE=40 PERIOD=10000 (us) GEN_THREADS=2 (wrk -t,
#   dnsperf -T) SRC (default this checkout's src) PYTHON (default .venv/bin/python)
#   QUIET=30 QUIET_WAIT=60 (before each entry, wait up to QUIET_WAIT s for other load < QUIET% of
#   a core) WAIT_FREE=120 (s to wait for ports another run holds) TAG (table suffix)
#   REF1=1 (also nginx worker_processes 1 / NSD server-count 1 at SHARE%: how far the method lets
#   a reference scale; REF1=0 skips them) SHARED_BENCH BENCH_OUT.
# Needs root (cgroups). Every wrk/dnsperf run is bounded by timeout.
# Results: $BENCH_OUT/results/scaling_<what>_table[_TAG].txt and the raw wrk/dnsperf output.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
EPY=${PYTHON:-$REPO/.venv/bin/python}
SRC=${SRC:-$REPO/src}
WHAT=${1:-}
case $WHAT in l7|dns|all) ;; *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;; esac
[ -x "$EPY" ] || { echo "no $EPY: set PYTHON=/path/to/venv/bin/python" >&2; exit 1; }
[ -d "$SRC/edgeway" ] || { echo "no edgeway package in $SRC (set SRC)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (cgroup CPU quota)" >&2; exit 1; }
set +u   # the shared helpers read unset variables
source "$SHARED/common.sh"; source "$SHARED/http_servers.sh"; source "$SHARED/dns_servers.sh"
RUN=$OUT/run/scaling; mkdir -p "$RUN"   # own pid files: another shared run may use $OUT/run at the same time
CONNS=${CONNS:-50}; DNS_Q=${DNS_Q:-500}; SHARE=${SHARE:-40}; PERIOD=${PERIOD:-10000}; GEN_THREADS=${GEN_THREADS:-2}; WAIT_FREE=${WAIT_FREE:-120}
QUIET=${QUIET:-30}; QUIET_WAIT=${QUIET_WAIT:-60}; REF1=${REF1:-1}
NCPU=$(nproc); ALL=0-$((NCPU - 1))   # "pinned" to every CPU = not pinned
TICK=$(getconf CLK_TCK)
TABLE=$RES/scaling_${WHAT}_table${TAG:+_$TAG}.txt; : > "$TABLE"
declare -A MED=() NOTE=() EST=()

# ---- the cgroup: v2 cpu.max where the cpu controller is on v2, else v1 cpu.cfs_quota_us
CG= ACCT=
if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then CGV=2 CGROOT=/sys/fs/cgroup
elif grep -qw cpu /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then CGV=2 CGROOT=/sys/fs/cgroup/unified
elif [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then CGV=1 CGROOT=/sys/fs/cgroup/cpu
else echo "no cgroup cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us)" >&2; exit 1; fi
# cg_make PCT -> an empty cgroup capped at PCT% of one core (quota over all CPUs per PERIOD us)
# (v1: the usage comes from a twin group in the cpuacct hierarchy)
cg_make() {
  CG=$CGROOT/edgeway_scaling_$$; mkdir -p "$CG"
  [ $CGV = 2 ] || { ACCT=/sys/fs/cgroup/cpuacct/edgeway_scaling_$$; mkdir -p "$ACCT"; }
  local q=$(($1 * PERIOD / 100))
  if [ $CGV = 2 ]; then
    grep -qw cpu $CGROOT/cgroup.subtree_control || echo +cpu > $CGROOT/cgroup.subtree_control
    echo "$q $PERIOD" > $CG/cpu.max
  else echo $PERIOD > $CG/cpu.cfs_period_us; echo $q > $CG/cpu.cfs_quota_us; fi
}
cg_move() { local q; for q in $(tree "$(cat "$RUN/$1.pid")"); do echo "$q" > $CG/cgroup.procs 2>/dev/null || true
  [ $CGV = 2 ] || echo "$q" > $ACCT/cgroup.procs 2>/dev/null || true; done; }
cg_usage() { if [ $CGV = 2 ]; then awk '/^usage_usec/{print $2}' $CG/cpu.stat; else echo $(( $(cat $ACCT/cpuacct.usage) / 1000 )); fi; }   # us
cg_periods() { awk '/^nr_periods/{p=$2} /^nr_throttled/{t=$2} END{print p, t}' $CG/cpu.stat; }
# cg_snap -> "pid ticks name" per process in the cgroup (utime + stime, all threads)
cg_snap() {
  local p; for p in $(cat $CG/cgroup.procs); do
    [ -r /proc/$p/stat ] || continue
    printf '%s %s %s\n' "$p" "$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | awk '{print $12 + $13}')" \
      "$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | sed -E 's/.*edgeway\.workers\.worker --index ([0-9]+).*/worker-\1/; s/.*edgeway serve.*/edgeway/; s/^nginx: ([a-z]+) process.*/nginx-\1/; s/^(nsd).*/\1/' | cut -c1-20 | tr ' ' _)"
  done
}
cg_done() { [ -n "$CG" ] && [ -d "$CG" ] && rmdir "$CG" 2>/dev/null; [ -n "$ACCT" ] && [ -d "$ACCT" ] && rmdir "$ACCT" 2>/dev/null; CG= ACCT=; true; }
# The load generator and backends (this shell's children) are counted, not capped, in a group of their own
if [ $CGV = 2 ]; then GEN=$CGROOT/edgeway_scaling_gen_$$ GENROOT=$CGROOT; else GEN=/sys/fs/cgroup/cpuacct/edgeway_scaling_gen_$$ GENROOT=/sys/fs/cgroup/cpuacct; fi
gen_usage() { if [ $CGV = 2 ]; then awk '/^usage_usec/{print $2}' $GEN/cpu.stat; else echo $(( $(cat $GEN/cpuacct.usage) / 1000 )); fi; }   # us
gen_done() { echo $$ > $GENROOT/cgroup.procs 2>/dev/null; rmdir $GEN 2>/dev/null; true; }
# mach -> "busy softirq" jiffies of the whole machine (/proc/stat; softirq is charged to no cgroup)
mach() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $8}' /proc/stat; }

# busy_now -> busy % of one core of the whole machine over 1 s (when our servers are idle: other agents' work)
busy_now() { local a b; a=$(mach); sleep 1; b=$(mach); echo "${a% *} ${b% *}" | awk -v t=$TICK '{printf "%.0f", 100 * ($2-$1) / t}'; }
# wait_quiet -> wait (QUIET_WAIT s at most) until the others' load is under QUIET% of a core
wait_quiet() { local i b; for i in $(seq $QUIET_WAIT); do b=$(busy_now); [ $b -lt $QUIET ] && return 0; done
  echo "    (the machine stayed busy: ${b}% of a core used by others before this entry)" | tee -a "$TABLE"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# wait_free IP PORT... -> wait (at most WAIT_FREE s) until no one listens there
wait_free() { local ip=$1 p i; shift; for p; do for i in $(seq $((WAIT_FREE * 2))); do in_use $ip $p || break; sleep 0.5; done
  in_use $ip $p && { echo "$ip:$p still in use after ${WAIT_FREE}s (another benchmark?)" >&2; return 1; }; done; true; }

# ---- one entry: start, cap, warm up, REPS timed runs, row
ROW="%-26s %-7s %-24s %-9s %-13s %-17s %-5s %-4s %-7s %s\n"
hdr() { printf "$ROW" entry budget "$1" "$2" "used/budget" "throttled/periods" "gen%" "si%" "others%" load1 | tee -a "$TABLE"; }
# entry KEY LABEL PCT KIND(l7|dns) -- server already started as $RUN/$n.pid and answering
entry() {
  local key=$1 label=$2 pct=$3 kind=$4 i out v=() err=()
  cg_make $pct; cg_move $n; sleep 0.5; cg_move $n   # catch children forked meanwhile
  # another program that took the address meanwhile would answer instead of ours: refuse to measure it
  if ! alive "$(cat $RUN/$n.pid 2>/dev/null)" || [ -z "$(cat $CG/cgroup.procs)" ]; then
    failed $key "$label" "our server is not running (see $RUN/$n.log*): not measured"; return 0; fi
  if [ $kind = l7 ]; then wrk -t$GEN_THREADS -c$CONNS -d2s $URL >/dev/null 2>&1 || true
  else dnsperf -s $IP -p 53 -d $DATA/queries.txt -l 2 -c 10 -q $DNS_Q -T $GEN_THREADS >/dev/null 2>&1 || true; fi
  local ld; ld=$(load1); local s0 p0 t0 t1 s1 p1 u0 u1 g0 g1 m0 m1
  s0=$(cg_snap); p0=$(cg_periods); u0=$(cg_usage); g0=$(gen_usage); m0=$(mach); t0=$(date +%s.%N)
  for i in $(seq $REPS); do
    if [ $kind = l7 ]; then
      out=$(timeout $((DUR + 30)) wrk -t$GEN_THREADS -c$CONNS -d${DUR}s --latency $URL 2>&1) || true
      v+=($(echo "$out" | awk '/Requests\/sec/{printf "%.0f", $2}'))
      err+=($(echo "$out" | awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(",","");n+=$4+$6+$8+$10} END{print n+0}'))
    else
      out=$(timeout $((DUR + 30)) dnsperf -s $IP -p 53 -d $DATA/queries.txt -l $DUR -c 10 -q $DNS_Q -T $GEN_THREADS -t 2 2>&1) || true
      v+=($(echo "$out" | awk '/Queries per second/{printf "%.0f", $4}'))
      err+=($(echo "$out" | awk '/Queries lost/{gsub(/[()%]/,"",$4); print $4}'))
    fi
    echo "$out" > "$RES/scaling_${kind}_${key}_$i.txt"
  done
  t1=$(date +%s.%N); m1=$(mach); g1=$(gen_usage); u1=$(cg_usage); s1=$(cg_snap); p1=$(cg_periods)
  printf "%s\n--\n%s\n" "$s0" "$s1" > "$RES/scaling_${kind}_${key}_cpu.txt"
  local med; med=$(mmm "${v[@]}" | cut -d/ -f2)
  # used% of one core = the cgroup's CPU time (cpuacct / cpu.stat usage) / wall time; binding = throttled and >= 90% used
  # gen% = wrk/dnsperf + backends, si% = softirq (loopback network work, in no cgroup), others% = the rest of the machine
  local cpu; cpu=$(python3 - "$s0" "$s1" "$t0" "$t1" "$TICK" "$pct" "$u0" "$u1" "$g0" "$g1" "$m0" "$m1" <<'EOP'
import sys
a = {l.split()[0]: int(l.split()[1]) for l in sys.argv[1].splitlines() if len(l.split()) >= 2}
b = [l.split() for l in sys.argv[2].splitlines() if len(l.split()) >= 2]
wall = float(sys.argv[4]) - float(sys.argv[3]); tick = int(sys.argv[5]); pct = int(sys.argv[6])
each = [(p[2] if len(p) > 2 else "?", 100 * (int(p[1]) - a.get(p[0], 0)) / tick / wall) for p in b]
used = (int(sys.argv[8]) - int(sys.argv[7])) / 1e4 / wall
gen = (int(sys.argv[10]) - int(sys.argv[9])) / 1e4 / wall
m0, m1 = [list(map(int, x.split())) for x in sys.argv[11:13]]
busy, si = [100 * (m1[i] - m0[i]) / tick / wall for i in (0, 1)]
print(f"{used:.0f} {int(used >= 0.9 * pct)} {gen:.0f} {si:.0f} {max(0, busy - si - used - gen):.0f} " + ",".join(f"{n}:{u:.0f}%" for n, u in each))
EOP
)
  local used full gen si others procs; read -r used full gen si others procs <<< "$cpu"
  local thr=$(( ${p1#* } - ${p0#* } )) per=$(( ${p1% *} - ${p0% *} ))
  local bind=binding; if [ $thr -eq 0 ]; then bind="NOT BINDING (never throttled)"; elif [ $full = 0 ]; then bind="NOT BINDING (below budget: the generator, backends or other load limited it)"; fi
  MED[$key]=$med; NOTE[$key]=$bind; EST[$key]=
  [ $full = 1 ] || EST[$key]=$(python3 -c "import sys; print(round(float(sys.argv[1]) * int(sys.argv[2]) / max(1, float(sys.argv[3]))))" "$med" $pct "$used")
  printf "$ROW" "$label" "$pct%" "$(mmm "${v[@]}")" "$(mmm "${err[@]}")" "$used%/$pct%" "$thr/$per" "$gen" "$si" "$others" "$ld" | tee -a "$TABLE"
  echo "    quota $bind; CPU by process (utime+stime): $procs" | tee -a "$TABLE"
  [ -z "${EST[$key]}" ] || echo "    at the full budget ~${EST[$key]} (extrapolated: median x $pct% / $used% used)" | tee -a "$TABLE"
}
failed() { echo "$2: $3" | tee -a "$TABLE"; MED[$1]=; NOTE[$1]=$3; }
finish() { stop $n || true; cg_done; }   # (stop fails under set -e when the server is already gone)

# edgeway_cfg KIND N -> config file path; with N > 1 the `workers` key (which older builds refuse)
edgeway_cfg() {
  local f=$RUN/edgeway-$1-w$2.yaml
  { [ $2 -gt 1 ] && echo "workers: $2"
    if [ $1 = l7 ]; then cat "$HERE/http_l7.yaml"
    else printf 'dns:\n  listen: ["%s:53"]\n  zones:\n    - {file: "%s", origin: "example.com."}\n' $IP "$DATA/zones/example.com.zone"; fi
  } > "$f"; echo "$f"
}
# run_edgeway KIND N KEY -> one entry, or a "not supported" row when the build refuses `workers`
run_edgeway() {
  local kind=$1 w=$2 key=$3 label="edgeway workers $2" cfg msg
  cfg=$(edgeway_cfg $kind $w)
  if ! msg=$(PYTHONPATH=$SRC "$EPY" -m edgeway check "$cfg" 2>&1); then
    if echo "$msg" | grep -q 'workers'; then failed $key "$label" "workers: $w not supported by this build ($(echo "$msg" | grep workers | head -1))"
    else failed $key "$label" "config refused: $(echo "$msg" | tail -1)"; fi
    return 0
  fi
  n=sc-$kind-ew$w; wait_quiet; free_for $kind || { failed $key "$label" "address in use by another program: not measured"; return 0; }
  start $n $ALL env PYTHONPATH=$SRC "$EPY" -m edgeway serve --config "$cfg" --log-level warning
  if ready $kind && procs_up $w; then entry $key "$label" $((SHARE * w)) $kind
  else failed $key "$label" "failed to start (see $RUN/$n.log)"; fi
  finish; trim_log $n
}
free_for() { if [ $1 = l7 ]; then wait_free 127.0.0.1 ${URL##*:}; else wait_free $IP 53; fi; }
ready() { if [ $1 = l7 ]; then wait_tcp 127.0.0.1 ${URL##*:} && [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' $URL/)" = 200 ]
          else wait_dns $IP 53; fi; }
# procs_up N -> with N > 1, wait (10 s at most) until the supervisor has N children
procs_up() { [ $1 -gt 1 ] || return 0; local i c; for i in $(seq 50); do c=$(pgrep -c -P "$(cat $RUN/$n.pid)" || true)
  [ "$c" -ge $1 ] && return 0; sleep 0.2; done; echo "only $c worker processes after 10 s" >&2; return 1; }
trim_log() { [ -f $RUN/$1.log ] && { tail -n 200 $RUN/$1.log > $RUN/$1.log.tail; rm -f $RUN/$1.log; }; true; }   # the access log is large
ratio() { local a=${MED[$2]:-} b=${MED[$3]:-}
  if [ -n "$a" ] && [ -n "$b" ]; then
    python3 -c "import sys; r=float(sys.argv[1])/float(sys.argv[2]); print(f'%-36s {sys.argv[1]} / {sys.argv[2]} = {r:.2f}  (goal >= {sys.argv[4]}: {\"met\" if r >= float(sys.argv[4]) else \"NOT met\"})' % sys.argv[3])" "$a" "$b" "$1" "$4"
  else echo "$1: n/a ($2: ${NOTE[$2]:-no figure}; $3: ${NOTE[$3]:-no figure})"; fi | tee -a "$TABLE"
  for k in $2 $3; do case ${NOTE[$k]:-} in NOT*) echo "    caution: $k quota ${NOTE[$k]}" | tee -a "$TABLE" ;; esac; done
  if [ -n "$a" ] && [ -n "$b" ] && [ -n "${EST[$2]:-}${EST[$3]:-}" ]; then   # both at their full budget, extrapolated where below it
    python3 -c "import sys; print(f'    with the side(s) below budget extrapolated to it: {sys.argv[1]} / {sys.argv[2]} = {float(sys.argv[1])/float(sys.argv[2]):.2f} (an estimate, not a measurement)')" \
      "${EST[$2]:-$a}" "${EST[$3]:-$b}" | tee -a "$TABLE"; fi
}

n=; trap 'set +e; finish; stop backends; gen_done' EXIT
mkdir -p $GEN; echo $$ > $GEN/cgroup.procs
trap 'echo "scaling.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
build=$(git -C "$SRC" log -1 --format='%h %s' 2>/dev/null | cut -c1-70 || echo "?"); branch=$(git -C "$SRC" branch --contains HEAD --format='%(refname:short)' 2>/dev/null | grep -v '^(' | head -3 | tr '\n' ' ' || true)
echo "# scaling $(date -Is) $WHAT; edgeway from $SRC (commit $build; in branches: ${branch:-none}); server in a cgroup v$CGV CPU quota of ${SHARE}% of a core per worker, period ${PERIOD}us, over CPUs $ALL (not pinned); generator not pinned, -t/-T $GEN_THREADS; REPS=$REPS DUR=${DUR}s" | tee -a "$TABLE"

# run_nginx N -> the shared bench's nginx proxy (http_servers.sh) with worker_processes N, SHARE x N %
run_nginx() {
  n=sc-l7-nginx$1; URL=http://127.0.0.1:8081; wait_quiet
  free_for l7 || { failed l7_nginx$1 "nginx worker_processes $1" "address in use by another program: not measured"; return 0; }
  ( start() { :; }; start_nginx_lb $n $ALL )   # writes the shared config only; then the worker count
  sed -i "s/^worker_processes 1;/worker_processes $1;/" $RUN/$n/nginx.conf; grep -q "^worker_processes $1;" $RUN/$n/nginx.conf
  start $n $ALL nginx -p $RUN/$n -c $RUN/$n/nginx.conf
  if ready l7 && procs_up $1; then entry l7_nginx$1 "nginx worker_processes $1" $((SHARE * $1)) l7
  else failed l7_nginx$1 "nginx worker_processes $1" "failed to start (see $RUN/$n.log)"; fi
  finish
}
# run_nsd N -> NSD as the shared bench's dns_servers.sh starts it, with server-count N, SHARE x N %
run_nsd() {
  n=sc-dns-nsd$1; wait_quiet
  free_for dns || { failed dns_nsd$1 "nsd server-count $1" "address in use by another program: not measured"; return 0; }
  ( start() { :; }; start_nsd $n $ALL $IP 53 example.com.zone example.com )   # writes the shared config only
  sed -i "s/^  server-count: 1\$/  server-count: $1/" $RUN/$n/nsd.conf; grep -q "server-count: $1\$" $RUN/$n/nsd.conf
  start $n $ALL nsd -d -c $RUN/$n/nsd.conf
  if ready dns; then entry dns_nsd$1 "nsd server-count $1" $((SHARE * $1)) dns
  else failed dns_nsd$1 "nsd server-count $1" "failed to start (see $RUN/$n.log)"; fi
  finish
}

if [ $WHAT != dns ]; then
  URL=http://127.0.0.1:8090
  echo "## L7 keep-alive: wrk -t$GEN_THREADS -c$CONNS, 3 nginx backends 127.0.0.1:9001-9003 (not in the cgroup)" | tee -a "$TABLE"
  wait_free 127.0.0.1 9001 9002 9003 8090 8081
  start_backends $ALL; wait_tcp 127.0.0.1 9003
  hdr "req/s min/med/max" "errors"
  run_edgeway l7 1 l7_ew1
  run_edgeway l7 2 l7_ew2
  [ "$REF1" = 0 ] || run_nginx 1
  run_nginx 2
  stop backends
  ratio "L7 scaling edgeway 2w/1w" l7_ew2 l7_ew1 1.8
  ratio "L7 edgeway 2w / nginx 2w" l7_ew2 l7_nginx2 0.60
  [ "$REF1" = 0 ] || ratio "L7 scaling nginx 2w/1w (method check)" l7_nginx2 l7_nginx1 1.8
fi
if [ $WHAT != l7 ]; then
  IP=127.0.0.20
  echo "## DNS authoritative: dnsperf -c 10 -q $DNS_Q -T $GEN_THREADS, queries.txt, $IP:53" | tee -a "$TABLE"
  wait_free $IP 53
  hdr "QPS min/med/max" "lost%"
  run_edgeway dns 1 dns_ew1
  run_edgeway dns 2 dns_ew2
  [ "$REF1" = 0 ] || run_nsd 1
  run_nsd 2
  ratio "DNS scaling edgeway 2w/1w" dns_ew2 dns_ew1 1.8
  ratio "DNS edgeway 2w / nsd 2" dns_ew2 dns_nsd2 0.60
  [ "$REF1" = 0 ] || ratio "DNS scaling nsd 2/1 (method check)" dns_nsd2 dns_nsd1 1.8
fi
echo "table: $TABLE"
