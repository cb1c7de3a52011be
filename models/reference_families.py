"""Independent reference for the families in families.py: a plain functional forward from the weights.

It shares no code with the modules (those are what interp loads, as TorchScript) or with interp's C++.
Rotary embeddings are written as explicit rotations by position * base^(-2i/dim) of the pairs
(i, i + dim/2); grouped-query attention indexes key/value head h // group instead of repeating
tensors; NeoX's fused projection is sliced per head. Every TransformerLens point the family has is
computed in TransformerLens's layout and can be read or replaced through ``hooks`` ({name: fn}).
"""
import math

import torch
import torch.nn.functional as F

MASK_MIN = -3.4028234663852886e38


def _rms_scale(x, eps):
    return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # TransformerLens's hook_scale


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / (var + eps).sqrt() * w + b


def _rotate(x, rot_dim, base):
    """x: [b, p, h, e]; rotates the first rot_dim features of each head by position."""
    b, p, h, e = x.shape
    half = rot_dim // 2
    out = x.clone()
    for i in range(half):
        theta = base ** (-2.0 * i / rot_dim)
        ang = torch.arange(p, dtype=torch.float32) * theta  # [p]
        c, s = ang.cos().view(1, p, 1), ang.sin().view(1, p, 1)
        a, bb = x[..., i], x[..., i + half]
        out[..., i] = a * c - bb * s
        out[..., i + half] = bb * c + a * s
    return out


def forward(sd, cfg, tokens, hooks=None):
    """Returns (logits, acts). sd: the module's state_dict; cfg: a FamilyConfig."""
    hooks = hooks or {}
    acts = {}

    def hp(name, x):
        if name in hooks:
            x = hooks[name](x.clone())
        acts[name] = x.detach().clone()
        return x

    fam = cfg.family
    h, kvh, e, d = cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model
    group = h // kvh
    b, t = tokens.shape
    neox = fam == "neox"
    gemma = fam == "gemma"
    root = "gpt_neox." if neox else "model."
    layers = root + "layers."
    rot_dim = int(e * cfg.rotary_pct)
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))

    embed_w = sd[root + ("embed_in.weight" if neox else "embed_tokens.weight")]
    resid = hp("hook_embed", embed_w[tokens])
    if gemma:
        resid = resid * torch.tensor(math.sqrt(d))
    for L in range(cfg.n_layers):
        P, S = f"blocks.{L}.", f"{layers}{L}."
        resid = hp(P + "hook_resid_pre", resid)

        def norm(x, which, module):
            if neox:  # nn.LayerNorm: the scale is recorded, not fed back (the fused op keeps its own)
                hp(P + which + ".hook_scale", ((x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + cfg.eps).sqrt())
                return _layer_norm(x, sd[S + module + ".weight"], sd[S + module + ".bias"], cfg.eps)
            scale = hp(P + which + ".hook_scale", _rms_scale(x, cfg.eps))
            w = sd[S + module + ".weight"]
            return (x / scale) * ((1.0 + w) if gemma else w)

        x = hp(P + "ln1.hook_normalized", norm(resid, "ln1", "input_layernorm"))
        if neox:
            Wqkv = sd[S + "attention.query_key_value.weight"].view(h, 3, e, d)
            bqkv = sd[S + "attention.query_key_value.bias"].view(h, 3, e)
            proj = [torch.einsum("bpd,hed->bphe", x, Wqkv[:, i]) + bqkv[:, i] for i in range(3)]
        else:
            proj = [(x @ sd[S + f"self_attn.{n}_proj.weight"].t()).view(b, t, -1, e) for n in "qkv"]
        q = hp(P + "attn.hook_q", proj[0])
        k = hp(P + "attn.hook_k", proj[1])
        v = hp(P + "attn.hook_v", proj[2])
        q = hp(P + "attn.hook_rot_q", _rotate(q, rot_dim, cfg.rope_theta))
        k = hp(P + "attn.hook_rot_k", _rotate(k, rot_dim, cfg.rope_theta))
        kv_of = torch.arange(h) // group  # query head -> key/value head
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k[:, :, kv_of]) / math.sqrt(e)
        scores = hp(P + "attn.hook_attn_scores", torch.where(causal, scores, torch.tensor(MASK_MIN)))
        pattern = hp(P + "attn.hook_pattern", torch.softmax(scores, dim=-1))
        z = hp(P + "attn.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v[:, :, kv_of]))
        if neox:
            out_w, out_b = sd[S + "attention.dense.weight"], sd[S + "attention.dense.bias"]
        else:
            out_w, out_b = sd[S + "self_attn.o_proj.weight"], torch.zeros(d)
        attn_out = hp(P + "hook_attn_out", z.reshape(b, t, h * e) @ out_w.t() + out_b)
        if neox:  # parallel: the MLP reads the block input
            x = hp(P + "ln2.hook_normalized", norm(resid, "ln2", "post_attention_layernorm"))
            pre = hp(P + "mlp.hook_pre", x @ sd[S + "mlp.dense_h_to_4h.weight"].t() + sd[S + "mlp.dense_h_to_4h.bias"])
            post = hp(P + "mlp.hook_post", F.gelu(pre))
            mlp_out = hp(P + "hook_mlp_out", post @ sd[S + "mlp.dense_4h_to_h.weight"].t() + sd[S + "mlp.dense_4h_to_h.bias"])
            resid = hp(P + "hook_resid_post", resid + attn_out + mlp_out)
            continue
        resid_mid = hp(P + "hook_resid_mid", resid + attn_out)
        x = hp(P + "ln2.hook_normalized", norm(resid_mid, "ln2", "post_attention_layernorm"))
        pre = hp(P + "mlp.hook_pre", x @ sd[S + "mlp.gate_proj.weight"].t())
        lin = hp(P + "mlp.hook_pre_linear", x @ sd[S + "mlp.up_proj.weight"].t())
        act = F.gelu(pre, approximate="tanh") if gemma else pre * torch.sigmoid(pre)
        post = hp(P + "mlp.hook_post", act * lin)
        mlp_out = hp(P + "hook_mlp_out", post @ sd[S + "mlp.down_proj.weight"].t())
        resid = hp(P + "hook_resid_post", resid_mid + mlp_out)
    if neox:
        hp("ln_final.hook_scale", ((resid - resid.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + cfg.eps).sqrt())
        x = _layer_norm(resid, sd[root + "final_layer_norm.weight"], sd[root + "final_layer_norm.bias"], cfg.eps)
        x = hp("ln_final.hook_normalized", x)
        return x @ sd["embed_out.weight"].t(), acts
    scale = hp("ln_final.hook_scale", _rms_scale(resid, cfg.eps))
    w = sd[root + "norm.weight"]
    x = hp("ln_final.hook_normalized", (resid / scale) * ((1.0 + w) if gemma else w))
    return x @ sd["lm_head.weight"].t(), acts
