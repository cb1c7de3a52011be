#!/usr/bin/env python3
"""Write the test fixtures and their golden files into tests/fixtures/.

For each fixture config (tiny, tiny_attn_only, tiny_hf) this exports the model with torch.jit.script
and torch.jit.trace, then computes with reference.py (a plain functional forward written from the
weights, sharing no code with the modules) every TransformerLens hook point's value and the logits of
two patching experiments:

  patch_resid  blocks.0.hook_resid_post at position 3 replaced by its value on the source tokens
  zero_head    head 1 of blocks.{last}.attn.hook_z set to zero

It checks that both exports reproduce the reference logits (1e-5) and that each patch changes the
logits, so a test comparing against these files can fail. Deterministic: same files every run.

  python3 models/make_goldens.py [--out tests/fixtures]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402
import safetensors_io  # noqa: E402
from export import export  # noqa: E402
from model import CONFIGS, build  # noqa: E402

FIXTURES = ["tiny", "tiny_attn_only", "tiny_hf"]
PATCH_POS = 3
ZERO_HEAD = 1


def make(name: str, out_dir: str):
    cfg = CONFIGS[name]
    model = build(cfg)
    W = reference.standard_weights(model, cfg)
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)
    source = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)

    with torch.no_grad():
        logits, acts = reference.forward(W, cfg, tokens)
        eager = model(tokens)
        assert (eager - logits).abs().max() < 1e-5, f"{name}: eager module disagrees with reference"
        for mode in ["script", "trace"]:
            path = os.path.join(out_dir, f"{name}_{mode}.pt")
            export(model, cfg, mode, path)
            diff = (torch.jit.load(path)(tokens) - logits).abs().max().item()
            assert diff < 1e-5, f"{name} {mode}: exported logits differ from reference by {diff}"
            print(f"{path}: logits max diff vs reference {diff:.2e}")

        _, src_acts = reference.forward(W, cfg, source)
        hook = "blocks.0.hook_resid_post"

        def patch_resid(x):
            x[:, PATCH_POS] = src_acts[hook][:, PATCH_POS]
            return x

        patched_resid, _ = reference.forward(W, cfg, tokens, {hook: patch_resid})

        def zero_head(x):
            x[:, :, ZERO_HEAD] = 0
            return x

        last = cfg.n_layers - 1
        patched_head, _ = reference.forward(W, cfg, tokens, {f"blocks.{last}.attn.hook_z": zero_head})
        for what, t in [("patch_resid", patched_resid), ("zero_head", patched_head)]:
            d = (t - logits).abs().max().item()
            assert d > 1e-3, f"{name}: {what} barely changes the logits ({d}); the test could not fail"

    out = {"tokens": tokens, "source_tokens": source, "logits": logits,
           "patch_resid.logits": patched_resid, "zero_head.logits": patched_head}
    for k, v in acts.items():
        if cfg.layout == "hf" and k == "hook_pos_embed":
            v = v[:1]  # HF GPT-2 computes wpe(position_ids[None]): [1, pos, d_model]
        out["act." + k] = v
    meta = {"config": cfg.to_json(), "patch_pos": PATCH_POS, "zero_head": ZERO_HEAD,
            "zero_head_hook": f"blocks.{last}.attn.hook_z"}
    path = os.path.join(out_dir, f"{name}.golden.safetensors")
    safetensors_io.save(out, path, meta)
    print(f"{path}: {len(acts)} hook points")


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
