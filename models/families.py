"""Model families as their public implementations write them, with their public module names.

interp has to hook these without help: the modules below follow Hugging Face's module trees and
arithmetic for each family (simplified to what a forward over token ids needs: no KV cache input,
no attention mask argument, no dropout), and nothing here knows about hooks or TransformerLens.

* ``llama``: Llama / Mistral / Qwen2. ``model.embed_tokens``, ``model.layers.{L}.input_layernorm``
  (RMSNorm), ``self_attn.{q,k,v,o}_proj`` without biases, rotary embeddings on q and k (rotate_half),
  grouped-query attention (``repeat_kv``), ``post_attention_layernorm``, ``mlp.{gate,up,down}_proj``
  with SiLU gating, ``model.norm``, ``lm_head``. Decoder layers return ``(hidden, (k, v))`` and the
  model returns ``(logits, past_key_values)``, as a traced Hugging Face model does.
* ``neox``: GPT-NeoX / Pythia. ``gpt_neox.embed_in``, a fused ``query_key_value`` in NeoX's per-head
  interleaved layout ([head, (q|k|v), d_head]), partial rotary (``rotary_pct``), parallel attention
  and MLP (``x + attn(ln1(x)) + mlp(ln2(x))``), ``nn.LayerNorm``, ``gpt_neox.final_layer_norm``,
  ``embed_out``. Returns a dict ``{"logits", "last_hidden_state"}``.
* ``gemma``: Gemma 1. Llama's names, with GeGLU (tanh GELU), RMSNorm scaled by ``(1 + w)``, the
  embedding multiplied by sqrt(d_model), multi-query attention, ``lm_head`` tied to the embedding.
  Returns the logits tensor.
* ``nanogpt``: Karpathy's nanoGPT: Hugging Face GPT-2's module names (``transformer.h.{L}.attn``), a
  square causal mask sliced ``[:T, :T]``, ``forward(idx, targets=None) -> (logits, loss)`` which
  without targets returns the logits of the last position only.
"""
import json
import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class FamilyConfig:
    family: str = "llama"
    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 4
    n_kv_heads: int = 2
    d_head: int = 8
    d_mlp: int = 48
    d_vocab: int = 50
    n_ctx: int = 16
    rope_theta: float = 10000.0
    rotary_pct: float = 1.0
    eps: float = 1e-6
    seed: int = 0
    init_std: float = 0.2

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


FAMILY_CONFIGS = {
    "tiny_llama": FamilyConfig(family="llama"),
    "tiny_neox": FamilyConfig(family="neox", n_kv_heads=4, rotary_pct=0.5, eps=1e-5, d_mlp=64),
    "tiny_gemma": FamilyConfig(family="gemma", n_kv_heads=1, d_mlp=48),
    "tiny_nanogpt": FamilyConfig(family="nanogpt", n_kv_heads=4, d_mlp=128, eps=1e-5, init_std=0.1),
    # hook overhead benchmark: 6 layers, d_model 256, as bench/bench_hooks uses for GPT-2
    "bench_llama": FamilyConfig(family="llama", n_layers=6, d_model=256, n_heads=8, n_kv_heads=2, d_head=32,
                                d_mlp=688, d_vocab=1024, n_ctx=128, init_std=0.05),
}


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos = cos.unsqueeze(1)  # [batch, 1, pos, dim]
    sin = sin.unsqueeze(1)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states, n_rep: int):
    """[batch, n_kv_heads, pos, d_head] -> [batch, n_kv_heads * n_rep, pos, d_head]"""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x, position_ids) -> Tuple[torch.Tensor, torch.Tensor]:
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded @ position_ids_expanded).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


MASK_MIN = -3.4028234663852886e38  # torch.finfo(torch.float32).min (not scriptable)


def causal_buffer(n_ctx: int):
    return torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)).view(1, 1, n_ctx, n_ctx)


# ---------------------------------------------------------------------------------------------
# Llama / Mistral / Qwen2, and Gemma


class LlamaRMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states


class GemmaRMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(d))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float())
        output = output * (1.0 + self.weight.float())
        return output.type_as(x)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.num_heads, self.num_key_value_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        self.num_key_value_groups = cfg.n_heads // cfg.n_kv_heads
        self.scaling = cfg.d_head ** -0.5
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=False)
        self.register_buffer("causal", causal_buffer(cfg.n_ctx), persistent=False)
        self.mask_min = MASK_MIN

    def forward(self, hidden_states, cos, sin) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        bsz, q_len = hidden_states.shape[0], hidden_states.shape[1]
        query_states = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        present = (key_states, value_states)
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        k_len = key_states.shape[2]
        mask = self.causal[:, :, k_len - q_len:k_len, :k_len]
        attn_weights = attn_weights.masked_fill(~mask, self.mask_min)
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, self.num_heads * self.head_dim)
        return self.o_proj(attn_output), present


