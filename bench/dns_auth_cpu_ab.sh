#!/bin/bash
# CPU time per authoritative DNS query (user + system, so the socket syscalls count) of two
# edgeway trees side by side under the same dnsperf load at the same time: on a machine shared
# with other work both see the same noise. Capacity per core is the inverse of this figure.
#   A=/path/to/main/src B=src bench/dns_auth_cpu_ab.sh [R=5 DUR=5 MODE=udp|tcp PYTHON=...]
# No root needed (unlike bench/dns_auth.sh's cgroup cap). A on 127.0.0.1:18053, B on :18054.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-$REPO/.venv/bin/python}
A=${A:?set A to the src tree to compare with}; B=${B:-$REPO/src}
DUR=${DUR:-5}; R=${R:-5}; MODE=${MODE:-udp}
D=$(mktemp -d /tmp/edgeway-dns-ab.XXXXXX)
# The zone and query mix of bench/dns_auth_inproc.py (hostN A, NXDOMAIN, NODATA, AAAA, MX, TXT, CNAME)
PYTHONPATH=$B $PY -c "
import importlib.util, dns.message, dns.rdatatype
spec = importlib.util.spec_from_file_location('inproc', '$HERE/dns_auth_inproc.py')
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
open('$D/example.com.zone', 'w').write(m.zone_text())
with open('$D/queries.txt', 'w') as f:
    for w in m.queries(1000):
        q = dns.message.from_wire(w).question[0]
        f.write(f'{q.name} {dns.rdatatype.to_text(q.rdtype)}\n')
"
for side in a:18053 b:18054; do
  printf 'dns:\n  listen: ["127.0.0.1:%s"]\n  zones:\n    - {file: "%s/example.com.zone", origin: "example.com."}\n' \
    "${side#*:}" "$D" > $D/${side%%:*}.yaml
done
PYTHONPATH=$A $PY -m edgeway serve --config $D/a.yaml --log-level warning 2>/dev/null & PA=$!
PYTHONPATH=$B $PY -m edgeway serve --config $D/b.yaml --log-level warning 2>/dev/null & PB=$!
trap 'kill $PA $PB 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
sleep 3
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14, $15}' /proc/$1/stat; }
report() {   # name "utime0 stime0" "utime1 stime1" dnsperf-output-file
  local n; n=$(awk '/Queries completed/ {print $3}' $4)
  echo $2 $3 | awk -v w=$1 -v t=$tick -v n=$n '{u = ($3-$1)/t/n*1e6; s = ($4-$2)/t/n*1e6
    printf "%s %9d queries  %6.2f us CPU/query (user %5.2f, system %5.2f)\n", w, n, u+s, u, s}'
}
perf() { dnsperf -m $MODE -s 127.0.0.1 -p $1 -d $D/queries.txt -c 10 -q 100 -l $2; }
for _ in $(seq $R); do
  perf 18053 1 >/dev/null & W=$!; perf 18054 1 >/dev/null; wait $W     # (warm: the fast path filled)
  a0=$(cpu $PA); b0=$(cpu $PB)
  perf 18053 $DUR > $D/pa.txt & WA=$!
  perf 18054 $DUR > $D/pb.txt & WB=$!
  wait $WA $WB
  a1=$(cpu $PA); b1=$(cpu $PB)
  report A "$a0" "$a1" $D/pa.txt
  report B "$b0" "$b1" $D/pb.txt
done
