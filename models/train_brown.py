#!/usr/bin/env python3
"""Train the shipped Brown language model (a GPT in models/model.py's TransformerLens layout) on CPU.

The corpus arrives pre-tokenized by interp itself, so the model and interp agree on every id:
  build/interp tokenizer train --data data/brown --vocab-size 4096 --out models/brown_lm/brown-4k
  build/interp tokenize --data data/brown --tokenizer models/brown_lm/brown-4k.model --out /tmp/brown-4k.safetensors
  python3 models/train_brown.py --tokens /tmp/brown-4k.safetensors --out models/brown_lm

Held out: every 20th Brown document in interp's order (0, 20, 40, ...: 25 of 500). Packing as interp
packs (docs/data.md): documents joined with EOS after each, contexts of n_ctx tokens each starting
with BOS. Deterministic for a given --steps, --seed and --threads. Writes into --out:
brown_lm_script.pt, brown_lm_trace.pt (+ .json configs) and brown_lm.train.json (settings, seed,
held-out documents, the loss curve on train batches and held-out contexts, the final held-out loss
and next-token accuracy), each written to a temporary name and renamed.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from export import export  # noqa: E402
from model import Config, build  # noqa: E402

HELD_OUT_EVERY = 20


def pack(tokens, offsets, docs, bos, eos, n_ctx):
    """Contexts [n, n_ctx] of the given documents, as interp packs them."""
    stream = []
    for d in docs:
        stream.extend(tokens[offsets[d]:offsets[d + 1]].tolist())
        stream.append(eos)
    per = n_ctx - 1
    n = len(stream) // per
    body = torch.tensor(stream[:n * per], dtype=torch.long).view(n, per)
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), body], dim=1)


@torch.no_grad()
def evaluate(model, contexts, batch=64):
    """Mean next-token loss and accuracy over every position after BOS."""
    loss, correct, count = 0.0, 0, 0
    for i in range(0, len(contexts), batch):
        x = contexts[i:i + batch]
        logits = model(x)[:, :-1]
        y = x[:, 1:]
        loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        count += y.numel()
    return loss / count, correct / count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True, help="token file from `interp tokenize` (safetensors)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps (default: 1500)")
    ap.add_argument("--batch", type=int, default=32, help="contexts per step (default: 32)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat-fraction", type=float, default=0.0,
                    help="share of each batch made of a Brown passage shown twice (BOS, 63 tokens, the same 63, "
                         "one more), to encourage copying; 0.25 for 1500 steps made no induction heads either (default: 0)")
    ap.add_argument("--init-only", action="store_true",
                    help="export the untrained model (same shape and seed; a baseline) and stop: no training, no report")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tensors, meta = safetensors_io.load(args.tokens)
    tokens, offsets = tensors["tokens"].long(), tensors["doc_offsets"].long()
    vocab, bos, eos = int(meta["vocab_size"]), int(meta["bos_id"]), int(meta["eos_id"])
    n_docs = len(offsets) - 1
    held = [d for d in range(n_docs) if d % HELD_OUT_EVERY == 0]
    train_docs = [d for d in range(n_docs) if d % HELD_OUT_EVERY != 0]
    cfg = Config(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=vocab, n_ctx=128, tied=True,
                 init_std=0.02, seed=args.seed)
    train = pack(tokens, offsets, train_docs, bos, eos, cfg.n_ctx)
    valid = pack(tokens, offsets, held, bos, eos, cfg.n_ctx)
    print(f"brown_lm: {n_docs} documents, {len(train)} train / {len(valid)} held-out contexts of {cfg.n_ctx}; "
          f"vocabulary {vocab}")
    model = build(cfg).train()
    if args.init_only:
        model.eval()
        os.makedirs(args.out, exist_ok=True)
        for mode in ["script", "trace"]:
            export(model, cfg, mode, os.path.join(args.out, f"brown_lm_{mode}.pt"))
        print(f"brown_lm: wrote the untrained model (seed {args.seed}) to {args.out}")
        return
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    g = torch.Generator().manual_seed(args.seed)
    curve, t0 = [], time.time()
    probe = valid[:128]
    every = max(1, args.steps // 15)
    for step in range(args.steps + 1):
        if step % every == 0 or step == args.steps:
            model.eval()
            vl, va = evaluate(model, probe)
            model.train()
            curve.append({"step": step, "held_out_loss": round(vl, 4), "held_out_acc": round(va, 4),
                          "seconds": round(time.time() - t0, 1)})
        if step == args.steps:
            break
        x = train[torch.randint(0, len(train), (args.batch,), generator=g)]
        n_rep = int(round(args.batch * args.repeat_fraction))
        if n_rep > 0:  # [BOS, s, s, next] with s the context's first 63 tokens after BOS
            seg = (cfg.n_ctx - 2) // 2
            s = x[:n_rep, 1:1 + seg]
            x = x.clone()
            x[:n_rep] = torch.cat([x[:n_rep, :1], s, s, x[:n_rep, 1 + seg:2 + seg]], dim=1)
        logits = model(x)[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % every == 0:
            curve[-1]["train_loss"] = round(loss.item(), 4)
        if step % 10 == 0:
            el = time.time() - t0
            print(f"\rbrown_lm: step {step}/{args.steps} loss {loss.item():.3f} held-out {curve[-1]['held_out_loss']:.3f} "
                  f"({(step + 1) / el:.2f} steps/s, ETA {el / (step + 1) * (args.steps - step - 1) / 60:.1f} min)   ",
                  end="", flush=True)
    print()
    model.eval()
    vl, va = evaluate(model, valid)
    os.makedirs(args.out, exist_ok=True)
    for mode in ["script", "trace"]:
        export(model, cfg, mode, os.path.join(args.out, f"brown_lm_{mode}.pt"))
    report = {"config": json.loads(cfg.to_json()), "steps": args.steps, "batch": args.batch, "lr": args.lr,
              "repeat_fraction": args.repeat_fraction,
              "optimizer": "AdamW betas (0.9, 0.95), weight decay 0.1, warmup 5%, cosine to 10%, grad clip 1.0",
              "seed": args.seed, "threads": args.threads, "tokenizer_xxh64": meta.get("tokenizer_xxh64"),
              "held_out_documents": held, "held_out_rule": f"document index % {HELD_OUT_EVERY} == 0",
              "train_contexts": len(train), "held_out_contexts": len(valid),
              "tokens_seen": args.steps * args.batch * (cfg.n_ctx - 1),
              "held_out_loss": vl, "held_out_next_token_accuracy": va, "seconds": round(time.time() - t0, 1),
              "curve": curve}
    path = os.path.join(args.out, "brown_lm.train.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(report, fh, indent=1)
    os.replace(path + ".tmp", path)
    print(f"brown_lm: held-out loss {vl:.3f}, next-token accuracy {va:.3f}, {time.time() - t0:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
