#!/usr/bin/env bash
# The main job, end to end, on the shipped Brown language model (models/brown_lm/, trained here):
# set up (packages, chromium, the Brown corpus), build, then show the model is real (held-out loss,
# induction heads, a continuation), capture its middle residual stream over Brown into a store,
# train a TopK SAE, evaluate it, write feature dashboards with part-of-speech purity against two
# baselines (random directions; the same pipeline on the untrained model), patch an agreement
# task the model solves, find a known circuit, and print where every output is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
bash scripts/build.sh
build=${BUILD_DIR:-build}
out=${OUT_DIR:-out}
mkdir -p "$out"
interp="$build/interp"
lm=models/brown_lm
model=$lm/brown_lm_trace.pt
tok=$lm/brown-4k.model
hook=blocks.1.hook_resid_post   # the middle of the 4 blocks
start=$SECONDS
step() { echo; echo "== [$((SECONDS - start)) s] $*"; }

step "the Brown LM (4 layers, d_model 256, vocabulary 4096; $lm/README.md): held-out loss and accuracy from interp"
"$interp" eval-lm "$model" --data data/brown --tokenizer "$tok" --held-out-every 20 --out "$out/eval-lm.json"

step "interp heads: induction heads on repeated random tokens"
"$interp" heads "$model" --tokenizer "$tok" --top 6 --out "$out/heads.json"

step "interp run: a greedy continuation"
"$interp" run "$model" --tokenizer "$tok" --prompt "The jury said it did not find any evidence that the" --generate 12 --top-k 3

step "interp tokenize + capture: ~500k tokens of Brown (with their POS tags) at $hook"
[ -f "$out/brown-4k.tokens.safetensors" ] || "$interp" tokenize --data data/brown --tokenizer "$tok" --out "$out/brown-4k.tokens.safetensors"
rm -rf "$out/store"
"$interp" capture --model "$model" --data "$out/brown-4k.tokens.safetensors" --tokenizer "$tok" --hooks "$hook" \
  --tokens 500000 --ctx 128 --batch 32 --dtype bf16 --out "$out/store"

step "interp train-sae: TopK, 4096 latents, k 32"
rm -rf "$out/sae"
"$interp" train-sae --activations "$out/store" --hook "$hook" --arch topk --d-sae 4096 --k 32 --steps 400 --batch 2048 \
  --lr 1e-3 --checkpoint-every 0 --out "$out/sae"

step "interp eval-sae: FVU, L0, dead latents, CE loss recovered (contexts the SAE did not train on: --seed 7)"
"$interp" eval-sae --sae "$out/sae" --model "$model" --data "$out/brown-4k.tokens.safetensors" --tokenizer "$tok" \
  --tokens 32768 --seed 7 --out "$out/sae-eval.json"

step "interp features: dashboards, POS purity, and random directions as a baseline"
"$interp" features --sae "$out/sae" --activations "$out/store" --model "$model" --baseline --tokens 200000 --out "$out/features"

step "baseline: the same pipeline on the untrained model (same shape and seed)"
/usr/bin/python3 models/train_brown.py --tokens "$out/brown-4k.tokens.safetensors" --out "$out/brown_lm_init" --init-only
rm -rf "$out/store-init" "$out/sae-init"
"$interp" capture --model "$out/brown_lm_init/brown_lm_trace.pt" --data "$out/brown-4k.tokens.safetensors" \
  --tokenizer "$tok" --hooks "$hook" --tokens 500000 --ctx 128 --batch 32 --dtype bf16 --out "$out/store-init"
"$interp" train-sae --activations "$out/store-init" --hook "$hook" --arch topk --d-sae 4096 --k 32 --steps 400 \
  --batch 2048 --lr 1e-3 --checkpoint-every 0 --out "$out/sae-init"
"$interp" features --sae "$out/sae-init" --activations "$out/store-init" --tokens 200000 --out "$out/features-init"

step "interp patch: agreement the model gets right (\"..., they\" -> \" were\", \"..., he\" -> \" was\"): residual stream by layer x position, then each head's output"
"$interp" patch "$model" --pairs examples/patching/brown_agreement.json --tokenizer "$tok" --hook resid_pre \
  --by layer,pos --metric logit_diff --out "$out/patch-agreement"
"$interp" patch "$model" --pairs examples/patching/brown_agreement.json --tokenizer "$tok" --hook z \
  --by layer,head --metric logit_diff --out "$out/patch-agreement-heads"

step "interp circuit: a 2-layer model trained here whose induction circuit is known (ACDC), faithful under which ablation?"
"$interp" circuit tests/fixtures/induction_script.pt --task induction --method acdc --out "$out/circuit-induction"

step "summary"
pure() { /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); r=j.get(sys.argv[2], j) if len(sys.argv)>2 else j; print(f\"{100*r['pure_fraction_of_live']:5.1f}%  {100*r['pure_multi_token_fraction_of_live']:5.1f}%  {100*r['pure_firings_fraction_of_live']:5.1f}%   ({r['live']} live latents)\")" "$@"; }
echo "share of live latents with POS purity >= 0.8 over their top 50 activations; of those, spanning >= 5 distinct"
echo "tokens (a part of speech, not one word); and over all their firings, activation-weighted (docs/features.md):"
echo "  SAE on the Brown LM            $(pure "$out/features/features.json")"
echo "  random directions, same model  $(pure "$out/features/features.json" random_directions)"
echo "  SAE on the untrained model     $(pure "$out/features-init/features.json")"
echo
echo "dashboards: $out/features/index.html (latents: $out/features/latent.html#N); untrained baseline $out/features-init/index.html"
echo "patching:   $out/patch-agreement/index.html, $out/patch-agreement-heads/index.html"
echo "circuit:    $out/circuit-induction/index.html"
echo "numbers:    $out/eval-lm.json, $out/heads.json, $out/sae-eval.json, $out/features/features.json"
echo "data:       store $out/store ($(du -sh "$out/store" | cut -f1)), SAE $out/sae (SAELens layout)"
echo "next:       docs/getting-started.md (the same steps in C++ and on the command line), docs/features.md"
echo "done in $((SECONDS - start)) s after the build"
