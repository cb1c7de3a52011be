#!/usr/bin/env python3
"""Write the model-family fixtures (families.py) and their goldens into tests/fixtures/.

For tiny_llama, tiny_neox, tiny_gemma and tiny_nanogpt: export with torch.jit.script and torch.jit.trace, check both
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

FIXTURES = ["tiny_llama", "tiny_neox", "tiny_gemma", "tiny_nanogpt"]
PATCH_POS = 3
ZERO_HEAD = 1
HALF_POS = 2
HALVED = {
    "llama": ["blocks.1.attn.hook_rot_q", "blocks.0.attn.hook_rot_k", "blocks.0.attn.hook_k", "blocks.1.attn.hook_v",
              "blocks.0.mlp.hook_pre_linear", "blocks.1.mlp.hook_pre", "blocks.1.ln1.hook_scale",
              "ln_final.hook_scale", "blocks.0.attn.hook_pattern"],
    "gemma": ["blocks.1.attn.hook_rot_k", "blocks.0.attn.hook_q", "blocks.0.mlp.hook_post", "blocks.0.ln2.hook_scale"],
    "neox": ["blocks.0.attn.hook_rot_q", "blocks.1.attn.hook_k", "blocks.0.mlp.hook_pre", "blocks.1.attn.hook_z"],
    "nanogpt": ["blocks.1.attn.hook_v", "blocks.1.mlp.hook_pre", "blocks.0.hook_resid_mid"],
}


def nanogpt_reference(model, cfg):
    """nanoGPT is GPT-2 with Hugging Face's parameter names: reference.py's functional forward, with
    nanoGPT's -inf mask and exact GELU. forward(sd, cfg, tokens, hooks) like reference_families."""
    import reference
    from model import Config
    gcfg = Config(n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
                  d_mlp=cfg.d_mlp, d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx, act="gelu", ln_eps=1e-5,
                  mask_value=float("-inf"), layout="hf")
    W = reference.standard_weights(model, gcfg)

    def forward(_sd, _cfg, tokens, hooks=None):
        logits, acts = reference.forward(W, gcfg, tokens, hooks)
        acts["hook_pos_embed"] = acts["hook_pos_embed"][0]  # nanoGPT's wpe(arange(t)): [pos, d_model]
        return logits, acts
    return forward


def expected_missing(cfg):
    if cfg.family == "nanogpt":
        return []
    out = ["hook_pos_embed"]  # positions enter through rotary embeddings
    if cfg.family == "neox":  # parallel attention and MLP
        out += [f"blocks.{L}.hook_resid_mid" for L in range(cfg.n_layers)]
    return sorted(out)


def make(name, out_dir):
    cfg = FAMILY_CONFIGS[name]
    model = build_family(cfg)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)
    source = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)
    reference = nanogpt_reference(model, cfg) if cfg.family == "nanogpt" else ref.forward
    # nanoGPT returns every position's logits only when given targets (interp passes the tokens)
    args = (lambda t: (t, t)) if cfg.family == "nanogpt" else (lambda t: (t,))
    with torch.no_grad():
        logits, acts = reference(sd, cfg, tokens)
        d = (logits_of(model(*args(tokens))) - logits).abs().max().item()
        assert d < 1e-5, f"{name}: eager module disagrees with the reference by {d}"
        for mode in ["script", "trace"]:
            path = os.path.join(out_dir, f"{name}_{mode}.pt")
            export_family(model, cfg, mode, path)
            d = (logits_of(torch.jit.load(path)(*args(tokens))) - logits).abs().max().item()
            assert d < 1e-5, f"{name} {mode}: exported logits differ from the reference by {d}"
            print(f"{path}: logits max diff vs reference {d:.2e}")

        out = {"tokens": tokens, "source_tokens": source, "logits": logits}
        _, src = reference(sd, cfg, source)
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
            patched, _ = reference(sd, cfg, tokens, hooks)
            d = (patched - logits).abs().max().item()
            assert d > 1e-3, f"{name}: {key} barely changes the logits ({d}); a test could not fail"
            out[key] = patched
    if cfg.family == "nanogpt":
        # traced without targets: every run returns the last position's logits only, and interp must
        # refuse it with a clear error (there is no targets argument to pass the tokens to)
        class LastOnly(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, idx):
                return self.m(idx)[0]
        with torch.no_grad():
            ts = torch.jit.trace(LastOnly(model), tokens, check_trace=False)
        path = os.path.join(out_dir, f"{name}_last_only_trace.pt")
        ts.save(path + ".tmp")
        os.replace(path + ".tmp", path)
        print(f"{path}: logits {tuple(ts(tokens).shape)} for tokens {tuple(tokens.shape)}")
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
