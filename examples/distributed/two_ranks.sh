#!/usr/bin/env bash
# Data-parallel SAE training on one machine: two `interp train-sae --dist` ranks started from a
# shell loop (docs/distributed.md), then the same run in one process for comparison.
#   examples/distributed/two_ranks.sh [INTERP (build/interp)] [OUT (/tmp/interp-two-ranks)]
set -euo pipefail
interp=${1:-build/interp}
out=${2:-/tmp/interp-two-ranks}
rm -rf "$out"
mkdir -p "$out"
train=(train-sae --synthetic --d 32 --features 64 --d-sae 128 --k 4 --steps 200 --batch 1024 --seed 1)

export MASTER_ADDR=127.0.0.1 MASTER_PORT=$((20000 + RANDOM % 20000)) WORLD_SIZE=2
pids=()
for r in 0 1; do
  RANK=$r "$interp" "${train[@]}" --out "$out/two" --dist > "$out/rank$r.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
cat "$out/rank0.log" "$out/rank1.log"
[ $status -eq 0 ] || { echo "a rank failed"; exit 1; }

"$interp" "${train[@]}" --out "$out/one" > "$out/one.log" 2>&1
echo "one process:"; tail -n 3 "$out/one.log"
