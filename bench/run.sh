#!/usr/bin/env bash
# Runs the benchmarks named in the issues. Usage: bench/run.sh [BUILD_DIR (build)] [ROUNDS (15)]
# Exports the 6-layer d_model 256 benchmark models (GPT-2-style and Llama-style, script and trace) into
# BUILD_DIR/bench-models.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-15}
models=$build/bench-models
mkdir -p "$models"
for mode in script trace; do
  [ "$models/bench_$mode.pt" -nt models/model.py ] || /usr/bin/python3 models/export.py --config bench --mode $mode --out "$models/bench_$mode.pt"
done
for mode in script trace; do  # the Llama-style family model of the same size (rotary, GQA, SwiGLU, RMSNorm)
  [ "$models/bench_llama_$mode.pt" -nt models/families.py ] ||
    /usr/bin/python3 models/families.py --config bench_llama --mode $mode --out "$models/bench_llama_$mode.pt"
done
"$build/bench/bench_hooks" --rounds "$rounds" \
  tests/fixtures/tiny_script.pt:2:7 tests/fixtures/tiny_trace.pt:2:7 \
  "$models/bench_script.pt:32:128" "$models/bench_trace.pt:32:128" \
  "$models/bench_llama_script.pt:32:128" "$models/bench_llama_trace.pt:32:128"
"$build/bench/bench_patch" --rounds 5 "$models/bench_script.pt"
"$build/bench/bench_circuits" --rounds 5 tests/fixtures/induction_script.pt tests/fixtures/induction.pairs.json
"$build/bench/bench_sae_paths" --rounds 5
"$build/bench/bench_dist" --rounds 5
