"""GPT-2-style transformer definitions for interp.

Two module layouts with the same arithmetic:

* ``GPT``: TransformerLens module names (``embed``, ``pos_embed``, ``blocks.{L}.ln1/attn/ln2/mlp``,
  ``ln_final``, ``unembed``) and TransformerLens parameter layout (``W_Q`` is [n_heads, d_model,
  d_head], attention written with einsum).
* ``HFStyleGPT``: Hugging Face GPT-2 module names (``transformer.wte``, ``transformer.h.{L}.attn``,
  ``lm_head``, ...), a fused ``c_attn`` projection split into q/k/v and view/transpose attention, as
  exported models in the wild look. interp maps its names with a JSON name map.

Both use explicit softmax attention (LibTorch 1.13 has no scaled_dot_product_attention), so the
attention pattern is a visible node in the TorchScript graph. Nothing here knows about hooks.
"""
import json
import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 4
    d_head: int = 8
    d_mlp: int = 64
    d_vocab: int = 50
    n_ctx: int = 16
    attn_only: bool = False
    tied: bool = False          # unembedding uses embed.W_E^T
    act: str = "gelu"           # "gelu" (erf) or "gelu_tanh"
    ln_eps: float = 1e-5
    mask_value: float = -1e5    # value written into masked attention scores (TransformerLens's IGNORE)
    layout: str = "tl"          # "tl" -> GPT, "hf" -> HFStyleGPT
    seed: int = 0
    init_std: float = 0.1
    normalization: str = "ln"   # "ln" (LayerNorm) or "none" (TransformerLens's normalization_type=None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d) -> "Config":
        return Config(**d)


CONFIGS = {
    # test fixtures: a few hundred KB each
    "tiny": Config(),
    "tiny_attn_only": Config(attn_only=True, tied=True),
    "tiny_hf": Config(layout="hf", act="gelu_tanh"),
    # fixture for the data pipeline: the vocabulary of the 1024-piece Brown tokenizer
    "tiny_lm": Config(d_vocab=1024, n_ctx=64, tied=True),
    # the shipped demo model of the main job
    "small": Config(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=1024, n_ctx=128,
                    init_std=0.05),
    # the benchmark model named in the issues: 6 layers, d_model 256
    "bench": Config(n_layers=6, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=1024, n_ctx=128,
                    init_std=0.05),
}


def _activation(act: str):
    if act == "gelu":
        return nn.GELU()
    if act == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"unknown act {act!r}")


# ----------------------------------------------------------------------------------------------
# TransformerLens layout


class Embed(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * cfg.init_std)  # [d_vocab, d_model]

    def forward(self, tokens):  # [batch, pos] -> [batch, pos, d_model]
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * cfg.init_std)  # [n_ctx, d_model]

    def forward(self, tokens):  # [batch, pos] -> [batch, pos, d_model]
        b, p = tokens.shape[0], tokens.shape[1]
        return self.W_pos[:p].unsqueeze(0).expand(b, p, self.W_pos.shape[1])


