#!/usr/bin/env bash
# Free-energy classification speed of the engine, three runs: one image at a time (median of
# 2,000 calls), a few images per call, and the 10,000 test images as one batch.
# Usage: bench/classify-speed.sh [MODEL_FILE]  (default: random weights of the digit model's shape)
set -euo pipefail
cd "$(dirname "$0")/.."
export DBN_MNIST_DIR=${DBN_MNIST_DIR:-../shared/data/mnist}
cargo bench --bench engine --no-run
bin=$(ls -t target/release/deps/engine-* | grep -v '\.d$' | head -1)
for run in 1 2 3; do
    "$bin" classify ${1:+--model "$1"}
done
