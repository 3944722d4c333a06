#!/bin/sh
# Start the mini internet: root, .com, example.com and a resolver, four `edgeway serve`
# processes on 127.0.60.x:10053. Ctrl-C stops them all.
#   examples/mini-internet/run.sh            (from anywhere; EDGEWAY="python -m edgeway" by default)
#   dig @127.0.60.53 -p 10053 api.example.com
set -eu
cd "$(dirname "$0")"
EDGEWAY=${EDGEWAY:-"python3 -m edgeway"}
PIDS=""
stop() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap 'stop; exit 0' INT TERM
trap stop EXIT
for role in root tld auth resolver; do
  $EDGEWAY serve --config "$role.yaml" > "$role.log" 2>&1 &
  PIDS="$PIDS $!"
done
sleep 1.5
for role in root tld auth resolver; do
  grep -q "listening" "$role.log" || { echo "$role did not start:"; cat "$role.log"; exit 1; }
done
cat <<'TXT'
mini internet up:
  root      127.0.60.1:10053   zone .            (delegates com.)
  .com      127.0.60.2:10053   zone com.         (delegates example.com.)
  auth      127.0.60.3:10053   zone example.com.
  resolver  127.0.60.53:10053  recursion from root.hints, cache, hosts overrides
try:
  dig @127.0.60.53 -p 10053 api.example.com        # cold: root -> com -> example.com
  dig @127.0.60.53 -p 10053 api.example.com        # cached: the TTL counts down
  dig @127.0.60.53 -p 10053 +norec www.example.com # RD=0: the cache only
  edgeway dig --trace -p 10053 @127.0.60.1 api.example.com  # like dig +trace: root -> com -> example.com
logs: examples/mini-internet/*.log   stop: Ctrl-C
TXT
wait
