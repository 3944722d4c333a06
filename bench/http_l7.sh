#!/bin/bash
# The shared L7 benchmark (../shared/bench/http_l7.sh) with edgeway as its `custom` entry.
#
#   sudo bench/http_l7.sh                         # direct nginx haproxy edgeway, uncapped
#   sudo QUOTA=50 bench/http_l7.sh nginx haproxy custom   # the proxy capped at 50% of a core
#
# edgeway runs with the features of examples/l7/edgeway.yaml switched on (least_conn with
# weights and a backup, active health checks, passive checks, sticky cookie insert, the
# issue's routes before a catch-all, access log) over the script's nginx backends
# 127.0.0.1:9001-9003, listening on 127.0.0.1:8090. Results: $BENCH_OUT/results (see the
# shared README). ACCESS_LOG=false turns the access log off; REQUEST_ID=false the listener's
# X-Request-ID; LOG_FORMAT=json writes the log as JSON lines; PYTHON picks the interpreter.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
PY=${PYTHON:-$REPO/.venv/bin/python}   # make venv
OUT=${BENCH_OUT:-/tmp/edgeway-bench}
mkdir -p "$OUT/run"
CFG=$OUT/run/edgeway-l7.yaml
sed "s/access_log: true/access_log: ${ACCESS_LOG:-true}\n    request_id: ${REQUEST_ID:-true}/" "$HERE/http_l7.yaml" > "$CFG"
echo "log: {format: ${LOG_FORMAT:-text}}" >> "$CFG"
export CUSTOM_CMD="exec env PYTHONPATH=$REPO/src $PY -m edgeway serve --config $CFG --log-level warning"
export CUSTOM_LABEL=${CUSTOM_LABEL:-edgeway}
[ $# -gt 0 ] || set -- direct nginx haproxy custom
exec bash "$SHARED/http_l7.sh" "$@"
