#!/usr/bin/env python3
"""SAE files in other tools' layouts, written with plain torch following their documented layouts,
with the outputs each tool's own arithmetic gives (the goldens interp's readers must reproduce).

Writes tests/fixtures/sae_formats/:
  sparsify/layers.0/, sparsify/layers.1/   EleutherAI sparsify: cfg.json ({"activation": "topk", "k",
                                           "num_latents", "expansion_factor", ..., "d_in"}) and
                                           sae.safetensors (encoder.weight [d_sae, d_in], encoder.bias,
                                           W_dec [d_sae, d_in], b_dec), bfloat16 for layers.1
  saelens_release/blocks.0.hook_resid_pre/ SAELens, several SAEs by hook in one folder (as releases are
  saelens_release/blocks.1.hook_resid_pre/ laid out): cfg.json + sae_weights.safetensors; blocks.1 has
                                           apply_b_dec_to_input = false
  saelens_norm/constant_norm_rescale/      SAELens SAEs that normalise each token at run time: a standard one
  saelens_norm/layer_norm/                 with normalize_activations "constant_norm_rescale", a TopK one
                                           (k 4) with "layer_norm"
  dictionary_learning/{standard,topk,batchtopk,jumprelu}/
                                           dictionary_learning: ae.pt (a state dict saved with
                                           torch.save) + config.json ({"trainer": {"dict_class", ...}})
  activations/part0.npy, part1.safetensors activations made by other tools (numpy's np.save; a
                                           safetensors file of [n, ctx, d_in] f16 beside "tokens")
  golden.safetensors                       x [32, d_in] and, per SAE, the dense latents h and the
                                           reconstruction x_hat

Arithmetic:
  sparsify   top-k of relu(encoder(x - b_dec)); x_hat = sum of the k latents' W_dec rows + b_dec
  SAELens    h = relu((x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc); x_hat = h @ W_dec + b_dec
             with normalize_activations, x is first normalised per token and x_hat mapped back
             (SAELens's run_time_activation_norm_fn_in/out):
               constant_norm_rescale  c = sqrt(d_in) / |x|; in x * c; out x_hat / c
               layer_norm             mu = mean(x), s = std(x - mu) (unbiased); in (x - mu) / (s + 1e-5);
                                      out x_hat * s + mu

  python3 models/make_sae_format_goldens.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

D_IN, D_SAE, K = 16, 64, 4


def sparsify_sae(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    enc_w = (torch.randn(D_SAE, D_IN, generator=g) / D_IN ** 0.5).to(dtype)
    enc_b = (torch.randn(D_SAE, generator=g) * 0.05).to(dtype)
    w_dec = torch.randn(D_SAE, D_IN, generator=g)
    w_dec = (w_dec / w_dec.norm(dim=1, keepdim=True)).to(dtype)
    b_dec = (torch.randn(D_IN, generator=g) * 0.1).to(dtype)
    return {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": w_dec, "b_dec": b_dec}


def sparsify_forward(t, x):
    f = {k: v.float() for k, v in t.items()}
    pre = torch.relu((x - f["b_dec"]) @ f["encoder.weight"].T + f["encoder.bias"])
    acts, idx = pre.topk(K, dim=-1)
    h = torch.zeros_like(pre).scatter(-1, idx, acts)
    x_hat = (f["W_dec"][idx] * acts[..., None]).sum(-2) + f["b_dec"]
    return h, x_hat


def saelens_sae(seed):
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN ** 0.5,
            "W_dec": torch.randn(D_SAE, D_IN, generator=g) / D_IN ** 0.5,
            "b_enc": torch.randn(D_SAE, generator=g) * 0.05 - 0.1,
            "b_dec": torch.randn(D_IN, generator=g) * 0.1}


def saelens_forward(t, x, apply_b_dec_to_input):
    xin = x - t["b_dec"] if apply_b_dec_to_input else x
    h = torch.relu(xin @ t["W_enc"] + t["b_enc"])
    return h, h @ t["W_dec"] + t["b_dec"]


def saelens_norm_forward(t, x, norm, k=None):
    if norm == "constant_norm_rescale":
        c = D_IN ** 0.5 / x.norm(dim=-1, keepdim=True)
        xin, out = x * c, lambda y: y / c
    else:  # layer_norm
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        sd = xc.std(dim=-1, keepdim=True)
        xin, out = xc / (sd + 1e-5), lambda y: y * sd + mu
    pre = (xin - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    if k is None:
        h = torch.relu(pre)
    else:
        vals, idx = pre.topk(k, dim=-1)
        h = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    return h, out(h @ t["W_dec"] + t["b_dec"])


def dictionary_learning_saes():
    """dictionary_learning's classes as state dicts saved with torch.save (ae.pt), the trainer
    config beside them (config.json), and each class's encode/decode:
      AutoEncoder          encoder (Linear d_in->d_sae), decoder (Linear d_sae->d_in, no bias), bias;
                           f = relu(encoder(x - bias)), x_hat = decoder(f) + bias
      AutoEncoderTopK      encoder, decoder (no bias), b_dec, k (int buffer), threshold;
                           f = top-k of relu(encoder(x - b_dec)), x_hat = decoder(f) + b_dec
      BatchTopKSAE         the same parameters; inference keeps relu(...) > threshold
      JumpReluAutoEncoder  W_enc [d_in, d_sae], b_enc, W_dec, b_dec, threshold (apply_b_dec_to_input
                           False); f = relu(pre * (pre > threshold)) * |W_dec rows|,
                           x_hat = (f / |W_dec rows|) @ W_dec + b_dec
      GatedAutoEncoder     encoder (no bias), decoder (no bias), decoder_bias, r_mag, gate_bias,
                           mag_bias; x_enc = encoder(x - decoder_bias),
                           f = 1[x_enc + gate_bias > 0] * relu(exp(r_mag) x_enc + mag_bias) * n,
                           x_hat = decoder(f / n) + decoder_bias, n = decoder column norms + 1e-8
    """
    g = torch.Generator().manual_seed(30)

    def lin(o, i):
        return torch.randn(o, i, generator=g) / i ** 0.5

    def trainer(dict_class, **extra):
        return {"trainer": {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE, "layer": 1,
                            "lm_name": "tiny", "submodule_name": "resid_post_layer_1", **extra},
                "buffer": {"d_submodule": D_IN, "ctx_len": 16}}

    std = {"bias": torch.randn(D_IN, generator=g) * 0.1, "encoder.weight": lin(D_SAE, D_IN),
           "encoder.bias": torch.randn(D_SAE, generator=g) * 0.05 - 0.05, "decoder.weight": lin(D_IN, D_SAE)}

    def std_fwd(t, x):
        f = torch.relu((x - t["bias"]) @ t["encoder.weight"].T + t["encoder.bias"])
        return f, f @ t["decoder.weight"].T + t["bias"]

    topk = {"k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(0.05), "encoder.weight": lin(D_SAE, D_IN),
            "encoder.bias": torch.randn(D_SAE, generator=g) * 0.05, "decoder.weight": lin(D_IN, D_SAE),
            "b_dec": torch.randn(D_IN, generator=g) * 0.1}

    def topk_fwd(t, x):
        post = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
        v, i = post.topk(int(t["k"]), dim=-1)
        f = torch.zeros_like(post).scatter(-1, i, v)
        return f, f @ t["decoder.weight"].T + t["b_dec"]

    def batchtopk_fwd(t, x):
        post = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
        f = post * (post > t["threshold"])
        return f, f @ t["decoder.weight"].T + t["b_dec"]

    w_dec = lin(D_SAE, D_IN) * (0.5 + torch.rand(D_SAE, 1, generator=g))  # rows not unit norm
    jump = {"W_enc": lin(D_IN, D_SAE), "b_enc": torch.randn(D_SAE, generator=g) * 0.05, "W_dec": w_dec,
            "b_dec": torch.randn(D_IN, generator=g) * 0.1, "threshold": torch.rand(D_SAE, generator=g) * 0.2}

    def jump_fwd(t, x):
        pre = x @ t["W_enc"] + t["b_enc"]
        n = t["W_dec"].norm(dim=1)
        f = torch.relu(pre * (pre > t["threshold"])) * n
        return f, (f / n) @ t["W_dec"] + t["b_dec"]

    dec = lin(D_IN, D_SAE) * (0.5 + torch.rand(1, D_SAE, generator=g))  # columns not unit norm
    gated = {"decoder_bias": torch.randn(D_IN, generator=g) * 0.1, "encoder.weight": lin(D_SAE, D_IN),
             "r_mag": torch.randn(D_SAE, generator=g) * 0.3, "gate_bias": torch.randn(D_SAE, generator=g) * 0.05,
             "mag_bias": torch.randn(D_SAE, generator=g) * 0.05, "decoder.weight": dec}

    def gated_fwd(t, x):
        x_enc = (x - t["decoder_bias"]) @ t["encoder.weight"].T
        f_gate = (x_enc + t["gate_bias"] > 0).float()
        f = f_gate * torch.relu(t["r_mag"].exp() * x_enc + t["mag_bias"])
        n = t["decoder.weight"].norm(dim=0, keepdim=True) + 1e-8
        f = f * n
        return f, (f / n) @ t["decoder.weight"].T + t["decoder_bias"]

    return {"standard": (std, trainer("AutoEncoder", trainer_class="StandardTrainer"), std_fwd),
            "gated": (gated, trainer("GatedAutoEncoder", trainer_class="GatedSAETrainer"), gated_fwd),
            "topk": (topk, trainer("AutoEncoderTopK", trainer_class="TopKTrainer", k=K), topk_fwd),
            "batchtopk": (dict(topk), trainer("BatchTopKSAE", trainer_class="BatchTopKTrainer", k=K), batchtopk_fwd),
            "jumprelu": (jump, trainer("JumpReluAutoEncoder", trainer_class="JumpReluTrainer"), jump_fwd)}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "tests", "fixtures", "sae_formats")
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(7))
    golden = {"x": x}
    for layer, dtype in [(0, torch.float32), (1, torch.bfloat16)]:
        d = os.path.join(out, "sparsify", f"layers.{layer}")
        os.makedirs(d, exist_ok=True)
        t = sparsify_sae(10 + layer, dtype)
        safetensors_io.save(t, os.path.join(d, "sae.safetensors"), {"format": "pt"})
        write_json(os.path.join(d, "cfg.json"),
                   {"activation": "topk", "expansion_factor": D_SAE // D_IN, "normalize_decoder": True,
                    "num_latents": D_SAE, "k": K, "multi_topk": False, "skip_connection": False,
                    "transcode": False, "d_in": D_IN})
        h, x_hat = sparsify_forward(t, x)
        golden[f"sparsify/layers.{layer}.h"], golden[f"sparsify/layers.{layer}.x_hat"] = h, x_hat
    for layer, apply in [(0, True), (1, False)]:
        hook = f"blocks.{layer}.hook_resid_pre"
        d = os.path.join(out, "saelens_release", hook)
        os.makedirs(d, exist_ok=True)
        t = saelens_sae(20 + layer)
        safetensors_io.save(t, os.path.join(d, "sae_weights.safetensors"), {"format": "pt"})
        write_json(os.path.join(d, "cfg.json"),
                   {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
                    "device": "cpu", "model_name": "tiny", "hook_name": hook, "hook_layer": layer,
                    "hook_head_index": None, "activation_fn_str": "relu", "activation_fn_kwargs": {},
                    "apply_b_dec_to_input": apply, "finetuning_scaling_factor": False, "context_size": 16,
                    "dataset_path": "", "prepend_bos": True, "normalize_activations": "none"})
        h, x_hat = saelens_forward(t, x, apply)
        golden[f"saelens_release/{hook}.h"], golden[f"saelens_release/{hook}.x_hat"] = h, x_hat
    for i, (norm, arch, k) in enumerate([("constant_norm_rescale", "standard", None), ("layer_norm", "topk", K)]):
        d = os.path.join(out, "saelens_norm", norm)
        os.makedirs(d, exist_ok=True)
        t = saelens_sae(30 + i)
        safetensors_io.save(t, os.path.join(d, "sae_weights.safetensors"), {"format": "pt"})
        cfg = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
               "model_name": "tiny", "hook_name": "blocks.0.hook_resid_post", "hook_layer": 0,
               "hook_head_index": None, "activation_fn_str": "topk" if k else "relu",
               "activation_fn_kwargs": {"k": k} if k else {}, "apply_b_dec_to_input": True,
               "finetuning_scaling_factor": False, "context_size": 16, "dataset_path": "", "prepend_bos": True,
               "normalize_activations": norm}
        if k:
            cfg["k"] = k
        write_json(os.path.join(d, "cfg.json"), cfg)
        h, x_hat = saelens_norm_forward(t, x, norm, k)
        golden[f"saelens_norm/{norm}.h"], golden[f"saelens_norm/{norm}.x_hat"] = h, x_hat
    for name, (state, cfg, fwd) in dictionary_learning_saes().items():
        d = os.path.join(out, "dictionary_learning", name)
        os.makedirs(d, exist_ok=True)
        torch.save(state, os.path.join(d, "ae.pt"))
        write_json(os.path.join(d, "config.json"), cfg)
        h, x_hat = fwd(state, x)
        golden[f"dictionary_learning/{name}.h"], golden[f"dictionary_learning/{name}.x_hat"] = h, x_hat
    # Activations from other tools, no manifest: a .npy written by numpy ([rows, d_in], float32), a
    # .safetensors holding [n, ctx, d_in] in float16 beside another tensor, and the rows they hold
    import numpy as np
    acts = os.path.join(out, "activations")
    os.makedirs(acts, exist_ok=True)
    g = torch.Generator().manual_seed(40)
    rows = torch.randn(1000, D_IN, generator=g)
    np.save(os.path.join(acts, "part0.npy"), rows.numpy())
    seq = (torch.randn(30, 20, D_IN, generator=g)).to(torch.float16)
    safetensors_io.save({"acts": seq, "tokens": torch.zeros(30, 20, dtype=torch.int64)},
                        os.path.join(acts, "part1.safetensors"), {"source": "another tool"})
    golden["activations/part0.npy"] = rows
    golden["activations/part1.safetensors"] = seq.float().reshape(-1, D_IN)
    safetensors_io.save(golden, os.path.join(out, "golden.safetensors"), {"d_in": str(D_IN), "d_sae": str(D_SAE)})
    print(f"wrote {out}: {len(golden) - 1} golden tensors")


if __name__ == "__main__":
    main()
