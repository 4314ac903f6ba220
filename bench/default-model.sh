#!/usr/bin/env bash
# Trains the bundled default model from scratch, as it ships in src/bundled/:
#   1. the greedy 784-500-500-2000 digit model (examples/mnist-dbn.json; 12-20 minutes here),
#   2. 30 epochs of up-down, then 36 epochs of backprop for a classifier
#      (examples/mnist-dbn-default.json, on the greedy model without pretraining again),
#      its weights stored as bfloat16 (`compact`),
#   3. the classifier replaced by 222 epochs of backprop with dropout from the same up-down
#      weights (examples/mnist-dbn-default-dropout.json: `finetune` runs only the classifier
#      stage on a model whose up-down matches the spec; about 30 minutes here),
#   4. the weights stored as bfloat16 again, the test errors measured on them (`compact`, `eval`),
#   5. the dreams judged (generated digits per label, 3-NN on pixels).
# Usage: bench/default-model.sh MNIST_DIR [OUT_DIR]
set -euo pipefail
mnist=${1:?usage: bench/default-model.sh MNIST_DIR [OUT_DIR]}
out=${2:-models}
mkdir -p "$out"
cargo build --release
bin=target/release/dbn-serve
if [ ! -f "$out/mnist-dbn.safetensors" ]; then
  "$bin" train --mnist-dir "$mnist" --spec examples/mnist-dbn.json --out "$out/mnist-dbn.safetensors"
fi
"$bin" finetune --mnist-dir "$mnist" --model "$out/mnist-dbn.safetensors" \
  --spec examples/mnist-dbn-default.json --out "$out/mnist-dbn-updown-backprop-f32.safetensors"
"$bin" compact --mnist-dir "$mnist" --model "$out/mnist-dbn-updown-backprop-f32.safetensors" \
  --out "$out/mnist-dbn-updown-backprop.safetensors"
"$bin" finetune --mnist-dir "$mnist" --model "$out/mnist-dbn-updown-backprop.safetensors" \
  --spec examples/mnist-dbn-default-dropout.json --no-test --out "$out/mnist-dbn-default-f32.safetensors"
"$bin" compact --mnist-dir "$mnist" --model "$out/mnist-dbn-default-f32.safetensors" \
  --out "$out/mnist-dbn-default.safetensors"
"$bin" eval --mnist-dir "$mnist" --model "$out/mnist-dbn-default.safetensors" --method discriminative
"$bin" eval --mnist-dir "$mnist" --model "$out/mnist-dbn-default.safetensors" --method free-energy
DBN_MNIST_DIR="$mnist" cargo bench --bench generation -- --model "$out/mnist-dbn-default.safetensors" \
  --per-label 100 --steps 1000 --grid docs/samples-default.png
echo "copy $out/mnist-dbn-default.safetensors to src/bundled/ to ship it"
