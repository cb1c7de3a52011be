#!/usr/bin/env python3
"""Reference for bench_sae: a plain PyTorch TopK SAE training loop (dense decoder, torch.optim.Adam,
unit-norm decoder rows), as one would write it in Python. Prints tokens_per_s=N.

  python3 bench/sae_reference.py DATA.safetensors D_SAE K BATCH STEPS THREADS
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import safetensors_io  # noqa: E402


def main():
    path, d_sae, k, batch, steps, threads = sys.argv[1], *map(int, sys.argv[2:7])
    torch.set_num_threads(threads)
    x_all = safetensors_io.load(path)[0]["x"]
    d_in = x_all.shape[1]
    torch.manual_seed(0)
    W_dec = torch.randn(d_sae, d_in)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.t().clone()
    b_enc, b_dec = torch.zeros(d_sae), torch.zeros(d_in)
    params = [W_enc, W_dec, b_enc, b_dec]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=4e-4)
    n_batches = x_all.shape[0] // batch

    def step(i):
        x = x_all[(i % n_batches) * batch:(i % n_batches + 1) * batch]
        pre = (x - b_dec) @ W_enc + b_enc
        vals, idx = pre.topk(k, dim=-1)
        h = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        x_hat = h @ W_dec + b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    s = time.perf_counter() - t0
    print(f"tokens_per_s={steps * batch / s:.1f}")


if __name__ == "__main__":
    main()
