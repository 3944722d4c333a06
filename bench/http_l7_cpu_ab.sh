#!/bin/bash
# CPU time per request of two edgeway trees side by side, under the same wrk load at the same
# time (one wrk each), keep-alive and Connection: close: on a machine shared with other work
# both runs see the same noise, which alternating runs of bench/http_l7_cpu.sh do not.
#   A=/path/to/main/src B=src bench/http_l7_cpu_ab.sh [R=5 DUR=5 PYTHON=...]
# Backends: one nginx on 127.0.0.1:19001-19003; A on :18096, B on :18097.
# B_REQUEST_ID=false and B_LOG_FORMAT=json set B's listener request_id and log format (A keeps
# the config as it is, so that A can be a tree from before those keys).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
A=${A:?set A to the src tree to compare with}; B=${B:-$REPO/src}
DUR=${DUR:-5}; R=${R:-5}
D=$(mktemp -d /tmp/edgeway-ab.XXXXXX)
for side in a:18096 b:18097; do
  sed -e 's/127.0.0.1:900\([123]\)/127.0.0.1:1900\1/g' -e "s/127.0.0.1:8090/127.0.0.1:${side#*:}/" \
      -e "s/access_log: true/access_log: ${ACCESS_LOG:-true}/" "$HERE/http_l7.yaml" > $D/${side%%:*}.yaml
done
[ -z "${B_REQUEST_ID:-}" ] || sed -i "s/access_log: \(.*\)/access_log: \1\n    request_id: $B_REQUEST_ID/" $D/b.yaml
[ -z "${B_LOG_FORMAT:-}" ] || echo "log: {format: $B_LOG_FORMAT}" >> $D/b.yaml
source "$HERE/http_l7_backends.sh"; backend_nginx_conf $D
nginx -p $D -c $D/nginx.conf & NG=$!
PYTHONPATH=$A $PY -m edgeway serve --config $D/a.yaml --log-level warning 2>/dev/null & PA=$!
PYTHONPATH=$B $PY -m edgeway serve --config $D/b.yaml --log-level warning 2>/dev/null & PB=$!
trap 'kill $PA $PB $NG 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
sleep 2
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14, $15}' /proc/$1/stat; }
report() {   # name mode "utime0 stime0" "utime1 stime1" wrk-output-file
  local n; n=$(awk '/requests in/ {print $1}' $5)
  echo $3 $4 | awk -v w=$1 -v m=$2 -v t=$tick -v n=$n '{u = ($3-$1)/t/n*1e6; s = ($4-$2)/t/n*1e6
    printf "%s %-6s %8d requests  %6.1f us CPU/request (user %5.1f, system %5.1f)\n", w, m, n, u+s, u, s}'
}
for _ in $(seq $R); do
  for mode in ka close; do
    hdr=(); [ $mode = close ] && hdr=(-H "Connection: close")
    wrk -t1 -c20 -d1s "${hdr[@]}" http://127.0.0.1:18096/ >/dev/null & W=$!
    wrk -t1 -c20 -d1s "${hdr[@]}" http://127.0.0.1:18097/ >/dev/null; wait $W
    a0=$(cpu $PA); b0=$(cpu $PB)
    wrk -t1 -c20 -d${DUR}s "${hdr[@]}" http://127.0.0.1:18096/ > $D/wa.txt & WA=$!
    wrk -t1 -c20 -d${DUR}s "${hdr[@]}" http://127.0.0.1:18097/ > $D/wb.txt & WB=$!
    wait $WA $WB
    a1=$(cpu $PA); b1=$(cpu $PB)
    report A $mode "$a0" "$a1" $D/wa.txt
    report B $mode "$b0" "$b1" $D/wb.txt
  done
done
