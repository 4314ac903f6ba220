#!/usr/bin/env bash
# Up-down with a discriminative term at the top (issue 19), under the validation protocol.
#
#   bench/updown-hybrid.sh valid   # greedy model on the first 50,000 images, then each
#                                  # validation spec below; prints the validation curve
#   bench/updown-hybrid.sh classifier-valid   # after `valid`: the dropout classifier stage
#                                  # on the chosen validation model, for each classifier spec
#   bench/updown-hybrid.sh final   # greedy model on all 60,000, the chosen up-down spec, the
#                                  # test set once by free energy; then the bundled model's
#                                  # dropout classifier stage and its bf16 copy
#
# Dreams are judged separately, through a server: start `dbn-serve serve --data-dir D` and run
#   python3 bench/judge.py dreams --base URL --model FILE.safetensors --per-label 100 --steps 3000
# Models and logs go to $OUT (default /work/runs/updown). One thread per run; the validation
# specs all start at once, so on two cores the third run shares them.
set -euo pipefail
cd "$(dirname "$0")/.."
mnist=${DBN_MNIST_DIR:-../shared/data/mnist}
out=${OUT:-/work/runs/updown}
mkdir -p "$out"
cargo build --release --locked
bin=target/release/dbn-serve
valid_specs=(mnist-dbn-updown-hybrid-valid mnist-dbn-updown-pcd-hybrid-valid mnist-dbn-updown-hybrid10-valid)
# The chosen settings (α 10); the first choice, α 3, is mnist-dbn-updown-hybrid.json.
updown_spec=mnist-dbn-updown-hybrid10
# The bundled model's classifier stage, chosen on validation for these weights among
# classifier_specs (decay 0.99, 245 epochs); the earlier recipe is mnist-dbn-default-hybrid10.json.
classifier_specs=(mnist-dbn-default-hybrid10-dropout-valid mnist-dbn-default-hybrid10-dropout-slow-valid)
final_spec=mnist-dbn-default-hybrid10-dropout

# Fine-tunes MODEL by each SPEC at once, one thread each, then prints each validation curve.
validate_each() {
  local model=$1 s
  shift
  for s in "$@"; do
    "$bin" finetune --model "$model" --spec "examples/$s.json" --threads 1 \
        --mnist-dir "$mnist" --no-test --out "$out/$s.safetensors" >"$out/$s.log" 2>&1 &
  done
  wait
  for s in "$@"; do
    echo "== $s"
    grep -o 'epoch [0-9]*/[0-9]*:.*valid_error=[0-9.]*' "$out/$s.log" | sed 's/recon.*valid_error/valid_error/'
  done
}

case "${1:-}" in
valid)
  [ -f "$out/greedy-50k.safetensors" ] || "$bin" train --spec examples/mnist-dbn-valid.json \
      --mnist-dir "$mnist" --no-test --out "$out/greedy-50k.safetensors" >"$out/greedy-50k.log" 2>&1
  validate_each "$out/greedy-50k.safetensors" "${valid_specs[@]}"
  ;;
classifier-valid)
  # The dropout classifier stage on the α 10 validation model, two decays side by side.
  validate_each "$out/$updown_spec-valid.safetensors" "${classifier_specs[@]}"
  ;;
final)
  [ -f "$out/greedy-60k.safetensors" ] || "$bin" train --spec examples/mnist-dbn.json \
      --mnist-dir "$mnist" --no-test --out "$out/greedy-60k.safetensors" >"$out/greedy-60k.log" 2>&1
  # Up-down with the chosen settings, then the test set once by free energy.
  "$bin" finetune --model "$out/greedy-60k.safetensors" --spec "examples/$updown_spec.json" \
      --mnist-dir "$mnist" --no-test --out "$out/$updown_spec-60k.safetensors" >"$out/$updown_spec-60k.log" 2>&1
  "$bin" eval --mnist-dir "$mnist" --model "$out/$updown_spec-60k.safetensors" --method free-energy
  # The bundled model: the dropout classifier stage on top (finetune trains only that stage),
  # stored as bfloat16; `compact` measures both methods for f32 and bf16.
  "$bin" finetune --model "$out/$updown_spec-60k.safetensors" --spec "examples/$final_spec.json" \
      --mnist-dir "$mnist" --no-test --out "$out/$final_spec-f32.safetensors" >"$out/$final_spec.log" 2>&1
  "$bin" compact --mnist-dir "$mnist" --model "$out/$final_spec-f32.safetensors" \
      --out "$out/$final_spec.safetensors" 2>&1 | tee "$out/$final_spec-compact.txt"
  ;;
*)
  echo "usage: bench/updown-hybrid.sh valid|classifier-valid|final" >&2
  exit 2
  ;;
esac
