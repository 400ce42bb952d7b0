#!/usr/bin/env bash
# Bounded schemathesis run against `featmux serve`'s OpenAPI document (127.0.0.1 only): does any request
# make the server answer 5xx? Then checks that the server still answers /health and a real /predict.
#
#   bash benchmarks/serving/schemathesis_run.sh ARTEFACT [MAX_EXAMPLES] > summary.txt
set -euo pipefail
artefact="$1"
examples="${2:-300}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${FEATMUX_VENV:-$here/.venv}"
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$venv/bin/python" -m featmux.cli.main serve "$artefact" --host 127.0.0.1 --port "$port" 2>/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
echo "schemathesis $("$venv/bin/schemathesis" --version | tail -1), max examples $examples per operation, seed 1"
# not_a_server_error: no 5xx; the other checks report schema conformance (422 bodies are documented by
# FastAPI's HTTPValidationError shape, which featmux's own `message` + `detail` body extends)
set +e
timeout 600 "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error --max-examples "$examples" --seed 1 --request-timeout 30 --no-color 2>&1 \
  | grep -v '^\s*$'
status=${PIPESTATUS[0]}
set -e
echo "schemathesis exit status: $status"
echo "after the run: /health -> $(curl -s "http://127.0.0.1:$port/health")"
meta="$(curl -s "http://127.0.0.1:$port/metadata")"
instance="$("$venv/bin/python" -c 'import json, sys; m = json.loads(sys.argv[1]); print(json.dumps({"instances": [{f["name"]: None for f in m["features"]}]}))' "$meta")"
echo "after the run: /predict (all values missing) -> $(curl -s -X POST -H 'content-type: application/json' -d "$instance" "http://127.0.0.1:$port/predict")"
