#!/usr/bin/env bash
# CD-1 epoch time of a 784->500 RBM on all 60,000 MNIST images: the numpy + OpenBLAS reference
# and dbn-serve, alternated twice in one session (the machine is shared and noisy; compare the
# medians' ratio). Needs: pip install numpy threadpoolctl.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${REF_DIR:-../shared/reference}
export DBN_MNIST_DIR=${DBN_MNIST_DIR:-../shared/data/mnist}
cargo bench --bench engine --no-run
bin=$(ls -t target/release/deps/engine-* | grep -v '\.d$' | head -1)
for round in 1 2; do
    (cd "$ref" && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 rbm_numpy.py --epochs 5)
    "$bin" cd1 --epochs 5
done | tee bench/raw/cd1-vs-numpy.txt | grep -E '^impl'
