#!/usr/bin/env python3
"""Golden files for interp's patching tests: activation patching done by hand in plain PyTorch.

For the fixture models tiny (TransformerLens layout) and tiny_hf (Hugging Face layout) this computes,
with reference.py's functional forward (no interp code, no TorchScript), on two clean / corrupted
prompt pairs of 8 tokens and the metric "logit difference at the last position" (mean over prompts):

  sweep.<hook>.<by>     every site patched alone, one forward per site (denoising: clean values into
                        the corrupted run), for resid_pre/mid/post, attn_out, mlp_out by layer x pos,
                        resid_pre by layer, z by layer x head and layer x head x pos, pattern by layer x head
  noise.resid_pre       the same with the corrupted values patched into the clean run
  iv.<kind>.logits      logits after one intervention (zero, mean, add, scale, replace) and all composed
  metric.<name>         metrics on the clean logits (and KL between clean and corrupted)
  attr.<hook>           attribution patching: base metric + (clean - corrupted) . gradient per site
  path.value, path.heads  path patching (IOI style) into blocks.1.attn.hook_q/k/v head 0

Writes tests/fixtures/patch_<config>.golden.safetensors. Deterministic.
  python3 models/make_patch_goldens.py [--out tests/fixtures]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402
import safetensors_io  # noqa: E402
from model import CONFIGS, build  # noqa: E402

T = 8


def make(name, out_dir):
    cfg = CONFIGS[name]
    model = build(cfg)
    W = reference.standard_weights(model, cfg)
    g = torch.Generator().manual_seed(99)
    clean = torch.randint(0, cfg.d_vocab, (2, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(0, cfg.d_vocab, (2,), generator=g)
    corrupted[:, 5] = torch.randint(0, cfg.d_vocab, (2,), generator=g)
    reference_set = torch.randint(0, cfg.d_vocab, (4, T), generator=g)
    answers = torch.randint(0, cfg.d_vocab, (2,), generator=g)
    wrong = torch.randint(0, cfg.d_vocab, (2,), generator=g)
    direction = torch.randn(cfg.d_model, generator=g)
    L, H = cfg.n_layers, cfg.n_heads

    def run(tokens, hooks=None):
        return reference.forward(W, cfg, tokens, hooks)

    def logit_diff(logits):
        last = logits[:, -1]
        return (last.gather(1, answers[:, None]) - last.gather(1, wrong[:, None])).mean()

    out = {"clean": clean, "corrupted": corrupted, "reference": reference_set, "answers": answers, "wrong": wrong,
           "direction": direction}
    with torch.no_grad():
        clean_logits, clean_acts = run(clean)
        corr_logits, corr_acts = run(corrupted)
        out["clean_logits"], out["corrupted_logits"] = clean_logits, corr_logits

        def sweep(hook_fmt, by, base_tokens, src_acts):
            vals = []
            for layer in range(L):
                hook = hook_fmt.format(layer)
                head_axis, pos_axis = (1, 2) if hook.endswith("hook_pattern") else (2, 1)
                sites = []
                if by == "layer":
                    sites = [(None, None)]
                elif by == "layer,pos":
                    sites = [(None, p) for p in range(T)]
                elif by == "layer,head":
                    sites = [(h, None) for h in range(H)]
                elif by == "layer,head,pos":
                    sites = [(h, p) for h in range(H) for p in range(T)]
                for h, p in sites:
                    def fn(x, h=h, p=p, hook=hook):
                        src = src_acts[hook]
                        idx = [slice(None)] * x.dim()
                        if h is not None:
                            idx[head_axis] = h
                        if p is not None:
                            idx[pos_axis] = p
                        x[tuple(idx)] = src[tuple(idx)]
                        return x
                    vals.append(logit_diff(run(base_tokens, {hook: fn})[0]))
            return torch.stack(vals).double()

        sweeps = [("resid_pre", "blocks.{}.hook_resid_pre", "layer,pos"),
                  ("resid_pre", "blocks.{}.hook_resid_pre", "layer"),
                  ("resid_post", "blocks.{}.hook_resid_post", "layer,pos"),
                  ("attn_out", "blocks.{}.hook_attn_out", "layer,pos"),
                  ("z", "blocks.{}.attn.hook_z", "layer,head"),
                  ("z", "blocks.{}.attn.hook_z", "layer,head,pos"),
                  ("pattern", "blocks.{}.attn.hook_pattern", "layer,head")]
        if not cfg.attn_only:
            sweeps += [("resid_mid", "blocks.{}.hook_resid_mid", "layer,pos"),
                       ("mlp_out", "blocks.{}.hook_mlp_out", "layer,pos")]
        for short, fmt, by in sweeps:
            out[f"sweep.{short}.{by}"] = sweep(fmt, by, corrupted, clean_acts)
        out["noise.resid_pre.layer,pos"] = sweep("blocks.{}.hook_resid_pre", "layer,pos", clean, corr_acts)
        out["metric.clean_logit_diff"] = logit_diff(clean_logits).double()
        out["metric.corrupted_logit_diff"] = logit_diff(corr_logits).double()

        # Interventions
        _, ref_acts = run(reference_set)
        last = L - 1

        def zero_head(x):
            x[:, :, 2] = 0
            return x

        mean_hook = "blocks.0.hook_attn_out"

        def mean_pos3(x):
            x[:, 3] = ref_acts[mean_hook].mean(0)[3]
            return x

        def add_dir(x):
            x[:, 4] += 2.5 * direction
            return x

        def scale_half(x):
            return x * 0.5

        replace_val = torch.full((1, H, T, T), 1.0 / T)

        def replace_pattern(x):
            x[:, 1, 5] = replace_val[:, 1, 5]
            return x

        ivs = {"zero": (f"blocks.{last}.attn.hook_z", zero_head),
               "mean": (mean_hook, mean_pos3),
               "add": ("blocks.0.hook_resid_post", add_dir),
               "scale": (f"blocks.{last}.hook_attn_out", scale_half),
               "replace": ("blocks.0.attn.hook_pattern", replace_pattern)}
        for kind, (hook, fn) in ivs.items():
            out[f"iv.{kind}.logits"] = run(clean, {hook: fn})[0]
            assert (out[f"iv.{kind}.logits"] - clean_logits).abs().max() > 1e-4, kind

        def compose(fns):
            def f(x):
                for fn in fns:
                    x = fn(x)
                return x
            return f
        composed = {}
        for hook, fn in ivs.values():
            composed.setdefault(hook, []).append(fn)
        out["iv.all.logits"] = run(clean, {h: compose(f) for h, f in composed.items()})[0]

        # Metrics on the clean logits
        lp = clean_logits[:, -1].log_softmax(-1)
        out["metric.prob"] = lp.exp().gather(1, answers[:, None]).mean().double()
        out["metric.loss"] = (-lp.gather(1, answers[:, None])).mean().double()
        lq = corr_logits[:, -1].log_softmax(-1)
        out["metric.kl"] = (lp.exp() * (lp - lq)).sum(-1).mean().double()  # KL(clean || corrupted)
        seq = clean_logits[:, :-1].log_softmax(-1).gather(2, clean[:, 1:, None]).squeeze(-1)
        out["metric.sequence_loss"] = (-seq.mean(1)).mean().double()

    # Attribution patching (denoising): gradient at the corrupted run.
    for short, fmt, by in [("resid_pre", "blocks.{}.hook_resid_pre", "layer,pos"),
                           ("z", "blocks.{}.attn.hook_z", "layer,head")]:
        hooks, deltas = {}, {}
        for layer in range(L):
            hook = fmt.format(layer)

            def fn(x, hook=hook):
                d = torch.zeros_like(x, requires_grad=True)
                deltas[hook] = d
                return x + d
            hooks[hook] = fn
        logits, acts = run(corrupted, hooks)
        m = logit_diff(logits)
        names = [fmt.format(layer) for layer in range(L)]
        grads = torch.autograd.grad(m, [deltas[n] for n in names])
        vals = []
        for n, gr in zip(names, grads):
            a = ((clean_acts[n] - acts[n]) * gr).double()
            if by == "layer,pos":
                vals.append(a.sum(dim=(0, 2)))
            else:
                vals.append(a.sum(dim=(0, 1, 3)))
        out[f"attr.{short}.{by}"] = m.detach().double() + torch.stack(vals)

    # Path patching (noising, clean is the base run): senders z heads, receivers q/k/v of L1 head 0.
    with torch.no_grad():
        receivers = [f"blocks.{L - 1}.attn.hook_{x}" for x in "qkv"]

        def path(s_layer, s_head):
            def freeze(layer):
                hook = f"blocks.{layer}.attn.hook_z"

                def fn(x):
                    x = clean_acts[hook].clone()
                    if layer == s_layer:
                        x[:, :, s_head] = corr_acts[hook][:, :, s_head]
                    return x
                return fn
            _, acts2 = run(clean, {f"blocks.{layer}.attn.hook_z": freeze(layer) for layer in range(L)})
            hooks = {}
            for r in receivers:
                def fn(x, r=r):
                    x[:, :, 0] = acts2[r][:, :, 0]
                    return x
                hooks[r] = fn
            return logit_diff(run(clean, hooks)[0]).double()
        out["path.value"] = path(0, 1)
        out["path.heads"] = torch.stack([path(layer, h) for layer in range(L) for h in range(H)]).reshape(L, H)
        assert (out["path.heads"][0] - out["metric.clean_logit_diff"]).abs().max() > 1e-4

    for k, v in out.items():
        if k.startswith("sweep."):
            assert (v - out["metric.corrupted_logit_diff"]).abs().max() > 1e-3, f"{k} never changes the metric"
    meta = {"config": cfg.to_json(), "n_pos": T, "receivers": json.dumps(receivers)}
    path_ = os.path.join(out_dir, f"patch_{name}.golden.safetensors")
    safetensors_io.save({k: v.contiguous() for k, v in out.items()}, path_, meta)
    print(f"{path_}: {len(out)} tensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in ["tiny", "tiny_hf"]:
        make(name, args.out)


if __name__ == "__main__":
    main()
