#!/usr/bin/env bash
# HTTP classification under load: wrk posts one MNIST test image as JSON to
# /v1/models/MODEL/classify?method=free_energy with 1, 8, 16 and 64 connections, 15 s each,
# and prints the answers by status, calls/s and latency percentiles.
# Usage: bench/wrk-classify.sh BASE_URL MODEL_ID   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")"
base=${1:?base URL, e.g. http://127.0.0.1:8080}
model=${2:?model id}
secs=${WRK_SECONDS:-15}
export WRK_BODY=/tmp/dbn-wrk-body.json
python3 - "${DBN_MNIST_DIR:-../../shared/data/mnist}" >"$WRK_BODY" <<'PY'
import gzip, json, sys, os
d = sys.argv[1]
name = next(n for n in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte") if os.path.exists(os.path.join(d, n)))
opener = gzip.open if name.endswith(".gz") else open
with opener(os.path.join(d, name), "rb") as f:
    raw = f.read(16 + 784)[16:]
print(json.dumps({"pixels": [[b / 255 for b in raw]]}))
PY
for conns in 1 8 16 64; do
    threads=$((conns < 2 ? 1 : 2))
    printf 'connections=%d ' "$conns"
    wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s wrk-classify.lua \
        "$base/v1/models/$model/classify?method=free_energy" | grep '^answers_'
done
