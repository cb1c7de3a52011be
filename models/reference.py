"""Independent reference: a plain functional forward pass, written from the weights alone.

It shares no code with the modules in model.py (those are what interp loads, as TorchScript) and no
code with interp's C++ graph rewriting. Every TransformerLens hook point is computed explicitly and
can be read or replaced through ``hooks`` ({name: fn(tensor) -> tensor}), which is how the golden
files for patching tests are made.
"""
import math

import torch
import torch.nn.functional as F

from model import Config


def standard_weights(model, cfg: Config):
    """Weights of either layout in TransformerLens's layout: W_Q [h, d, e], W_O [h, e, d], ..."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
    W = {}
    if cfg.layout == "tl":
        W["W_E"], W["W_pos"] = sd["embed.W_E"], sd["pos_embed.W_pos"]
        for L in range(cfg.n_layers):
            p = f"blocks.{L}."
            for n in ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"]:
                W[f"{L}.{n}"] = sd[p + "attn." + n]
            W[f"{L}.ln1_w"], W[f"{L}.ln1_b"] = sd.get(p + "ln1.w"), sd.get(p + "ln1.b")
            if not cfg.attn_only:
                W[f"{L}.ln2_w"], W[f"{L}.ln2_b"] = sd.get(p + "ln2.w"), sd.get(p + "ln2.b")
                for n in ["W_in", "b_in", "W_out", "b_out"]:
                    W[f"{L}.{n}"] = sd[p + "mlp." + n]
        W["lnf_w"], W["lnf_b"] = sd.get("ln_final.w"), sd.get("ln_final.b")
        if cfg.tied:
            W["W_U"], W["b_U"] = sd["embed.W_E"].t(), torch.zeros(cfg.d_vocab)
        else:
            W["W_U"], W["b_U"] = sd["unembed.W_U"], sd["unembed.b_U"]
        return W
    # Hugging Face layout: nn.Linear computes x @ weight.T + bias
    W["W_E"], W["W_pos"] = sd["transformer.wte.weight"], sd["transformer.wpe.weight"]
    inner = h * e
    for L in range(cfg.n_layers):
        p = f"transformer.h.{L}."
        Wqkv, bqkv = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]  # [3*inner, d], [3*inner]
        for i, n in enumerate("QKV"):
            W[f"{L}.W_{n}"] = Wqkv[i * inner:(i + 1) * inner].t().reshape(d, h, e).permute(1, 0, 2)
            W[f"{L}.b_{n}"] = bqkv[i * inner:(i + 1) * inner].reshape(h, e)
        W[f"{L}.W_O"] = sd[p + "attn.c_proj.weight"].t().reshape(h, e, d)
        W[f"{L}.b_O"] = sd[p + "attn.c_proj.bias"]
        W[f"{L}.ln1_w"], W[f"{L}.ln1_b"] = sd[p + "ln_1.weight"], sd[p + "ln_1.bias"]
        W[f"{L}.ln2_w"], W[f"{L}.ln2_b"] = sd[p + "ln_2.weight"], sd[p + "ln_2.bias"]
        W[f"{L}.W_in"], W[f"{L}.b_in"] = sd[p + "mlp.c_fc.weight"].t(), sd[p + "mlp.c_fc.bias"]
        W[f"{L}.W_out"], W[f"{L}.b_out"] = sd[p + "mlp.c_proj.weight"].t(), sd[p + "mlp.c_proj.bias"]
    W["lnf_w"], W["lnf_b"] = sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]
    W["W_U"], W["b_U"] = sd["lm_head.weight"].t(), torch.zeros(cfg.d_vocab)
    return W


def _layer_norm(x, w, b, eps):
    if w is None:  # normalization="none"
        return x
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b


def _ln_scale(x, eps):
    """TransformerLens's hook_scale of a LayerNorm: sqrt(var(x) + eps), [batch, pos, 1]."""
    return ((x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + eps).sqrt()


def forward(W, cfg: Config, tokens, hooks=None):
    """Returns (logits, acts) with acts[name] for every TransformerLens hook point, in TL shapes."""
    hooks = hooks or {}
    acts = {}

    def hp(name, x):
        if name in hooks:
            x = hooks[name](x.clone())
        acts[name] = x.detach().clone()
        return x

    b, t = tokens.shape
    embed = hp("hook_embed", W["W_E"][tokens])
    pos = hp("hook_pos_embed", W["W_pos"][:t].unsqueeze(0).expand(b, t, cfg.d_model))
    resid = embed + pos
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for L in range(cfg.n_layers):
        P = f"blocks.{L}."
        resid = hp(P + "hook_resid_pre", resid)
        if W[f"{L}.ln1_w"] is not None:
            hp(P + "ln1.hook_scale", _ln_scale(resid, cfg.ln_eps))  # recorded (read, not fed back)
        x = hp(P + "ln1.hook_normalized", _layer_norm(resid, W[f"{L}.ln1_w"], W[f"{L}.ln1_b"], cfg.ln_eps))
        q = hp(P + "attn.hook_q", torch.einsum("bpd,hde->bphe", x, W[f"{L}.W_Q"]) + W[f"{L}.b_Q"])
        k = hp(P + "attn.hook_k", torch.einsum("bpd,hde->bphe", x, W[f"{L}.W_K"]) + W[f"{L}.b_K"])
        v = hp(P + "attn.hook_v", torch.einsum("bpd,hde->bphe", x, W[f"{L}.W_V"]) + W[f"{L}.b_V"])
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)
        scores = hp(P + "attn.hook_attn_scores",
                    torch.where(causal, scores, torch.tensor(cfg.mask_value, dtype=scores.dtype)))
        pattern = hp(P + "attn.hook_pattern", torch.softmax(scores, dim=-1))
        z = hp(P + "attn.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        attn_out = hp(P + "hook_attn_out", torch.einsum("bqhe,hed->bqd", z, W[f"{L}.W_O"]) + W[f"{L}.b_O"])
        if cfg.attn_only:
            resid = hp(P + "hook_resid_post", resid + attn_out)
            continue
        resid_mid = hp(P + "hook_resid_mid", resid + attn_out)
        if W[f"{L}.ln2_w"] is not None:
            hp(P + "ln2.hook_scale", _ln_scale(resid_mid, cfg.ln_eps))
        x = hp(P + "ln2.hook_normalized", _layer_norm(resid_mid, W[f"{L}.ln2_w"], W[f"{L}.ln2_b"], cfg.ln_eps))
        pre = hp(P + "mlp.hook_pre", x @ W[f"{L}.W_in"] + W[f"{L}.b_in"])
        post = hp(P + "mlp.hook_post", F.gelu(pre, approximate="tanh" if cfg.act == "gelu_tanh" else "none"))
        mlp_out = hp(P + "hook_mlp_out", post @ W[f"{L}.W_out"] + W[f"{L}.b_out"])
        resid = hp(P + "hook_resid_post", resid_mid + mlp_out)
    if W["lnf_w"] is not None:
        hp("ln_final.hook_scale", _ln_scale(resid, cfg.ln_eps))
    x = hp("ln_final.hook_normalized", _layer_norm(resid, W["lnf_w"], W["lnf_b"], cfg.ln_eps))
    return x @ W["W_U"] + W["b_U"], acts


# ---------------------------------------------------------------------------------------------
# The circuit graph: every receiver's input is the sum of the outputs of the senders before it.
#   senders:   "embed" (token + position), "a{L}.h{H}" (one head's output, z_h @ W_O[h]), "m{L}"
#   receivers: "a{L}.h{H}<q>", "<k>", "<v>" (one head's query / key / value input), "m{L}", "logits"
# An MLP's output includes its bias b_out (TransformerLens's hook_mlp_out); a head's excludes b_O
# (hook_result): b_O belongs to no node, and every later receiver gets it.


def senders(cfg):
    out = ["embed"]
    for L in range(cfg.n_layers):
        out += [f"a{L}.h{h}" for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            out.append(f"m{L}")
    return out


def receivers(cfg):
    out = []
    for L in range(cfg.n_layers):
        out += [f"a{L}.h{h}<{x}>" for h in range(cfg.n_heads) for x in "qkv"]
        if not cfg.attn_only:
            out.append(f"m{L}")
    return out + ["logits"]


def _layer_of(node):
    return -1 if node == "embed" else int(node[1:].split(".")[0].split("<")[0])


def edges(cfg):
    """(sender, receiver) pairs in forward order: a sender feeds every receiver after it."""
    out = []
    for r in receivers(cfg):
        for s in senders(cfg):
            if r == "logits":
                out.append((s, r))
            elif r.startswith("a"):
                if _layer_of(s) < _layer_of(r):
                    out.append((s, r))
            elif _layer_of(s) < _layer_of(r) or (s.startswith("a") and _layer_of(s) == _layer_of(r)):
                out.append((s, r))
    return out


def edge_forward(W, cfg, tokens, replace=None):
    """Forward pass in which each receiver's input is summed from its senders' outputs.

    replace: {(sender, receiver): tensor [b, p, d_model]} gives that sender's output as seen by that
    receiver only (edge patching). Returns (logits, outputs, inputs): outputs[sender] and
    inputs[receiver] are [b, p, d_model], computed in this run."""
    replace = replace or {}
    outs, ins = {}, {}
    b, t = tokens.shape
    outs["embed"] = W["W_E"][tokens] + W["W_pos"][:t].unsqueeze(0)
    bias = torch.zeros(cfg.d_model)
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))

    def gather(recv):
        x = bias.clone()
        for s, r in edges(cfg):
            if r == recv:
                x = x + replace.get((s, r), outs[s])
        ins[recv] = x
        return x

    for L in range(cfg.n_layers):
        zs = []
        for h in range(cfg.n_heads):
            qkv = {}
            for x in "qkv":
                inp = _layer_norm(gather(f"a{L}.h{h}<{x}>"), W[f"{L}.ln1_w"], W[f"{L}.ln1_b"], cfg.ln_eps)
                Wx, bx = W[f"{L}.W_{x.upper()}"][h], W[f"{L}.b_{x.upper()}"][h]
                qkv[x] = inp @ Wx + bx  # [b, p, e]
            scores = torch.einsum("bqe,bke->bqk", qkv["q"], qkv["k"]) / math.sqrt(cfg.d_head)
            scores = torch.where(causal, scores, torch.tensor(cfg.mask_value, dtype=scores.dtype))
            z = torch.einsum("bqk,bke->bqe", torch.softmax(scores, dim=-1), qkv["v"])
            outs[f"a{L}.h{h}"] = z @ W[f"{L}.W_O"][h]
        bias = bias + W[f"{L}.b_O"]
        if not cfg.attn_only:
            x = _layer_norm(gather(f"m{L}"), W[f"{L}.ln2_w"], W[f"{L}.ln2_b"], cfg.ln_eps)
            pre = x @ W[f"{L}.W_in"] + W[f"{L}.b_in"]
            post = F.gelu(pre, approximate="tanh" if cfg.act == "gelu_tanh" else "none")
            outs[f"m{L}"] = post @ W[f"{L}.W_out"] + W[f"{L}.b_out"]  # hook_mlp_out, bias included
    x = _layer_norm(gather("logits"), W["lnf_w"], W["lnf_b"], cfg.ln_eps)
    return x @ W["W_U"] + W["b_U"], outs, ins