class LlamaMLP(nn.Module):
    def __init__(self, cfg: FamilyConfig, act: nn.Module):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.down_proj = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)
        self.act_fn = act

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        gemma = cfg.family == "gemma"
        norm = GemmaRMSNorm if gemma else LlamaRMSNorm
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg, nn.GELU(approximate="tanh") if gemma else nn.SiLU())
        self.input_layernorm = norm(cfg.d_model, cfg.eps)
        self.post_attention_layernorm = norm(cfg.d_model, cfg.eps)

    def forward(self, hidden_states, cos, sin) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, present = self.self_attn(hidden_states, cos, sin)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states, present


class LlamaModel(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        norm = GemmaRMSNorm if cfg.family == "gemma" else LlamaRMSNorm
        self.embed_tokens = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg) for _ in range(cfg.n_layers)])
        self.norm = norm(cfg.d_model, cfg.eps)
        self.rotary_emb = RotaryEmbedding(cfg.d_head, cfg.rope_theta)


class LlamaForCausalLM(nn.Module):
    """Returns (logits, past_key_values): past_key_values[L] = stack(keys, values) after rotary,
    [2, batch, n_kv_heads, pos, d_head] (a list of tensors: what both script and trace can return)."""

    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        _init(self, cfg)

    def forward(self, input_ids) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        hidden_states = self.model.embed_tokens(input_ids)
        position_ids = torch.arange(0, input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        cos, sin = self.model.rotary_emb(hidden_states, position_ids)
        presents: List[torch.Tensor] = []
        for layer in self.model.layers:
            hidden_states, present = layer(hidden_states, cos, sin)
            presents.append(torch.stack(present))
        hidden_states = self.model.norm(hidden_states)
        return self.lm_head(hidden_states), presents


class GemmaForCausalLM(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        _init(self, cfg)
        self.lm_head.weight = self.model.embed_tokens.weight  # tied
        self.d_model = cfg.d_model

    def forward(self, input_ids):
        hidden_states = self.model.embed_tokens(input_ids)
        normalizer = torch.tensor(self.d_model ** 0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer
        position_ids = torch.arange(0, input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        cos, sin = self.model.rotary_emb(hidden_states, position_ids)
        for layer in self.model.layers:
            hidden_states, _ = layer(hidden_states, cos, sin)
        hidden_states = self.model.norm(hidden_states)
        return self.lm_head(hidden_states)


# ---------------------------------------------------------------------------------------------
# GPT-NeoX / Pythia


class GPTNeoXAttention(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.num_attention_heads, self.head_size = cfg.n_heads, cfg.d_head
        self.rotary_ndims = int(cfg.d_head * cfg.rotary_pct)
        self.norm_factor = math.sqrt(cfg.d_head)
        self.query_key_value = nn.Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_head)
        self.dense = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model)
        self.register_buffer("bias", causal_buffer(cfg.n_ctx), persistent=False)
        self.mask_min = MASK_MIN

    def forward(self, hidden_states, cos, sin):
        qkv = self.query_key_value(hidden_states)
        new_qkv_shape = qkv.size()[:-1] + (self.num_attention_heads, 3 * self.head_size)
        qkv = qkv.view(new_qkv_shape)
        query = qkv[..., : self.head_size].permute(0, 2, 1, 3)
        key = qkv[..., self.head_size: 2 * self.head_size].permute(0, 2, 1, 3)
        value = qkv[..., 2 * self.head_size:].permute(0, 2, 1, 3)
        query_rot = query[..., : self.rotary_ndims]
        query_pass = query[..., self.rotary_ndims:]
        key_rot = key[..., : self.rotary_ndims]
        key_pass = key[..., self.rotary_ndims:]
        query, key = apply_rotary_pos_emb(query_rot, key_rot, cos, sin)
        query = torch.cat((query, query_pass), dim=-1)
        key = torch.cat((key, key_pass), dim=-1)
        q_len, k_len = query.shape[2], key.shape[2]
        attn_scores = torch.matmul(query, key.transpose(-1, -2)) / self.norm_factor
        causal_mask = self.bias[:, :, k_len - q_len:k_len, :k_len]
        mask_value = torch.tensor(self.mask_min, dtype=attn_scores.dtype)
        attn_scores = torch.where(causal_mask, attn_scores, mask_value)
        attn_weights = F.softmax(attn_scores, dim=-1)
        attn_output = torch.matmul(attn_weights, value)
        attn_output = attn_output.permute(0, 2, 1, 3).contiguous()
        attn_output = attn_output.view(attn_output.size(0), attn_output.size(1),
                                       self.num_attention_heads * self.head_size)
        return self.dense(attn_output)


class GPTNeoXMLP(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.dense_4h_to_h = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.act = nn.GELU()

    def forward(self, hidden_states):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(hidden_states)))


class GPTNeoXLayer(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.attention = GPTNeoXAttention(cfg)
        self.mlp = GPTNeoXMLP(cfg)

    def forward(self, hidden_states, cos, sin):
        attn_output = self.attention(self.input_layernorm(hidden_states), cos, sin)
        mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
        return mlp_output + attn_output + hidden_states


class GPTNeoXModel(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.embed_in = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.layers = nn.ModuleList([GPTNeoXLayer(cfg) for _ in range(cfg.n_layers)])
        self.final_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.rotary_emb = RotaryEmbedding(int(cfg.d_head * cfg.rotary_pct), cfg.rope_theta)


class GPTNeoXForCausalLM(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.gpt_neox = GPTNeoXModel(cfg)
        self.embed_out = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        _init(self, cfg)

    def forward(self, input_ids) -> Dict[str, torch.Tensor]:
        hidden_states = self.gpt_neox.embed_in(input_ids)
        position_ids = torch.arange(0, input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        cos, sin = self.gpt_neox.rotary_emb(hidden_states, position_ids)
        for layer in self.gpt_neox.layers:
            hidden_states = layer(hidden_states, cos, sin)
        hidden_states = self.gpt_neox.final_layer_norm(hidden_states)
        return {"logits": self.embed_out(hidden_states), "last_hidden_state": hidden_states}


# ---------------------------------------------------------------------------------------------
# nanoGPT (Karpathy's model.py, without flash attention: LibTorch 1.13 has no
# scaled_dot_product_attention): Hugging Face GPT-2's module names, a square causal mask sliced
# [:T, :T], and forward(idx, targets=None) -> (logits, loss) that, without targets, returns the
# logits of the last position only.


class NanoLayerNorm(nn.Module):
    def __init__(self, ndim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim))

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoCausalSelfAttention(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_dropout = nn.Dropout(0.0)
        self.resid_dropout = nn.Dropout(0.0)
        self.n_head, self.n_embd = cfg.n_heads, cfg.d_model
        self.register_buffer("bias", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx)).view(1, 1, cfg.n_ctx, cfg.n_ctx))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class NanoMLP(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class NanoBlock(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.ln_1 = NanoLayerNorm(cfg.d_model)
        self.attn = NanoCausalSelfAttention(cfg)
        self.ln_2 = NanoLayerNorm(cfg.d_model)
        self.mlp = NanoMLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class NanoTransformer(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.drop = nn.Dropout(0.0)
        self.h = nn.ModuleList([NanoBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = NanoLayerNorm(cfg.d_model)


class NanoGPT(nn.Module):
    def __init__(self, cfg: FamilyConfig):
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.transformer = NanoTransformer(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        _init(self, cfg)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

    def forward(self, idx, targets: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        device = idx.device
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=device)
        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        loss: Optional[torch.Tensor] = None
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])  # inference-time optimization: only the last position
        return logits, loss


def _init(model: nn.Module, cfg: FamilyConfig):
    """Random weights at a scale where every point matters; norm weights away from their identity."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                base = 0.0 if cfg.family == "gemma" else 1.0
                p.copy_(base + torch.randn_like(p) * cfg.init_std)
            else:
                p.copy_(torch.randn_like(p) * cfg.init_std)


def build_family(cfg: FamilyConfig) -> nn.Module:
    cls = {"llama": LlamaForCausalLM, "gemma": GemmaForCausalLM, "neox": GPTNeoXForCausalLM,
           "nanogpt": NanoGPT}[cfg.family]
    return cls(cfg).eval()


def logits_of(out):
    """The logits of any family's forward output."""
    if isinstance(out, dict):
        return out["logits"]
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def export_family(model: nn.Module, cfg: FamilyConfig, mode: str, out: str):
    import os
    if mode == "script":
        ts = torch.jit.script(model)
    else:
        example = torch.randint(0, cfg.d_vocab, (2, min(5, cfg.n_ctx)), generator=torch.Generator().manual_seed(1))
        if cfg.family == "nanogpt":
            example = (example, example)  # traced with targets: every position's logits, and the loss
        with torch.no_grad():
            ts = torch.jit.trace(model, example, check_trace=False, strict=False)
    tmp = out + ".tmp"
    ts.save(tmp)
    os.replace(tmp, out)
    with open(out + ".json.tmp", "w") as f:
        f.write(cfg.to_json())
    os.replace(out + ".json.tmp", out + ".json")
    return ts


def main():
    import argparse
    import os
    ap = argparse.ArgumentParser(description="Export a family model (random weights) to TorchScript.")
    ap.add_argument("--config", default="tiny_llama", choices=sorted(FAMILY_CONFIGS), help="default: tiny_llama")
    ap.add_argument("--mode", default="script", choices=["script", "trace"], help="default: script")
    ap.add_argument("--out", required=True, help="output .pt file (OUT.json gets the config)")
    args = ap.parse_args()
    cfg = FAMILY_CONFIGS[args.config]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model = build_family(cfg)
    export_family(model, cfg, args.mode, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"exported {args.config} ({cfg.family}, {cfg.n_layers} layers, d_model {cfg.d_model}, {n} parameters) "
          f"with torch.jit.{args.mode} to {args.out}")


if __name__ == "__main__":
    main()
