#!/usr/bin/env python3
"""Steering goldens: a hand-computed plain-PyTorch run of the tiny fixture model with an SAE latent
added to (or clamped at) blocks.0.hook_resid_post, through reference.py's forward.

Writes tests/fixtures/steer/: sae/ (an SAE in SAELens's layout, d_in 32, d_sae 64, standard ReLU),
golden.safetensors: prompt tokens, and for each mode the steered logits of the prompt and the greedy
continuation of N_NEW tokens (plus the unsteered ones).
  add    x + scale * W_dec[f] at every position
  clamp  x + (scale - h_f(x)) * W_dec[f], h = relu((x - b_dec) W_enc + b_enc): the latent set to
         `scale` with the SAE's reconstruction error kept
  python3 models/make_steer_goldens.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402
import safetensors_io  # noqa: E402
from model import CONFIGS, build  # noqa: E402

HOOK, FEATURE, N_NEW = "blocks.0.hook_resid_post", 5, 6
SCALES = {"add": 4.0, "clamp": 6.0}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "tests", "fixtures", "steer")
    os.makedirs(os.path.join(out, "sae"), exist_ok=True)
    cfg = CONFIGS["tiny"]
    W = reference.standard_weights(build(cfg), cfg)
    g = torch.Generator().manual_seed(50)
    d, m = cfg.d_model, 64
    sae = {"W_enc": torch.randn(d, m, generator=g) / d ** 0.5, "b_enc": torch.randn(m, generator=g) * 0.1,
           "W_dec": torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1),
           "b_dec": torch.randn(d, generator=g) * 0.05}
    safetensors_io.save(sae, os.path.join(out, "sae", "sae_weights.safetensors"), {"format": "pt"})
    with open(os.path.join(out, "sae", "cfg.json"), "w") as f:
        json.dump({"architecture": "standard", "d_in": d, "d_sae": m, "dtype": "float32", "hook_name": HOOK,
                   "hook_layer": 0, "apply_b_dec_to_input": True, "normalize_activations": "none"}, f, indent=2)
    prompt = torch.tensor([[1, 7, 3, 12, 9]])

    def steer(mode, scale):
        def fn(x):
            if mode == "add":
                return x + scale * sae["W_dec"][FEATURE]
            h = torch.relu((x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"])
            return x + (scale - h[..., FEATURE:FEATURE + 1]) * sae["W_dec"][FEATURE]
        return {HOOK: fn}

    def greedy(hooks):
        toks = prompt.clone()
        for _ in range(N_NEW):
            logits, _ = reference.forward(W, cfg, toks[:, -cfg.n_ctx:], hooks)
            toks = torch.cat([toks, logits[:, -1].argmax(-1, keepdim=True)], 1)
        return toks

    golden = {"prompt": prompt}
    with torch.no_grad():
        golden["plain.logits"], _ = reference.forward(W, cfg, prompt)
        golden["plain.tokens"] = greedy({})
        for mode, scale in SCALES.items():
            golden[f"{mode}.logits"], _ = reference.forward(W, cfg, prompt, steer(mode, scale))
            golden[f"{mode}.tokens"] = greedy(steer(mode, scale))
            d_logits = (golden[f"{mode}.logits"] - golden["plain.logits"]).abs().max().item()
            assert d_logits > 1e-2, f"{mode}: steering barely changes the logits ({d_logits})"
            print(f"{mode}: logits moved by up to {d_logits:.3f}; tokens {golden[f'{mode}.tokens'].tolist()} "
                  f"vs {golden['plain.tokens'].tolist()}")
    meta = {"hook": HOOK, "feature": str(FEATURE), "n_new": str(N_NEW), "add_scale": str(SCALES["add"]),
            "clamp_scale": str(SCALES["clamp"])}
    safetensors_io.save(golden, os.path.join(out, "golden.safetensors"), meta)


if __name__ == "__main__":
    main()
