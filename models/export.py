#!/usr/bin/env python3
"""Export a model from model.py to TorchScript, with torch.jit.script or torch.jit.trace.

  python3 models/export.py --config small --mode script --out build/small.pt

Writes OUT (the TorchScript file) and OUT.json (the config). For the HF layout it also writes
OUT.names.json, the name map interp needs (module path patterns -> TransformerLens module names).
Files are written to a temporary name and renamed, so a crash leaves nothing half-written.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import CONFIGS, HF_NAME_MAP, Config, build  # noqa: E402


def export(model, cfg: Config, mode: str, out: str):
    model = model.eval()
    if mode == "script":
        ts = torch.jit.script(model)
    elif mode == "trace":
        example = torch.randint(0, cfg.d_vocab, (2, min(5, cfg.n_ctx)), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ts = torch.jit.trace(model, example, check_trace=False)
    else:
        raise SystemExit(f"error: --mode must be script or trace, got {mode!r}")
    tmp = out + ".tmp"
    ts.save(tmp)
    os.replace(tmp, out)
    with open(out + ".json.tmp", "w") as f:
        f.write(cfg.to_json())
    os.replace(out + ".json.tmp", out + ".json")
    if cfg.layout == "hf":
        with open(out + ".names.json.tmp", "w") as f:
            json.dump(HF_NAME_MAP, f, indent=2)
        os.replace(out + ".names.json.tmp", out + ".names.json")
    return ts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS), help="named config (default: small)")
    ap.add_argument("--mode", default="script", choices=["script", "trace"], help="default: script")
    ap.add_argument("--seed", type=int, default=None, help="init seed (default: the config's)")
    ap.add_argument("--out", required=True, help="output .pt file")
    args = ap.parse_args()
    cfg = Config.from_dict(dict(CONFIGS[args.config].__dict__))
    if args.seed is not None:
        cfg.seed = args.seed
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    export(build(cfg), cfg, args.mode, args.out)
    n = sum(p.numel() for p in build(cfg).parameters())
    print(f"exported {args.config} ({cfg.layout} layout, {cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"{n} parameters) with torch.jit.{args.mode} to {args.out}")


if __name__ == "__main__":
    main()
