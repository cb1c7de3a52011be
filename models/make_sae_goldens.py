#!/usr/bin/env python3
"""SAE goldens: every architecture's forward pass, losses and gradients in plain PyTorch.

For each architecture (standard, topk, batchtopk, jumprelu, gated, matryoshka) this writes
tests/fixtures/sae/ARCH/:
  cfg.json, sae_weights.safetensors   an SAE in SAELens's layout (W_enc [d_in, d_sae], W_dec [d_sae,
                                      d_in], b_enc, b_dec, threshold; gated: b_gate, b_mag, r_mag),
                                      written with plain torch, as a SAELens user's folder would be
  golden.safetensors                  x, dead mask, h, x_hat, mse, sparsity, aux, extra, loss, and
                                      the gradients of loss w.r.t. every parameter

The definitions follow the papers (and SAELens): see each function. interp's C++ must match them.
  python3 models/make_sae_goldens.py
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

D_IN, D_SAE, K, BATCH = 16, 48, 4, 12
PREFIXES = [6, 18, 48]  # matryoshka
L1, AUX_K, AUX_COEF, BANDWIDTH = 0.7, 8, 1.0 / 32, 0.05


class JumpReLU(torch.autograd.Function):
    """h = pre * H(pre - theta); d/d theta := -(theta/eps) K((pre - theta)/eps), K = rectangle."""

    @staticmethod
    def forward(ctx, pre, theta):
        ctx.save_for_backward(pre, theta)
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        k = ((pre - theta).abs() / BANDWIDTH < 0.5).to(pre.dtype)
        return g * (pre > theta), (-(theta / BANDWIDTH) * k * g).sum(0)


class Step(torch.autograd.Function):
    """H(pre - theta); d/d theta := -(1/eps) K((pre - theta)/eps)."""

    @staticmethod
    def forward(ctx, pre, theta):
        ctx.save_for_backward(pre, theta)
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        k = ((pre - theta).abs() / BANDWIDTH < 0.5).to(pre.dtype)
        return torch.zeros_like(pre), (-(1.0 / BANDWIDTH) * k * g).sum(0)


def forward(arch, p, x, dead):
    extra = torch.zeros(())
    if arch == "gated":  # Rajamanoharan et al. 2024, eqs. 6-8, with SAELens's parameter names
        pi_gate = (x - p["b_dec"]) @ p["W_enc"] + p["b_gate"]
        pi_mag = (x - p["b_dec"]) @ (p["W_enc"] * p["r_mag"].exp()) + p["b_mag"]
        h = (pi_gate > 0).float() * torch.relu(pi_mag)
        sparsity = (torch.relu(pi_gate) * p["W_dec"].norm(dim=1)).sum(-1).mean()
        via_gate = torch.relu(pi_gate) @ p["W_dec"].detach() + p["b_dec"].detach()
        extra = (via_gate - x).pow(2).sum(-1).mean()
        pre = pi_gate
    else:
        pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    if arch == "gated":
        pass
    elif arch == "standard":
        h = torch.relu(pre)
        sparsity = (h * p["W_dec"].norm(dim=1)).sum(-1).mean()
    elif arch == "topk":
        vals, idx = pre.topk(K, dim=-1)
        h = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        sparsity = torch.zeros(())
    elif arch in ("batchtopk", "matryoshka"):
        r = torch.relu(pre).flatten()
        vals, idx = r.topk(K * x.shape[0])
        h = torch.zeros_like(r).scatter(0, idx, vals).view_as(pre)
        sparsity = torch.zeros(())
    elif arch == "jumprelu":
        h = JumpReLU.apply(pre, p["threshold"])
        sparsity = Step.apply(pre, p["threshold"]).sum(-1).mean()
    y = h @ p["W_dec"] + p["b_dec"]
    mse = (y - x).pow(2).sum(-1).mean()
    if arch == "matryoshka":  # each strict prefix reconstructs x on its own
        for m in PREFIXES[:-1]:
            y_m = h[:, :m] @ p["W_dec"][:m] + p["b_dec"]
            extra = extra + (y_m - x).pow(2).sum(-1).mean()
    aux = torch.zeros(())
    if arch in ("topk", "batchtopk", "matryoshka"):  # AuxK (Gao et al. 2024) on the dead latents
        kk = min(AUX_K, int(dead.sum()))
        masked = pre.masked_fill(~dead, float("-inf"))
        vals, idx = masked.topk(kk, dim=-1)
        h_aux = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        residual = (x - y).detach()
        e_hat = h_aux @ p["W_dec"]
        aux = (e_hat - residual).pow(2).sum(-1).mean() / (residual - residual.mean(0)).pow(2).sum(-1).mean()
    loss = mse + L1 * sparsity + AUX_COEF * aux + extra
    return h, y, mse, sparsity, aux, extra, loss


def make(arch, out_root):
    g = torch.Generator().manual_seed({"standard": 1, "topk": 2, "batchtopk": 3, "jumprelu": 4, "gated": 5,
                                       "matryoshka": 6}[arch])
    W_dec = torch.randn(D_SAE, D_IN, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    p = {"W_enc": (W_dec.t() + 0.1 * torch.randn(D_IN, D_SAE, generator=g)).contiguous(), "W_dec": W_dec,
         "b_enc": 0.1 * torch.randn(D_SAE, generator=g), "b_dec": 0.1 * torch.randn(D_IN, generator=g)}
    x = torch.randn(BATCH, D_IN, generator=g)
    if arch == "jumprelu":
        pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
        # thresholds: some placed so that pre-activations fall inside the estimator's window
        p["threshold"] = (0.2 + 0.3 * torch.rand(D_SAE, generator=g))
        p["threshold"][:6] = pre[0, :6] + BANDWIDTH / 4
    if arch == "gated":
        p["b_gate"] = p.pop("b_enc")
        p["r_mag"] = 0.3 * torch.randn(D_SAE, generator=g)
        p["b_mag"] = 0.1 * torch.randn(D_SAE, generator=g)
    for t in p.values():
        t.requires_grad_(True)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::5] = True
    h, y, mse, sparsity, aux, extra, loss = forward(arch, p, x, dead)
    grads = torch.autograd.grad(loss, list(p.values()))

    d = os.path.join(out_root, arch)
    os.makedirs(d, exist_ok=True)
    cfg = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "hook_name": "blocks.0.hook_resid_post", "hook_layer": 0, "apply_b_dec_to_input": True,
           "normalize_activations": "none", "model_name": "tiny", "context_size": 16}
    if arch in ("topk", "batchtopk", "matryoshka"):
        cfg["activation_fn_kwargs"] = {"k": K}  # SAELens keeps k here
    if arch == "matryoshka":
        cfg["matryoshka_prefixes"] = PREFIXES
    with open(os.path.join(d, "cfg.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    safetensors_io.save({k: v.detach() for k, v in p.items()}, os.path.join(d, "sae_weights.safetensors"),
                        {"format": "pt"})
    golden = {"x": x, "dead": dead.to(torch.uint8), "h": h.detach(), "x_hat": y.detach(), "mse": mse.detach(),
              "sparsity": sparsity.detach(), "aux": aux.detach(), "extra": extra.detach(),
              "loss": loss.detach()}
    for name, gr in zip(p.keys(), grads):
        golden["grad." + name] = gr
    safetensors_io.save(golden, os.path.join(d, "golden.safetensors"),
                        {"l1_coefficient": str(L1), "aux_k": str(AUX_K), "aux_coefficient": str(AUX_COEF),
                         "bandwidth": str(BANDWIDTH), "k": str(K)})
    assert math.isfinite(loss.item())
    print(f"{d}: loss {loss.item():.6f} (mse {mse.item():.4f}, sparsity {sparsity.item():.4f}, aux {aux.item():.4f}, "
          f"extra {extra.item():.4f})")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "tests", "fixtures", "sae")
    torch.set_num_threads(1)
    for arch in ["standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]:
        make(arch, out)


if __name__ == "__main__":
    main()
