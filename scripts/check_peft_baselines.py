"""DoRA and OFT against PEFT: the same tiny layer in float64, our adapter and PEFT's with the same tensors, compared
on the forward, the gradients of every trainable tensor and the merged weight. Prints the largest differences.

    python scripts/check_peft_baselines.py        (needs peft and transformers: an optional extra, not a test dependency)

tests/test_baselines.py calls `compare_dora` and `compare_oft` (skipped where peft is not importable).
"""
import copy
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import spectral_ft  # noqa: E402

F64 = torch.float64


class Tiny(nn.Module):
    """One linear layer named `lin`, the module PEFT adapts."""

    def __init__(self, i, o, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(i, o, dtype=F64)

    def forward(self, x):
        return self.lin(x)


def _differences(ours, peft_model, pairs, x):
    """Largest |ours - PEFT| of the forward, of each named gradient (ours, PEFT's tensor) and of the merged weight."""
    y_ours, y_peft = ours(x), peft_model(x)
    g = torch.randn_like(y_ours, generator=torch.Generator().manual_seed(1))
    (y_ours * g).sum().backward()
    (y_peft * g).sum().backward()
    diffs = {"forward": (y_ours - y_peft).abs().max().item()}
    for name, (mine, theirs) in pairs.items():
        diffs[f"grad {name}"] = (mine.grad.reshape(theirs.grad.shape) - theirs.grad).abs().max().item()
    merged = peft_model.merge_and_unload().lin.weight
    diffs["merged weight"] = (ours.merge().weight - merged).abs().max().item()
    return diffs


def compare_dora(i=12, o=10, r=3, alpha=6.0, seed=0):
    """spectral_ft.DoRA against LoraConfig(use_dora=True), trainable tensors random (B and m off their init)."""
    from peft import LoraConfig, get_peft_model
    model = Tiny(i, o, seed)
    ours = spectral_ft.DoRA(copy.deepcopy(model.lin), r=r, alpha=alpha)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"], use_dora=True))
    layer = peft_model.base_model.model.lin
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        ours.lora_A.copy_(torch.randn(r, i, generator=generator, dtype=F64))
        ours.lora_B.copy_(torch.randn(o, r, generator=generator, dtype=F64))
        ours.magnitude.mul_(1 + 0.3 * torch.rand(o, generator=generator, dtype=F64))
        layer.lora_A["default"].weight.copy_(ours.lora_A)
        layer.lora_B["default"].weight.copy_(ours.lora_B)
        layer.lora_magnitude_vector["default"].weight.copy_(ours.magnitude)
    pairs = {"lora_A": (ours.lora_A, layer.lora_A["default"].weight),
             "lora_B": (ours.lora_B, layer.lora_B["default"].weight),
             "magnitude": (ours.magnitude, layer.lora_magnitude_vector["default"].weight)}
    x = torch.randn(4, 5, i, generator=generator, dtype=F64)
    return _differences(ours, peft_model, pairs, x)


def compare_oft(i=12, o=10, r=4, block_share=False, seed=0):
    """spectral_ft.OFT against OFTConfig(r, oft_block_size=0, use_cayley_neumann=False, coft=False, block_share)."""
    from peft import OFTConfig, get_peft_model
    model = Tiny(i, o, seed)
    ours = spectral_ft.OFT(copy.deepcopy(model.lin), r=r, block_share=block_share)
    config = OFTConfig(r=r, oft_block_size=0, target_modules=["lin"], use_cayley_neumann=False, coft=False,
                       block_share=block_share, module_dropout=0.0)
    peft_model = get_peft_model(model, config)
    theirs = peft_model.base_model.model.lin.oft_R["default"].weight
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        ours.oft_R.copy_(0.5 * torch.randn(ours.oft_R.shape, generator=generator, dtype=F64))
        theirs.copy_(ours.oft_R)
    x = torch.randn(4, 5, i, generator=generator, dtype=F64)
    return _differences(ours, peft_model, {"oft_R": (ours.oft_R, theirs)}, x)


CASES = [("dora", compare_dora, dict(i=12, o=10, r=3, alpha=6.0)),
         ("dora", compare_dora, dict(i=32, o=48, r=8, alpha=16.0)),
         ("oft", compare_oft, dict(i=12, o=10, r=4)), ("oft", compare_oft, dict(i=12, o=10, r=3, block_share=True)),
         ("oft", compare_oft, dict(i=48, o=32, r=4, block_share=True))]


def main():
    import peft
    import transformers
    print(f"torch {torch.__version__}, peft {peft.__version__}, transformers {transformers.__version__}, float64")
    worst = 0.0
    for method, compare, kwargs in CASES:
        diffs = compare(**kwargs)
        worst = max(worst, *diffs.values())
        print(f"{method:5s} {kwargs}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    print(f"largest difference: {worst:.2e}")


if __name__ == "__main__":
    main()
