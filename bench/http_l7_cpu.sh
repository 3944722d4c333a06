#!/bin/bash
# CPU time per request of `edgeway serve` (utime+stime from /proc/PID/stat) under a fixed,
# bounded wrk load, keep-alive and Connection: close. Unlike req/s it does not depend on
# what else runs on the machine. Backends: one nginx on 127.0.0.1:19001-19003.
#   bench/http_l7_cpu.sh [DUR=5 CONNS=20 PYTHON=...]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
DUR=${DUR:-5}; CONNS=${CONNS:-20}
D=$(mktemp -d /tmp/edgeway-cpu.XXXXXX)
cat > $D/nginx.conf <<EOC
daemon off; worker_processes 1; pid $D/nginx.pid; error_log $D/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $D; proxy_temp_path $D; fastcgi_temp_path $D;
  uwsgi_temp_path $D; scgi_temp_path $D; default_type text/plain;
  server { listen 127.0.0.1:19001 backlog=4096; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:19002 backlog=4096; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:19003 backlog=4096; location / { return 200 "ok"; } }
}
EOC
sed -e 's/127.0.0.1:900\([123]\)/127.0.0.1:1900\1/g; s/127.0.0.1:8090/127.0.0.1:18090/' \
    -e "s/access_log: true/access_log: ${ACCESS_LOG:-true}/" "$HERE/http_l7.yaml" > $D/edgeway.yaml
nginx -p $D -c $D/nginx.conf & NG=$!
PYTHONPATH=$REPO/src $PY -m edgeway serve --config $D/edgeway.yaml --log-level warning 2>/dev/null & EW=$!
trap 'kill $EW $NG 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
sleep 1.5
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$EW/stat; }
for mode in ka close; do
  hdr=(); [ $mode = close ] && hdr=(-H "Connection: close")
  wrk -t1 -c$CONNS -d1s "${hdr[@]}" http://127.0.0.1:18090/ >/dev/null   # warm up
  c0=$(cpu)
  out=$(wrk -t1 -c$CONNS -d${DUR}s "${hdr[@]}" http://127.0.0.1:18090/)
  c1=$(cpu)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v m=$mode -v c=$((c1-c0)) -v t=$tick -v n=$n 'BEGIN {printf "%-6s %8d requests  %6.1f us CPU/request\n", m, n, c/t/n*1e6}'
done
