#!/usr/bin/env bash
# The worker on an NVIDIA GPU: builds with the `cuda` feature in release, runs the worker's tests
# that need a GPU, then the benchmark on CUDA, whose backend comparison checks every model on the
# GPU against the CPU backend (logits, prefill + decode steps against the full forward, losses
# over a few training steps from identical weights and batches) and fails on a mismatch.
#
# Usage: scripts/gpu-check.sh            (from any directory)
# Environment:
#   OUT         where results go (default: out/ under the repository root)
#   CUDA_INDEX  which GPU (default 0)
#   BENCH_ARGS  extra arguments for the bench, e.g. "--quick" or "--corpus data/text"
#
# Needs cargo (with the system C linker Rust uses) and, at run time, the NVIDIA driver and the NVRTC
# library: burn 0.21's CUDA backend builds without a CUDA toolkit because cudarc loads libcuda and
# libnvrtc (which compiles the generated kernels) only when the program runs. Writes to $OUT:
#   environment.txt          toolchain, commit, GPU and driver
#   tests-cuda.txt           the GPU tests' output
#   bench-cuda.txt/.json     the benchmark tables on CUDA, and every measurement as JSON
#   lut-validate-cuda.txt    a small latency table profiled on the GPU and its fidelity report
#                            (Spearman, Kendall tau, MAPE, ±5/±10 % shares, worst cases)
#   train-precision-cuda.txt the same proxy training in f32 and in bf16 on the GPU (JSON lines:
#                            losses before and after, tokens/s)
#   train-parallel-cuda.txt  with two or more GPUs: the same training on one GPU and data
#                            parallel over all of them (JSON lines: losses, tokens/s)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cuda_index="${CUDA_INDEX:-0}"
read -r -a bench_args <<< "${BENCH_ARGS:-}"

command -v cargo >/dev/null || { echo "gpu-check: cargo is not on PATH" >&2; exit 1; }

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    cargo --version
    rustc --version 2>/dev/null || true
    echo "cpus: $(nproc 2>/dev/null || echo unknown)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
    else
        echo "nvidia-smi: not found (the CUDA steps below will fail without a driver)"
    fi
    if command -v ldconfig >/dev/null; then
        ldconfig -p | grep -E 'libcuda\.so|libnvrtc\.so' || echo "ldconfig: no libcuda or libnvrtc found"
    fi
} 2>&1 | tee "$out/environment.txt"

echo "== build (release, --features cuda)"
cargo build --release --locked -p worker --features cuda --lib --bins --tests

# The worker's GPU tests are ignored by default (build machines have no GPU) and carry `cuda` in
# their names; `--ignored cuda` runs exactly those, in every test target of the crate.
echo "== worker tests that need a GPU"
# The data parallel test takes the second GPU when there is one (else the first twice).
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
if [ "${gpus:-0}" -ge 2 ]; then export CUDA_SECOND_INDEX=1; fi
cargo test --release --locked -p worker --features cuda -- --ignored cuda 2>&1 | tee "$out/tests-cuda.txt"

echo "== bench on cuda:$cuda_index"
cargo run --release --locked -p worker --features cuda --bin bench -- \
    --device "cuda:$cuda_index" --json "$out/bench-cuda.json" ${bench_args[@]+"${bench_args[@]}"} 2>&1 \
    | tee "$out/bench-cuda.txt"

# The latency table on the GPU: profile the tiny space's shapes into a scratch store, then
# measure 30 sampled architectures end to end against it. The GPU computes in f32 here too.
echo "== latency table on cuda:$cuda_index"
cargo build --release --locked -p frontier --features cuda
lut_db="$(mktemp -d)/lut.db"
./target/release/frontier lut validate --database-url "sqlite://$lut_db" --device "cuda:$cuda_index" \
    --setting batch=1,prompt=64,gen=256,dtype=f32 --hidden 64,128,192,256 --samples 30 2>&1 \
    | tee "$out/lut-validate-cuda.txt"

# Proxy training in bf16 against f32 on the same data and seed: the loss must fall in both.
echo "== training precision on cuda:$cuda_index"
corpus="$root/testdata/tinyshakespeare.txt"
train_args=(train --preset tiny-hybrid --corpus "$corpus" --tokens 294912 --seq-len 256 --batch 24
    --eval-untrained --eval-tokens 65536 --json)
for precision in f32 bf16; do
    ./target/release/frontier "${train_args[@]}" --device "cuda:$cuda_index" --precision "$precision"
done 2>&1 | tee "$out/train-precision-cuda.txt"

# Data parallel over every GPU of the node against one GPU: same losses (to rounding), more tokens/s.
if [ "${gpus:-0}" -ge 2 ]; then
    echo "== data parallel over $gpus GPUs"
    all="cuda:$(seq -s, 0 $((gpus - 1)))"
    for devices in cuda:0 "$all"; do
        ./target/release/frontier "${train_args[@]}" --device "$devices"
    done 2>&1 | tee "$out/train-parallel-cuda.txt"
else
    echo "== data parallel: one GPU on this machine; the test above ran two replicas on it" \
        | tee "$out/train-parallel-cuda.txt"
fi

echo "gpu-check: done; results in $out"