class LayerNorm(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(1.0 + torch.randn(cfg.d_model) * cfg.init_std)
        self.b = nn.Parameter(torch.randn(cfg.d_model) * cfg.init_std)

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        scale = (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        return x / scale * self.w + self.b


class NoNorm(nn.Module):
    """normalization="none": the identity (TransformerLens's normalization_type=None)."""

    def forward(self, x):
        return x


def _norm(cfg: Config) -> nn.Module:
    if cfg.normalization == "ln":
        return LayerNorm(cfg)
    if cfg.normalization == "none":
        return NoNorm()
    raise ValueError(f"unknown normalization {cfg.normalization!r}")


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        s = cfg.init_std
        self.W_Q = nn.Parameter(torch.randn(h, d, e) * s)
        self.W_K = nn.Parameter(torch.randn(h, d, e) * s)
        self.W_V = nn.Parameter(torch.randn(h, d, e) * s)
        self.W_O = nn.Parameter(torch.randn(h, e, d) * s)
        self.b_Q = nn.Parameter(torch.randn(h, e) * s)
        self.b_K = nn.Parameter(torch.randn(h, e) * s)
        self.b_V = nn.Parameter(torch.randn(h, e) * s)
        self.b_O = nn.Parameter(torch.randn(d) * s)
        self.register_buffer("mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)))
        self.register_buffer("IGNORE", torch.tensor(cfg.mask_value))
        self.scale = 1.0 / math.sqrt(e)

    def forward(self, x):  # [batch, pos, d_model]
        q = torch.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q  # [batch, pos, head, d_head]
        k = torch.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K
        v = torch.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.scale  # [batch, head, q, k]
        # Slice the causal mask by query and key length (as Hugging Face GPT-2 and TransformerLens do),
        # so that queries for the last positions against a longer key sequence stay correct.
        q_len, k_len = q.shape[1], k.shape[1]
        scores = torch.where(self.mask[k_len - q_len:k_len, :k_len], scores, self.IGNORE)
        pattern = torch.softmax(scores, dim=-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)  # [batch, pos, head, d_head]
        return torch.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        s = cfg.init_std
        self.W_in = nn.Parameter(torch.randn(cfg.d_model, cfg.d_mlp) * s)
        self.b_in = nn.Parameter(torch.randn(cfg.d_mlp) * s)
        self.W_out = nn.Parameter(torch.randn(cfg.d_mlp, cfg.d_model) * s)
        self.b_out = nn.Parameter(torch.randn(cfg.d_model) * s)
        self.approximate = "tanh" if cfg.act == "gelu_tanh" else "none"

    def forward(self, x):
        pre = x @ self.W_in + self.b_in
        post = F.gelu(pre, approximate=self.approximate)
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.ln1 = _norm(cfg)
        self.attn = Attention(cfg)
        self.ln2 = _norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, resid_pre):
        resid_mid = resid_pre + self.attn(self.ln1(resid_pre))
        return resid_mid + self.mlp(self.ln2(resid_mid))


class AttnOnlyBlock(nn.Module):
    """TorchScript cannot compile attribute access to a module that does not exist, so attention-only
    blocks are their own class."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.ln1 = _norm(cfg)
        self.attn = Attention(cfg)

    def forward(self, resid_pre):
        return resid_pre + self.attn(self.ln1(resid_pre))


class Unembed(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(cfg.d_model, cfg.d_vocab) * cfg.init_std)
        self.b_U = nn.Parameter(torch.randn(cfg.d_vocab) * cfg.init_std)

    def forward(self, x):
        return x @ self.W_U + self.b_U


class TiedUnembed(nn.Module):
    def __init__(self, embed: Embed):
        super().__init__()
        self.W_E = embed.W_E  # the same Parameter as embed.W_E

    def forward(self, x):
        return x @ self.W_E.t()


class GPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList([AttnOnlyBlock(cfg) if cfg.attn_only else Block(cfg)
                                     for _ in range(cfg.n_layers)])
        self.ln_final = _norm(cfg)
        self.unembed = TiedUnembed(self.embed) if cfg.tied else Unembed(cfg)

    def forward(self, tokens):  # [batch, pos] int64 -> logits [batch, pos, d_vocab]
        resid = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))


# ----------------------------------------------------------------------------------------------
# Hugging Face GPT-2 layout (module names are not TransformerLens's)


class HFAttention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.n_head, self.d_head, self.d_model = cfg.n_heads, cfg.d_head, cfg.d_model
        inner = cfg.n_heads * cfg.d_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * inner)
        self.c_proj = nn.Linear(inner, cfg.d_model)
        self.register_buffer("bias", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx)).view(1, 1, cfg.n_ctx, cfg.n_ctx))
        self.mask_value = cfg.mask_value

    def forward(self, x):
        b, t = x.shape[0], x.shape[1]
        inner = self.n_head * self.d_head
        q, k, v = self.c_attn(x).split(inner, dim=2)
        q = q.view(b, t, self.n_head, self.d_head).transpose(1, 2)  # [b, h, t, e]
        k = k.view(b, t, self.n_head, self.d_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, self.d_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))
        q_len, k_len = q.shape[2], k.shape[2]
        att = att.masked_fill(self.bias[:, :, k_len - q_len:k_len, :k_len] == 0, self.mask_value)
        att = F.softmax(att, dim=-1)
        y = att @ v  # [b, h, t, e]
        y = y.transpose(1, 2).contiguous().view(b, t, inner)
        return self.c_proj(y)


class HFMLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.act = _activation(cfg.act)
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class HFBlock(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.attn = HFAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.mlp = HFMLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class HFTransformer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.wte = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.h = nn.ModuleList([HFBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)


class HFStyleGPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        assert not cfg.attn_only, "the HF layout has no attention-only variant"
        torch.manual_seed(cfg.seed)
        self.transformer = HFTransformer(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        with torch.no_grad():  # same scale as the TL layout, and non-trivial LayerNorm weights
            for name, p in self.named_parameters():
                if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                    p.copy_(1.0 + torch.randn_like(p) * cfg.init_std)
                else:
                    p.copy_(torch.randn_like(p) * cfg.init_std)

    def forward(self, input_ids):
        t = input_ids.shape[1]
        position_ids = torch.arange(0, t, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(position_ids)  # wpe: [1, t, d]
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def build(cfg: Config) -> nn.Module:
    model = GPT(cfg) if cfg.layout == "tl" else HFStyleGPT(cfg)
    return model.eval()


# The JSON name map interp needs for HFStyleGPT: module path patterns -> TransformerLens module names.
HF_NAME_MAP = {
    "transformer.wte": "embed",
    "transformer.wpe": "pos_embed",
    "transformer.h.{L}": "blocks.{L}",
    "transformer.h.{L}.ln_1": "blocks.{L}.ln1",
    "transformer.h.{L}.attn": "blocks.{L}.attn",
    "transformer.h.{L}.ln_2": "blocks.{L}.ln2",
    "transformer.h.{L}.mlp": "blocks.{L}.mlp",
    "transformer.ln_f": "ln_final",
    "lm_head": "unembed",
}
