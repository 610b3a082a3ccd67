"""
README's "Precision" table: how much of a small update ΔW a bfloat16 forward keeps, in two forms.

Under `--precision bf16` (torch.autocast, float32 master weights) a layer computes
    old: one GEMM of bf16(W0 + ΔW)          y = bf16(x) bf16(W0 + ΔW)ᵀ + b
    now: base(x) + x ΔWᵀ (spectral_ft)       y = bf16(x) bf16(W0)ᵀ + b  +  bf16(x) bf16(ΔW)ᵀ,  ΔW made in float32
The "now" row runs spectral_ft.Adapter's own forward, which every method but LoRA and Spectral
Adapter A (they go through their factors) inherits. W0 is an nn.Linear(768, 768) as initialised,
x 4096 tokens of N(0, 1), ΔW N(0, 1) entries scaled to ‖ΔW‖ = 10⁻³ and 10⁻⁴ of ‖W0‖. Columns, each
relative to ‖x ΔWᵀ‖ (exact, float64):
    ‖y − y₆₄‖                        the output against float64 (the base's own rounding included)
    ‖(y − base_bf16(x)) − x ΔWᵀ‖      what the output adds to the bf16 base output, against the update
    ΔW the outputs carry, error      the least-squares ΔŴ with x ΔŴᵀ = y − base_bf16(x), ‖ΔŴ − ΔW‖ / ‖ΔW‖
CPU only (bfloat16 rounds the same on a GPU), torch only, about 15 s of CPU time:

    python scripts/precision_table.py
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import spectral_ft  # noqa: E402

F64 = torch.float64


class GivenDelta(spectral_ft.Adapter):
    """An adapter whose ΔW is a given (out, in) matrix; its forward is the one the methods inherit."""

    def __init__(self, base, delta):
        super().__init__(base)
        self.register_buffer("delta", delta)

    def delta_weight(self):
        return self.delta


def measure(size_ratio, tokens=4096, width=768, seed=0):
    """{form: (three errors)} for one ‖ΔW‖ / ‖W0‖."""
    torch.manual_seed(seed)
    base = nn.Linear(width, width)  # W0 (out, in), b: float32 master weights
    x = torch.randn(tokens, width)  # (tokens, in)
    delta = torch.randn(width, width)
    delta *= size_ratio * base.weight.norm() / delta.norm()  # (out, in)
    W0, b = base.weight.detach(), base.bias.detach()
    update = x.to(F64) @ delta.to(F64).T  # (tokens, out), exact
    exact = x.to(F64) @ (W0.to(F64) + delta.to(F64)).T + b.to(F64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        base_bf16 = base(x).to(F64)
        outputs = {"old: one GEMM of bf16(W0 + ΔW)": F.linear(x, W0 + delta, b),
                   "now: base(x) + x ΔWᵀ": GivenDelta(base, delta)(x)}
    errors = {}
    for form, y in outputs.items():
        y = y.to(F64)
        carried = torch.linalg.lstsq(x.to(F64), y - base_bf16).solution.T  # ΔŴ (out, in)
        errors[form] = ((y - exact).norm() / update.norm(), (y - base_bf16 - update).norm() / update.norm(),
                        (carried - delta.to(F64)).norm() / delta.to(F64).norm())
    return errors


def main():
    print("| ‖ΔW‖/‖W0‖ | form | ‖y − y₆₄‖ (base rounding included) | ‖(y − base_bf16(x)) − x ΔWᵀ‖ "
          "| ΔW the outputs carry (least squares), error |")
    print("|---|---|---|---|---|")
    for exponent in (3, 4):
        for form, errors in measure(10.0 ** -exponent).items():
            cells = " | ".join(f"{e.item():#.3g}" for e in errors)
            print(f"| 10⁻{'³⁴'[exponent - 3]} | {form} | {cells} |")


if __name__ == "__main__":
    main()
