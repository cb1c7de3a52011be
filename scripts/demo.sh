#!/usr/bin/env bash
# The main job, end to end: set up (packages, the Brown corpus), build, export the shipped model,
# list its hooks, capture a cache, train a tokenizer on Brown, capture residual-stream activations of
# Brown into a sharded store, verify it, train a TopK SAE on them, evaluate it (CE loss recovered),
# check SAE training against synthetic ground truth, and print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${BUILD_DIR:-build}
out=${OUT_DIR:-out}
mkdir -p "$out"
interp="$build/interp"

echo; echo "== export the shipped model (GPT-2 style, 4 layers, d_model 128, vocabulary 1024) with torch.jit.script and torch.jit.trace"
/usr/bin/python3 models/export.py --config small --mode script --out "$out/small_script.pt"
/usr/bin/python3 models/export.py --config small --mode trace --out "$out/small_trace.pt"

echo; echo "== interp hooks (the traced export: hooks without the model author's help)"
"$interp" hooks "$out/small_trace.pt"

tokens="1,15,200,7,42,99,3,512;8,8,300,1000,2,64,77,5"
echo; echo "== interp cache: residual stream and attention patterns for 2 sequences of 8 tokens"
"$interp" cache "$out/small_trace.pt" --tokens "$tokens" --filter 'hook_resid_(pre|post)$|hook_pattern' \
  --out "$out/cache.safetensors"

echo; echo "== interp tokenizer train: a 1024-piece BPE tokenizer on the Brown corpus"
[ -f "$out/brown-1k.model" ] || "$interp" tokenizer train --data data/brown --vocab-size 1024 --out "$out/brown-1k"
"$interp" tokenizer encode --tokenizer "$out/brown-1k.model" "The jury said it did not find evidence."

echo; echo "== interp capture: 262144 tokens of Brown, residual stream after blocks 1 and 3, stored as bf16"
rm -rf "$out/store"
"$interp" capture --model "$out/small_trace.pt" --data data/brown --tokenizer "$out/brown-1k.model" \
  --hooks blocks.1.hook_resid_post,blocks.3.hook_resid_post --tokens 262144 --ctx 128 --batch 32 \
  --dtype bf16 --out "$out/store"
"$interp" store info "$out/store"
"$interp" store verify "$out/store"

echo; echo "== interp train-sae: a TopK SAE (512 latents, k 16) on the stored blocks.1.hook_resid_post"
rm -rf "$out/sae"
"$interp" train-sae --activations "$out/store" --hook blocks.1.hook_resid_post --arch topk --d-sae 512 --k 16 \
  --steps 400 --batch 2048 --lr 1e-3 --out "$out/sae"

echo; echo "== interp eval-sae: reconstruction and the model's loss with the SAE spliced in (other contexts: --seed 7)"
"$interp" eval-sae --sae "$out/sae" --model "$out/small_trace.pt" --data data/brown --tokenizer "$out/brown-1k.model" \
  --tokens 16384 --seed 7 --out "$out/sae-eval.json"

echo; echo "== interp train-sae --synthetic: ground truth (256 features in d=128), the features it recovers"
rm -rf "$out/sae-synthetic"
"$interp" train-sae --synthetic --features 256 --d 128 --d-sae 512 --k 8 --steps 1200 --batch 1024 --lr 2e-3 \
  --checkpoint-every 0 --out "$out/sae-synthetic"

echo; echo "== interp patch: resid_pre by layer x position on prompt pairs (batched; clean into corrupted)"
"$interp" patch "$out/small_trace.pt" --pairs examples/patching/pairs.json --tokenizer "$out/brown-1k.model" \
  --hook resid_pre --by layer,pos --metric logit_diff --out "$out/patch-resid"
echo; echo "== interp patch --method attribution, and interp ablate: attention heads (mean ablation)"
"$interp" patch "$out/small_trace.pt" --pairs examples/patching/pairs.json --tokenizer "$out/brown-1k.model" \
  --method attribution --hook z --by layer,head --out "$out/patch-attr"
"$interp" ablate "$out/small_trace.pt" --pairs examples/patching/pairs.json --tokenizer "$out/brown-1k.model" \
  --hook z --by layer,head --ablation mean --out "$out/ablate-heads"

echo; echo "== interp circuit: the induction circuit of a 2-layer model trained here (ACDC, edges), faithful under which ablation?"
"$interp" circuit tests/fixtures/induction_script.pt --task induction --method acdc --out "$out/circuit-induction"
echo; echo "== interp circuit: a hand-built model whose true edges are known exactly (EAP-IG)"
"$interp" circuit tests/fixtures/planted_induction_script.pt --pairs tests/fixtures/planted_induction.pairs.json \
  --method eap-ig --draw 4 --out "$out/circuit-planted"

echo; echo "== interp run: next-token prediction (random weights for now: expect a flat distribution)"
"$interp" run "$out/small_script.pt" --tokens "$tokens" --top-k 3

echo; echo "== summary"
echo "model:     $out/small_script.pt, $out/small_trace.pt"
echo "cache:     $out/cache.safetensors ($(stat -c %s "$out/cache.safetensors") bytes)"
echo "tokenizer: $out/brown-1k.model"
echo "store:     $out/store ($(du -sh "$out/store" | cut -f1), manifest $out/store/manifest.json)"
echo "sae:       $out/sae (SAELens layout), evaluation $out/sae-eval.json; ground truth $out/sae-synthetic"
echo "patching:  $out/patch-resid/index.html, $out/patch-attr/index.html, $out/ablate-heads/index.html (results.json, heatmap.svg)"
echo "circuits:  $out/circuit-induction/index.html, $out/circuit-planted/index.html (edges.json, faithfulness.json, circuit.svg)"
echo "next:      docs/getting-started.md, docs/store.md, docs/sae.md, docs/patching.md, docs/circuits.md"
