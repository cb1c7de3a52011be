#!/usr/bin/env python3
"""Golden files for the edge points and for edge patching, from reference.edge_forward (plain
PyTorch: each receiver's input summed from its senders' outputs; no interp code, no TorchScript).

For the fixture models tiny, tiny_attn_only (TransformerLens layout) and tiny_hf (Hugging Face layout):
  act.blocks.L.hook_q_input|k_input|v_input  [b, p, head, d_model]  each head's receiver input
  act.blocks.L.attn.hook_result              [b, p, head, d_model]  each head's output
  act.blocks.L.hook_mlp_in                   [b, p, d_model]
  edge.<ablation>.<i>.logits                 logits of the clean run with edge i's sender replaced, in
                                             that receiver's input only, by: the corrupted run's value
                                             (patch), zeros (zero), or its mean over the corrupted
                                             prompts per position (mean)
  all_into.logits                            every sender into blocks.1 head 2's query patched
Metadata "edges": the edges as "sender->receiver" (reference.edges naming).

Writes tests/fixtures/edge_<config>.golden.safetensors. Deterministic.
  python3 models/make_edge_goldens.py [--out tests/fixtures]
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

FIXTURES = ["tiny", "tiny_attn_only", "tiny_hf"]


def pick_edges(cfg):
    want = ["embed->a0.h1<k>", "a0.h2->a1.h0<q>", "a0.h3->a1.h1<v>", "a1.h0->logits", "embed->logits"]
    if not cfg.attn_only:
        want += ["m0->a1.h2<k>", "a0.h1->m1", "m0->logits", "a1.h3->m1"]
    all_edges = {f"{s}->{r}" for s, r in reference.edges(cfg)}
    assert all(e in all_edges for e in want)
    return want


def make(name, out_dir):
    cfg = CONFIGS[name]
    W = reference.standard_weights(build(cfg), cfg)
    g = torch.Generator().manual_seed(5)
    clean = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)
    corrupted = torch.randint(0, cfg.d_vocab, (2, 7), generator=g)
    with torch.no_grad():
        logits, outs, ins = reference.edge_forward(W, cfg, clean)
        plain, _ = reference.forward(W, cfg, clean)
        assert (logits - plain).abs().max() < 1e-5
        _, c_outs, c_ins = reference.edge_forward(W, cfg, corrupted)
        out = {"tokens": clean, "corrupted_tokens": corrupted, "logits": logits}
        for L in range(cfg.n_layers):
            for x in "qkv":
                out[f"act.blocks.{L}.hook_{x}_input"] = torch.stack(
                    [ins[f"a{L}.h{h}<{x}>"] for h in range(cfg.n_heads)], dim=2)
            out[f"act.blocks.{L}.attn.hook_result"] = torch.stack([outs[f"a{L}.h{h}"] for h in range(cfg.n_heads)], 2)
            if not cfg.attn_only:
                out[f"act.blocks.{L}.hook_mlp_in"] = ins[f"m{L}"]
        edges = pick_edges(cfg)
        for i, e in enumerate(edges):
            s, r = e.split("->")
            values = {"patch": c_outs[s], "zero": torch.zeros_like(outs[s]),
                      "mean": c_outs[s].mean(0, keepdim=True).expand_as(outs[s])}
            for kind, v in values.items():
                lg, _, _ = reference.edge_forward(W, cfg, clean, {(s, r): v})
                out[f"edge.{kind}.{i}.logits"] = lg
            d = (out[f"edge.patch.{i}.logits"] - logits).abs().max().item()
            assert d > 1e-4, f"{name}: patching {e} barely changes the logits ({d}); the test could not fail"
        recv = "a1.h2<q>"
        repl = {(s, r): c_outs[s] for s, r in reference.edges(cfg) if r == recv}
        out["all_into.logits"], _, _ = reference.edge_forward(W, cfg, clean, repl)
    path = os.path.join(out_dir, f"edge_{name}.golden.safetensors")
    safetensors_io.save(out, path, {"config": cfg.to_json(), "edges": json.dumps(edges), "all_into": recv})
    print(f"{path}: {len(edges)} edges x 3 ablations")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in FIXTURES:
        make(name, args.out)


if __name__ == "__main__":
    main()
