#!/bin/bash
# CPU time per request of `edgeway serve` (utime+stime from /proc/PID/stat) under a fixed,
# bounded wrk load, keep-alive and Connection: close. Unlike req/s it does not depend much on
# what else runs on the machine. Backends: one nginx on 127.0.0.1:19001-19003.
#   bench/http_l7_cpu.sh [DUR=5 CONNS=20 REPS=1 PYTHON=... SRC=... WITH_NGINX=1]
# SRC: the edgeway source tree to run (default: this checkout's src), for A/B runs.
# WITH_NGINX=1 also measures nginx as the proxy (proxy_pass to the same backends with upstream
# keepalive, as the shared benchmark's nginx entry) on 127.0.0.1:18091, in turn with edgeway,
# so that edgeway's figure can be quoted as a multiple of nginx's in the same harness.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
SRC=${SRC:-$REPO/src}
DUR=${DUR:-5}; CONNS=${CONNS:-20}; REPS=${REPS:-1}
D=$(mktemp -d /tmp/edgeway-cpu.XXXXXX)
source "$HERE/http_l7_backends.sh"; backend_nginx_conf $D
# nginx as the proxy: one process (master_process off) so that its CPU is one /proc entry
mkdir -p $D/lb
cat > $D/lb/nginx.conf <<EOC
daemon off; master_process off; worker_processes 1; pid $D/lb/nginx.pid; error_log $D/lb/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $D/lb; proxy_temp_path $D/lb; fastcgi_temp_path $D/lb;
  uwsgi_temp_path $D/lb; scgi_temp_path $D/lb;
  keepalive_requests 100000000; keepalive_timeout 300s;
  upstream b { server 127.0.0.1:19001; server 127.0.0.1:19002; server 127.0.0.1:19003;
               keepalive 128; keepalive_requests 100000000; }
  server { listen 127.0.0.1:18091 backlog=4096;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOC
sed -e 's/127.0.0.1:900\([123]\)/127.0.0.1:1900\1/g; s/127.0.0.1:8090/127.0.0.1:18090/' \
    -e "s/access_log: true/access_log: ${ACCESS_LOG:-true}/" "$HERE/http_l7.yaml" > $D/edgeway.yaml
nginx -p $D -c $D/nginx.conf & NG=$!
PYTHONPATH=$SRC $PY -m edgeway serve --config $D/edgeway.yaml --log-level warning 2>/dev/null & EW=$!
LB=
if [ -n "${WITH_NGINX:-}" ]; then nginx -p $D/lb -c $D/lb/nginx.conf & LB=$!; fi
trap 'kill $EW $NG $LB 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
sleep 1.5
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14, $15}' /proc/$1/stat; }   # utime stime, in ticks
measure() {   # name pid port mode
  local hdr=(); [ $4 = close ] && hdr=(-H "Connection: close")
  wrk -t1 -c$CONNS -d1s "${hdr[@]}" http://127.0.0.1:$3/ >/dev/null   # warm up
  local c0 c1 out n
  c0=$(cpu $2)
  out=$(wrk -t1 -c$CONNS -d${DUR}s "${hdr[@]}" http://127.0.0.1:$3/)
  c1=$(cpu $2)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo $c0 $c1 | awk -v w=$1 -v m=$4 -v t=$tick -v n=$n \
    '{u = ($3-$1)/t/n*1e6; s = ($4-$2)/t/n*1e6
      printf "%-8s %-6s %8d requests  %6.1f us CPU/request (user %5.1f, system %5.1f)\n", w, m, n, u+s, u, s}'
}
for _ in $(seq $REPS); do
  for mode in ka close; do
    measure edgeway $EW 18090 $mode
    [ -z "$LB" ] || measure nginx $LB 18091 $mode
  done
done
