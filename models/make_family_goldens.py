#!/usr/bin/env python3
"""Write the model-family fixtures (families.py) and their goldens into tests/fixtures/.

For tiny_llama, tiny_neox and tiny_gemma: export with torch.jit.script and torch.jit.trace, check both
exports and the eager module against reference_families.py (a functional forward from the weights),
and write <name>.golden.safetensors with the tokens, the logits, every TransformerLens point the
family has (act.<name>), and the logits of hand-patched runs computed by the reference:

  patch_resid.logits       blocks.0.hook_resid_post at position 3 from the source tokens' run
  zero_head.logits         head 1 of the last layer's hook_z set to zero
  patch.<point>.logits     <point> times 0.5 at position 2 (rotary q/k, the gated MLP's linear branch,
                           a norm's scale, GQA keys, ...): checks that a replaced value flows back in

Metadata "expected_missing" lists the TransformerLens points the family does not have (each must be
reported missing, with its reason). Deterministic: same files every run.

  python3 models/make_family_goldens.py [--out tests/fixtures]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_families as ref  # noqa: E402
import safetensors_io  # noqa: E402
from families import FAMILY_CONFIGS, build_family, export_family, logits_of  # noqa: E402

FIXTURES = ["tiny_llama", "tiny_neox", "tiny_gemma"]
PATCH_POS = 3
ZERO_HEAD = 1
HALF_POS = 2
HALVED = {
    "llama": ["blocks.1.attn.hook_rot_q", "blocks.0.attn.hook_rot_k", "blocks.0.attn.hook_k", "blocks.1.attn.hook_v",
              "blocks.0.mlp.hook_pre_linear", "blocks.1.mlp.hook_pre", "blocks.1.ln1.hook_scale",
              "ln_final.hook_scale", "blocks.0.attn.hook_pattern"],
    "gemma": ["blocks.1.attn.hook_rot_k", "blocks.0.attn.hook_q", "blocks.0.mlp.hook_post", "blocks.0.ln2.hook_scale"],
    "neox": ["blocks.0.attn.hook_rot_q", "blocks.1.attn.hook_k", "blocks.0.mlp.hook_pre", "blocks.1.attn.hook_z"],
}


def expected_missing(cfg):
    out = ["hook_pos_embed"]  # positions enter through rotary embeddings
    if cfg.family == "neox":
        for L in range(cfg.n_layers):
            out += [f"blocks.{L}.hook_resid_mid", f"blocks.{L}.ln1.hook_scale", f"blocks.{L}.ln2.hook_scale"]
        out.append("ln_final.hook_scale")
    return sorted(out)


def make(name, out_dir):
    cfg = FAMILY_CONFIGS[name]
    model = build_family(cfg)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)
    source = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)
    with torch.no_grad():
        logits, acts = ref.forward(sd, cfg, tokens)
        d = (logits_of(model(tokens)) - logits).abs().max().item()
        assert d < 1e-5, f"{name}: eager module disagrees with the reference by {d}"
        for mode in ["script", "trace"]:
            path = os.path.join(out_dir, f"{name}_{mode}.pt")
            export_family(model, cfg, mode, path)
            d = (logits_of(torch.jit.load(path)(tokens)) - logits).abs().max().item()
            assert d < 1e-5, f"{name} {mode}: exported logits differ from the reference by {d}"
            print(f"{path}: logits max diff vs reference {d:.2e}")

        out = {"tokens": tokens, "source_tokens": source, "logits": logits}
        _, src = ref.forward(sd, cfg, source)
        hook = "blocks.0.hook_resid_post"

        def patch_resid(x):
            x[:, PATCH_POS] = src[hook][:, PATCH_POS]
            return x

        def zero_head(x):
            x[:, :, ZERO_HEAD] = 0
            return x

        def halve(x):
            x[:, HALF_POS] *= 0.5  # position axis 1 for every point except patterns (query axis 2)
            return x

        def halve_pattern(x):
            x[:, :, HALF_POS] *= 0.5
            return x

        last = cfg.n_layers - 1
        runs = {"patch_resid.logits": {hook: patch_resid},
                "zero_head.logits": {f"blocks.{last}.attn.hook_z": zero_head}}
        for point in HALVED[cfg.family]:
            runs[f"patch.{point}.logits"] = {point: halve_pattern if point.endswith("hook_pattern") else halve}
        for key, hooks in runs.items():
            patched, _ = ref.forward(sd, cfg, tokens, hooks)
            d = (patched - logits).abs().max().item()
            assert d > 1e-3, f"{name}: {key} barely changes the logits ({d}); a test could not fail"
            out[key] = patched
    for k, v in acts.items():
        out["act." + k] = v
    meta = {"config": cfg.to_json(), "patch_pos": PATCH_POS, "zero_head": ZERO_HEAD, "half_pos": HALF_POS,
            "zero_head_hook": f"blocks.{last}.attn.hook_z", "expected_missing": json.dumps(expected_missing(cfg))}
    path = os.path.join(out_dir, f"{name}.golden.safetensors")
    safetensors_io.save(out, path, meta)
    print(f"{path}: {len(acts)} hook points, {len(runs)} patched runs")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    for name in FIXTURES:
        make(name, args.out)


if __name__ == "__main__":
    main()
