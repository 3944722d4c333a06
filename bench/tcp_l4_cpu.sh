#!/bin/bash
# CPU time per proxied TCP connection (utime+stime from /proc/PID/stat) of `edgeway serve` and of
# HAProxy (mode tcp, as in ../shared/bench/tcp_l4.sh), under the same bounded wrk load:
# wrk -t1 -cCONNS -dDUR -H "Connection: close" through the proxy to one nginx (`return 200 "ok"`).
# Unlike connections/s it hardly depends on what else runs on the machine. The proxies run side
# by side (own ports) and are measured in turn, ROUNDS times; medians at the end.
#   bench/tcp_l4_cpu.sh [ROUNDS=5 DUR=5 CONNS=20 PYTHON=... PIN=cpu]
#   SRCS="new=src base=/tmp/old/src" compares several edgeway source trees (default: edgeway=$REPO/src);
#   HAPROXY=0 leaves HAProxy out. Ports: nginx 127.0.0.1:29101, HAProxy 29111, edgeway 29121 and up.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
DUR=${DUR:-5}; CONNS=${CONNS:-20}; ROUNDS=${ROUNDS:-5}
SRCS=${SRCS:-edgeway=$REPO/src}
PIN=${PIN:+taskset -c $PIN}
D=$(mktemp -d /tmp/edgeway-l4cpu.XXXXXX)
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
cat > $D/nginx.conf <<EOC
daemon off; worker_processes 1; pid $D/nginx.pid; error_log $D/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $D; proxy_temp_path $D; fastcgi_temp_path $D;
  uwsgi_temp_path $D; scgi_temp_path $D; default_type text/plain;
  server { listen 127.0.0.1:29101 backlog=4096; location / { return 200 "ok"; } }
}
EOC
nginx -p $D -c $D/nginx.conf & PIDS+=($!)
declare -A PORT PID
NAMES=()
if [ "${HAPROXY:-1}" != 0 ]; then
  cat > $D/haproxy.cfg <<EOC
global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen http
  bind 127.0.0.1:29111
  server s1 127.0.0.1:29101
EOC
  $PIN haproxy -db -f $D/haproxy.cfg >$D/haproxy.log 2>&1 & PIDS+=($!)
  NAMES+=(haproxy); PORT[haproxy]=29111; PID[haproxy]=$!
fi
port=29121
for s in $SRCS; do
  name=${s%%=*}; src=${s#*=}
  cat > $D/$name.yaml <<EOC
upstreams:
  web: {servers: [{address: "127.0.0.1:29101"}], passive: {max_fails: 0}}
listeners:
  - {name: web, protocol: tcp, listen: "127.0.0.1:$port", upstream: web, idle_timeout: 60s}
EOC
  (cd $REPO && PYTHONPATH=$src exec $PIN $PY -m edgeway serve --config $D/$name.yaml --log-level warning) \
    >$D/$name.log 2>&1 & PIDS+=($!)
  NAMES+=($name); PORT[$name]=$port; PID[$name]=$!
  port=$((port+1))
done
sleep 2
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for n in "${NAMES[@]}"; do   # warm up (and check that each answers)
  wrk -t1 -c$CONNS -d1s -H "Connection: close" http://127.0.0.1:${PORT[$n]}/ | grep -q "requests in" \
    || { echo "$n: no answer on ${PORT[$n]} (see $D/$n.log)" >&2; cat $D/$n.log >&2 || true; exit 1; }
done
declare -A RES
for r in $(seq $ROUNDS); do
  for n in "${NAMES[@]}"; do
    c0=$(cpu ${PID[$n]})
    out=$(wrk -t1 -c$CONNS -d${DUR}s -H "Connection: close" http://127.0.0.1:${PORT[$n]}/)
    c1=$(cpu ${PID[$n]})
    req=$(echo "$out" | awk '/requests in/ {print $1}')
    errs=$(echo "$out" | awk '/Socket errors|Non-2xx/ {printf "%s ", $0}')
    us=$(awk -v c=$((c1-c0)) -v t=$tick -v n=$req 'BEGIN {printf "%.1f", c/t/n*1e6}')
    RES[$n]="${RES[$n]:-} $us"
    printf "round %d  %-10s %7d conns  %6.1f us CPU/conn  %s\n" $r $n $req $us "$errs"
  done
done
echo "# medians of $ROUNDS x ${DUR}s, wrk -t1 -c$CONNS, Connection: close (us CPU per connection)"
for n in "${NAMES[@]}"; do
  python3 - $n ${RES[$n]} <<'PY'
import statistics, sys
v = sorted(map(float, sys.argv[2:]))
print(f"{sys.argv[1]:<10} median {statistics.median(v):6.1f}  (min {v[0]:.1f}, max {v[-1]:.1f})")
PY
done
if [ -n "${PID[haproxy]:-}" ]; then
  hm=$(python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' ${RES[haproxy]})
  for n in "${NAMES[@]}"; do
    [ $n = haproxy ] && continue
    python3 -c 'import statistics,sys; m=statistics.median(map(float, sys.argv[3:])); h=float(sys.argv[2]); print(f"{sys.argv[1]:<10} / haproxy: {m/h:.2f}x CPU per connection (0.60 of its rate at equal CPU needs <= 1.67x)")' $n $hm ${RES[$n]}
  done
fi
