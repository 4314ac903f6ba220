#!/usr/bin/env bash
# Fuzzes every parser that outside bytes reach, with cargo-fuzz (libFuzzer + AddressSanitizer):
# IDX uploads, PNG/JPEG pictures and their MNIST preprocessing, model import, checkpoints,
# training specs, and multipart bodies through a running server. Each target runs for SECS seconds (default 300) from the seed corpus in
# fuzz/corpus/TARGET; new inputs go to target/fuzz-corpus/TARGET, crashes to fuzz/artifacts/.
# Works on the stable toolchain through RUSTC_BOOTSTRAP=1.
#   bench/fuzz.sh [SECS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(idx image model checkpoint spec multipart)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
mkdir -p bench/raw
for t in "${targets[@]}"; do
    mkdir -p "target/fuzz-corpus/$t"
    echo "== $t for ${secs}s"
    (cd fuzz && cargo fuzz run "$t" "../target/fuzz-corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1) \
        > "bench/raw/fuzz-$t.log" 2>&1 || { tail -40 "bench/raw/fuzz-$t.log"; exit 1; }
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|Done [0-9]+ runs" "bench/raw/fuzz-$t.log" || true
done
