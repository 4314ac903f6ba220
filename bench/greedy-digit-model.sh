#!/usr/bin/env bash
# Wall time and test error of the greedy 784-500-500-2000(+10) digit model
# (examples/mnist-dbn.json) trained from the command line on all cores. Run on an otherwise
# quiet machine; the log goes to bench/raw/train-mnist-dbn-$(date +%F).log.
set -euo pipefail
cd "$(dirname "$0")/.."
mnist=${DBN_MNIST_DIR:-../shared/data/mnist}
cargo build --release
log=bench/raw/train-mnist-dbn-$(date +%F).log
/usr/bin/time -f 'wall_seconds=%e user_seconds=%U' \
    target/release/dbn-serve train --spec examples/mnist-dbn.json --mnist-dir "$mnist" \
    --out /tmp/mnist-dbn-bench.safetensors 2>&1 | tee "$log" | grep -E 'took|test_error|wall_seconds'
