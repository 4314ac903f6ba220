#!/usr/bin/env bash
# Schema-driven API testing: schemathesis generates requests for every operation of the served
# /openapi.json (examples, coverage and fuzzing phases) and checks that no answer is a 5xx and
# that every answer's status, content type, headers and body conform to the document.
# A server is started on a free port over a temporary data directory with the fixture MNIST
# subset, and one small model is trained first so model routes have something to find.
#   bench/schemathesis.sh [SECONDS] [BINARY]     (defaults: 150, target/release/dbn-serve)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-150}
bin=${2:-target/release/dbn-serve}
[[ -x "$bin" ]] || cargo build --release --locked
venv=${ST_VENV:-target/st-venv}
[[ -x "$venv/bin/st" ]] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" --addr "127.0.0.1:$port" --data-dir "$data" --mnist-dir tests/fixtures/mnist-subset \
    --workers 1 --train-threads 1 > "$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.2; done
curl -sf -X POST "localhost:$port/v1/jobs" -H 'content-type: application/json' \
    -d '{"name":"st","architecture":{"hidden":[32,64]},"pretrain":{"epochs":1},"seed":1}' >/dev/null
sleep 5
mkdir -p bench/raw
"$venv/bin/st" --version
# The event stream never ends while its job lives, so it is left to the service tests.
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" -w 1 --max-time "$secs" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --exclude-path-regex '/events$' | tee bench/raw/schemathesis.txt
served=$(grep -c "served status=" "$data/server.log" || true)
echo "requests the server answered: $served" | tee -a bench/raw/schemathesis.txt
if grep -q "served status=5[0-9][0-9]\|panicked" "$data/server.log"; then
    grep "served status=5[0-9][0-9]\|panicked" "$data/server.log" | head >&2
    echo "the server answered a 5xx or panicked" >&2
    exit 1
fi
