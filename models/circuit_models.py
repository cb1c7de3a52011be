#!/usr/bin/env python3
"""Models whose circuits are known, for testing circuit discovery and faithfulness.

  planted    A 2-layer attention-only model whose weights are set by hand: head 0.0 is a
             previous-token head (it attends by position and writes the previous token into a
             subspace of its own), head 1.0 is an induction head (its key reads that subspace: K
             composition; its query and value read the token; its output is the only thing the
             unembedding reads). Every other head has all-zero weights. The true edge set is proven
             here by patching every edge alone with plain PyTorch (reference.edge_forward): the four
             true edges move the metric, every other edge leaves the logits at the metric's position
             bit-identical.
  induction  A 2-layer attention-only model (LayerNorm, 4 heads) trained on sequences with a
             repeated random segment until it does induction. The ground truth (previous-token
             heads in layer 0, induction heads in layer 1, joined by K composition) is read off the
             attention patterns here, in Python, on fresh repeated random tokens.

The tasks: clean = [BOS, A_1..A_n, A_1..A_{n-1}], answer A_n at the last position. planted: corrupted =
[BOS, A'_1..A'_n, A_1..A_{n-1}] (the first occurrence replaced by other tokens; metric: logit
difference A_n - A'_n). induction: corrupted = [BOS, A'_1..A'_{n-1}, A_n, A_1..A_{n-1}] (A_n stays,
the tokens before it change), so what differs is the previous-token information at A_n's position:
the K-composition path; metric: logit difference A_n - a token in neither prompt.

Writes into --out (default tests/fixtures): NAME_script.pt, NAME_trace.pt (+ .json configs),
NAME.circuit.json (ground truth, the task's settings and the proof's numbers) and NAME.pairs.json
(prompt pairs in interp's format). Deterministic (fixed seeds, one thread).
  python3 models/circuit_models.py planted induction [--out tests/fixtures]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402
from export import export  # noqa: E402
from model import Config, build  # noqa: E402

BOS = 0


def task_pairs(cfg, n_pairs, seg, seed, keep_answer=False):
    """Clean / corrupted induction prompts; the segment tokens are distinct and the corrupted first
    occurrence shares no token with the clean segment. keep_answer: the corrupted first occurrence
    keeps its last token A_n (only the tokens before it change, so only the previous-token
    information at A_n's position differs); the wrong answer is then a token absent from both."""
    g = torch.Generator().manual_seed(seed)
    clean, corrupted, ans, wrong = [], [], [], []
    for _ in range(n_pairs):
        perm = torch.randperm(cfg.d_vocab - 1, generator=g) + 1
        a, a2 = perm[:seg].tolist(), perm[seg:2 * seg].tolist()
        clean.append([BOS] + a + a[:-1])
        corrupted.append([BOS] + (a2[:-1] + a[-1:] if keep_answer else a2) + a[:-1])
        ans.append(a[-1])
        wrong.append(int(perm[2 * seg]) if keep_answer else a2[-1])
    return torch.tensor(clean), torch.tensor(corrupted), torch.tensor(ans), torch.tensor(wrong)


def logit_diff(logits, ans, wrong):
    last = logits[:, -1]
    return (last.gather(1, ans[:, None]) - last.gather(1, wrong[:, None])).mean().item()


def edge_effects(W, cfg, clean, corrupted, ans, wrong):
    """Each edge patched alone (corrupted sender value into the clean run's receiver): the metric's
    change, and whether the logits moved at all."""
    base, _, _ = reference.edge_forward(W, cfg, clean)
    _, c_outs, _ = reference.edge_forward(W, cfg, corrupted)
    out = {}
    for s, r in reference.edges(cfg):
        logits, _, _ = reference.edge_forward(W, cfg, clean, {(s, r): c_outs[s]})
        out[f"{s}->{r}"] = (logit_diff(logits, ans, wrong) - logit_diff(base, ans, wrong),
                            (logits[:, -1] - base[:, -1]).abs().max().item())
    return out


def write_pairs(path, clean, corrupted, ans, wrong):
    pairs = [{"clean_tokens": c.tolist(), "corrupted_tokens": k.tolist(), "answer": int(a), "wrong": int(w)}
             for c, k, a, w in zip(clean, corrupted, ans, wrong)]
    with open(path + ".tmp", "w") as f:
        json.dump({"pairs": pairs, "prepend_bos": False, "position": -1}, f, indent=1)
    os.replace(path + ".tmp", path)


def write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def export_both(model, cfg, out_dir, name):
    for mode in ["script", "trace"]:
        export(model, cfg, mode, os.path.join(out_dir, f"{name}_{mode}.pt"))


# ---------------------------------------------------------------------------------------------


PLANTED = Config(n_layers=2, d_model=64, n_heads=3, d_head=16, d_vocab=16, n_ctx=16, attn_only=True,
                 normalization="none", tied=False, seed=0)


def planted(out_dir):
    cfg = PLANTED
    V, C = cfg.d_vocab, cfg.n_ctx
    TOK, POS, PREV, OUT = 0, V, V + C, 2 * V + C  # the residual stream's four subspaces
    assert OUT + V == cfg.d_model and cfg.d_head == V == C
    S = 80.0  # query scale: 80 / sqrt(16) = 20 logits between the matching key and the others
    model = build(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for t in range(V):
            model.embed.W_E[t, TOK + t] = 1.0
        for i in range(C):
            model.pos_embed.W_pos[i, POS + i] = 1.0
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        for i in range(C):  # head 0.0: query at i matches the key at i - 1
            a0.W_Q[0, POS + i, i] = S
            if i + 1 < C:
                a0.W_K[0, POS + i, i + 1] = 1.0
        for t in range(V):
            a0.W_V[0, TOK + t, t] = 1.0      # copies the attended (previous) token
            a0.W_O[0, t, PREV + t] = 1.0     # into PREV
            a1.W_Q[0, TOK + t, t] = S        # head 1.0: the current token
            a1.W_K[0, PREV + t, t] = 1.0     # matches keys whose previous token it is (K composition)
            a1.W_V[0, TOK + t, t] = 1.0      # and copies the token there
            a1.W_O[0, t, OUT + t] = 10.0     # into OUT, the only subspace the unembedding reads
            model.unembed.W_U[OUT + t, t] = 1.0
    W = reference.standard_weights(model, cfg)
    clean, corrupted, ans, wrong = task_pairs(cfg, 8, 5, seed=1)
    logits, _ = reference.forward(W, cfg, clean)
    acc = (logits[:, -1].argmax(-1) == ans).float().mean().item()
    assert acc == 1.0, f"the planted model predicts {acc:.2f} of the answers"
    effects = edge_effects(W, cfg, clean, corrupted, ans, wrong)
    true_edges = ["embed->a0.h0<v>", "a0.h0->a1.h0<k>", "embed->a1.h0<v>", "a1.h0->logits"]
    for e, (d, moved) in effects.items():
        if e in true_edges:
            assert abs(d) > 1.0, f"true edge {e} moves the metric by only {d}"
        else:
            assert moved == 0.0, f"edge {e} should be exactly irrelevant but moves the logits by {moved}"
    export_both(model, cfg, out_dir, "planted_induction")
    base, _, _ = reference.edge_forward(W, cfg, clean)
    cbase, _, _ = reference.edge_forward(W, cfg, corrupted)
    write_json(os.path.join(out_dir, "planted_induction.circuit.json"), {
        "model": "planted_induction",
        "about": "hand-set weights (models/circuit_models.py planted); true edges proven by patching each "
                 "edge alone in plain PyTorch: the true edges move the metric, every other edge leaves the "
                 "logits at the last position bit-identical",
        "task": {"pairs": "planted_induction.pairs.json", "metric": "logit_diff", "position": -1},
        "true_edges": true_edges,
        "true_nodes": ["a0.h0", "a1.h0"],
        "clean_metric": logit_diff(base, ans, wrong),
        "corrupted_metric": logit_diff(cbase, ans, wrong),
        "edge_effects": {e: d for e, (d, _) in effects.items() if e in true_edges},
        "n_edges": len(effects),
    })
    write_pairs(os.path.join(out_dir, "planted_induction.pairs.json"), clean, corrupted, ans, wrong)
    print(f"planted: accuracy {acc:.2f}, {len(effects)} edges, true-edge effects "
          + ", ".join(f"{e} {effects[e][0]:+.2f}" for e in true_edges)
          + f"; the other {len(effects) - len(true_edges)} move the logits by exactly 0")


# ---------------------------------------------------------------------------------------------


INDUCTION = Config(n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=64, n_ctx=32, attn_only=True,
                   normalization="ln", tied=False, seed=0, init_std=0.05)


LR = float(os.environ.get("INDUCTION_LR", "1e-3"))


def repeated_batch(cfg, batch, seg, g):
    """[BOS, r_1..r_seg, r_1..r_seg] with r uniform over the non-BOS tokens."""
    r = torch.randint(1, cfg.d_vocab, (batch, seg), generator=g)
    return torch.cat([torch.full((batch, 1), BOS), r, r], dim=1)


def training_batch(cfg, batch, g):
    """n_ctx random tokens after BOS with one segment copied to a later place. Where the segment and
    its copy sit varies from batch to batch, so position alone cannot tell where to look.
    Returns tokens and the positions whose next token the copy makes predictable."""
    tokens = torch.randint(1, cfg.d_vocab, (batch, cfg.n_ctx), generator=g)
    tokens[:, 0] = BOS
    seg = int(torch.randint(4, 11, (1,), generator=g))
    s1 = int(torch.randint(1, cfg.n_ctx - 2 * seg, (1,), generator=g))
    s2 = int(torch.randint(s1 + seg, cfg.n_ctx - seg + 1, (1,), generator=g))
    tokens[:, s2:s2 + seg] = tokens[:, s1:s1 + seg]
    return tokens, torch.arange(s2, s2 + seg - 1)


def head_scores(model, cfg, seg=12, n=64):
    """Previous-token, induction (prefix-matching) and copying scores of every head, on repeated
    random tokens, computed from the reference forward (not from interp)."""
    W = reference.standard_weights(model, cfg)
    tokens = repeated_batch(cfg, n, seg, torch.Generator().manual_seed(7))
    logits, acts = reference.forward(W, cfg, tokens)
    T = tokens.shape[1]
    prev, ind = torch.zeros(cfg.n_layers, cfg.n_heads), torch.zeros(cfg.n_layers, cfg.n_heads)
    for L in range(cfg.n_layers):
        pat = acts[f"blocks.{L}.attn.hook_pattern"]  # [b, h, q, k]
        q = torch.arange(1, T)
        prev[L] = pat[:, :, q, q - 1].mean((0, 2))
        q2 = torch.arange(seg + 1, T)  # second occurrence: the token after the earlier copy
        ind[L] = pat[:, :, q2, q2 - seg + 1].mean((0, 2))
    loss2 = torch.nn.functional.cross_entropy(logits[:, seg + 1:-1].reshape(-1, cfg.d_vocab),
                                              tokens[:, seg + 2:].reshape(-1)).item()
    return prev, ind, loss2


def induction(out_dir, steps):
    cfg = INDUCTION
    torch.manual_seed(0)
    model = build(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    curve = []
    t0 = time.time()
    for step in range(steps + 1):
        tokens, copied = training_batch(cfg, 64, g)
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.d_vocab), tokens[:, 1:].reshape(-1))
        second = torch.nn.functional.cross_entropy(logits[:, copied].reshape(-1, cfg.d_vocab),
                                                   tokens[:, copied + 1].reshape(-1))
        if step % 100 == 0:
            curve.append({"step": step, "loss": round(loss.item(), 4), "copied_loss": round(second.item(), 4)})
            print(f"\rinduction: step {step}/{steps} loss {loss.item():.3f} loss on copied tokens {second.item():.3f} "
                  f"({time.time() - t0:.0f} s)", end="", flush=True)
        if step == steps:
            break
        opt.zero_grad()
        (second + 0.1 * loss).backward()  # the copied tokens are what there is to learn
        opt.step()
    print()
    model.eval()
    prev, ind, loss2 = head_scores(model, cfg)
    p_head = int(prev[0].argmax())
    i_head = int(ind[1].argmax())
    assert prev[0, p_head] > 0.5 and ind[1, i_head] > 0.5, f"no induction circuit: prev {prev}, induction {ind}"
    prev_heads = [h for h in range(cfg.n_heads) if prev[0, h] > 0.5]
    ind_heads = [h for h in range(cfg.n_heads) if ind[1, h] > 0.5]
    export_both(model, cfg, out_dir, "induction")
    clean, corrupted, ans, wrong = task_pairs(cfg, 16, 8, seed=3, keep_answer=True)
    W = reference.standard_weights(model, cfg)
    base, _, _ = reference.edge_forward(W, cfg, clean)
    cbase, _, _ = reference.edge_forward(W, cfg, corrupted)
    write_json(os.path.join(out_dir, "induction.circuit.json"), {
        "model": "induction",
        "about": "trained on repeated random segments (models/circuit_models.py induction); heads found from "
                 "attention patterns in plain PyTorch on fresh repeated random tokens",
        "task": {"pairs": "induction.pairs.json", "metric": "logit_diff", "position": -1},
        "prev_token_heads": [[0, h] for h in prev_heads],
        "induction_heads": [[1, h] for h in ind_heads],
        "key_edge": f"a0.h{p_head}->a1.h{i_head}<k>",
        "true_edges": [f"a0.h{p}->a1.h{i}<k>" for p in prev_heads for i in ind_heads],
        "prev_token_scores": prev.tolist(),
        "induction_scores": ind.tolist(),
        "repeated_half_loss": loss2,
        "clean_metric": logit_diff(base, ans, wrong),
        "corrupted_metric": logit_diff(cbase, ans, wrong),
        "training": {"steps": steps, "optimizer": f"AdamW lr {LR} wd 0.01", "loss": "copied-token loss + 0.1 x full loss", "batch": 64, "data": "n_ctx random tokens, one segment of 4..10 copied later",
                     "seed": 0, "seconds": round(time.time() - t0, 1), "curve": curve},
    })
    write_pairs(os.path.join(out_dir, "induction.pairs.json"), clean, corrupted, ans, wrong)
    print(f"induction: repeated-half loss {loss2:.3f}; prev-token heads {prev_heads} (scores "
          f"{[round(x, 2) for x in prev[0].tolist()]}), induction heads {ind_heads} "
          f"(scores {[round(x, 2) for x in ind[1].tolist()]}); clean {logit_diff(base, ans, wrong):.2f}, "
          f"corrupted {logit_diff(cbase, ans, wrong):.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="+", choices=["planted", "induction"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
    ap.add_argument("--steps", type=int, default=3000, help="induction training steps (default: 3000)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for w in args.which:
        planted(args.out) if w == "planted" else induction(args.out, args.steps)


if __name__ == "__main__":
    main()
