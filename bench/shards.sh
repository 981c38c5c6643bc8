#!/usr/bin/env bash
# Shard sets at two sizes, side by side: batch assembly from the shard files (and from the same
# stream held in memory), and the peak resident memory of a training run on each.
#
#   bench/shards.sh            # a 20 MB and a 2 GB set (about 3 GB of disk under target/)
#   SMALL_MB=20 LARGE_MB=2000 STEPS=64 bench/shards.sh
#   SKIP_BUILD=1 bench/shards.sh  # with target/release/frontier already built
#
# Run it on an idle machine: the figures are per core and another build halves them.
set -euo pipefail
cd "$(dirname "$0")/.."
small_mb="${SMALL_MB:-20}"
large_mb="${LARGE_MB:-2000}"
steps="${STEPS:-64}"
work="target/bench-shards"
frontier="target/release/frontier"

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -p frontier >&2
mkdir -p "$work"

# A byte-level set holds 2 bytes per token (u16), so a set of N MB needs N/2 MB of text: copies of
# the test corpus in files of about 10 MB, prepared in parallel.
make_set() {
    local mb="$1" dir="$work/set-${1}mb" text="$work/text-${1}mb"
    if [ -d "$dir" ]; then return; fi
    rm -rf "$text" && mkdir -p "$text"
    local copies=$(( (mb * 1000 * 1000 / 2 + 1115393) / 1115394 ))
    local file=0
    for ((i = 0; i < copies; i += 9)); do
        for ((j = i; j < i + 9 && j < copies; j++)); do cat testdata/tinyshakespeare.txt; done > "$text/part-$(printf %05d $file).txt"
        file=$((file + 1))
    done
    "$frontier" data prepare --corpus "$text" --tokenizer bytes --val-fraction 0.001 --out "$dir" >&2
    rm -rf "$text"
}

make_set "$small_mb"
make_set "$large_mb"

for mb in "$small_mb" "$large_mb"; do
    echo "== ${mb} MB set: $(du -sh "$work/set-${mb}mb" | cut -f1) on disk"
    "$frontier" data bench "$work/set-${mb}mb" --seq-len 2048 --batch 16 --batches 500 --rounds 5
done

# Peak resident memory of the same training run on each set: a tiny hybrid, batch 8 × 256.
echo "== training from each set: ${steps} steps of 8 × 256 tokens, tiny-hybrid"
printf '%-10s %-14s %-16s %-12s\n' "set" "set on disk" "peak RSS (MB)" "tokens/s"
for mb in "$small_mb" "$large_mb"; do
    line=$("$frontier" train --preset tiny-hybrid --corpus "shards:$work/set-${mb}mb" \
        --tokens $((steps * 8 * 256)) --seq-len 256 --batch 8 --eval-tokens 4096 --json 2>/dev/null)
    python3 - "$mb" "$(du -sm "$work/set-${mb}mb" | cut -f1)" "$line" <<'PY'
import json, sys
mb, disk, line = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"{mb + ' MB':<10} {disk + ' MB':<14} {line['peak_rss_bytes'] / 1e6:<16.1f} {line['tokens_per_s']:<12.0f}")
PY
done
