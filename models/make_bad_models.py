#!/usr/bin/env python3
"""TorchScript modules that are not what interp expects, for the bad-input tests
(tests/apps/test_cli_inputs.cpp). Writes tests/fixtures/bad_models/:

  not_lm.pt         forward(x) = x * 2: a [batch, pos] float tensor, not logits
  float_input.pt    a Linear on its input: fails on integer token ids
  dict_no_logits.pt returns {"hidden": ...}: no logits key
  returns_str.pt    returns a string

  python3 models/make_bad_models.py
"""
import os

import torch


class NotLm(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


class FloatInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class DictNoLogits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)

    def forward(self, x: torch.Tensor):
        return {"hidden": self.emb(x)}


class ReturnsStr(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> str:
        return "hello"


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "bad_models")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, m in [("not_lm", NotLm()), ("float_input", FloatInput()), ("dict_no_logits", DictNoLogits()),
                    ("returns_str", ReturnsStr())]:
        torch.jit.script(m).save(os.path.join(out, name + ".pt"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
