"""
The baselines the papers compare against (DoRA, OFT, BitFit, random masking on LoRA) and FoRA as its paper specifies
it (dropout, Xavier init, n capped): each property in float64 with tolerances of float64 rounding, shapes and
hyperparameters drawn by hypothesis. Equality with PEFT (DoRA, OFT) runs where peft is importable, through
scripts/check_peft_baselines.py's comparisons; elsewhere those tests skip.
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import spectral_ft
from spectral_ft import OFT, BitFit, DFoRA, DoRA, FoRA, LoRA, MaskedLoRA, count_trainable, inject

F64 = torch.float64
NEW = ("dora", "oft", "bitfit", "masked_lora")
EPS = torch.finfo(F64).eps


def tolerance(*tensors):
    """A few hundred float64 roundings of the largest magnitude involved."""
    return 500 * EPS * max(1.0, *(t.detach().abs().max().item() for t in tensors))


@st.composite
def layers(draw, methods=NEW + ("fora", "dfora")):
    """(method, in, out, hyperparameters, seed) valid for the method."""
    method = draw(st.sampled_from(methods))
    i, o = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    if method in ("dora",):
        kwargs = {"r": draw(st.integers(1, 6)), "alpha": draw(st.floats(0.5, 16)), "detach_norm": draw(st.booleans())}
    elif method == "oft":
        i = draw(st.sampled_from([1, 2, 4, 6, 8, 12, 16]))
        divisors = [d for d in range(1, i + 1) if i % d == 0]
        kwargs = {"r": draw(st.sampled_from(divisors)), "block_share": draw(st.booleans())}
    elif method == "bitfit":
        kwargs = {}
    else:  # fora, dfora, masked_lora: n may exceed a matrix's entries (capped)
        kwargs = {"r": draw(st.integers(1, 6)), "n": draw(st.integers(1, 120)), "seed": draw(st.integers(0, 1000)),
                  "alpha": draw(st.none() | st.floats(0.5, 16))}
    return method, i, o, kwargs, draw(st.integers(0, 2**31 - 1))


def build(case):
    method, i, o, kwargs, seed = case
    torch.manual_seed(seed)
    return spectral_ft.METHODS[method](nn.Linear(i, o, dtype=F64), **kwargs).eval()


@torch.no_grad()
def randomise(adapter, seed=0):
    """Every trainable tensor of the adapter standard normal (magnitudes: positive)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in adapter.named_parameters():
        if not name.startswith("base."):
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64).abs() + 0.5 if name == "magnitude"
                    else torch.randn(p.shape, generator=g, dtype=F64))
    return adapter


def own_count(adapter):
    return sum(p.numel() for n, p in adapter.named_parameters() if not n.startswith("base."))


# -----------------------------------------------------------------------------
# Every new method: forward, merge, zero update at init


@settings(max_examples=60, deadline=None)
@given(case=layers())
def test_forward_is_the_merged_weight_and_bias(case):
    adapter = randomise(build(case))
    x = torch.randn(2, 3, case[1], generator=torch.Generator().manual_seed(1), dtype=F64)
    bias = adapter.bias if isinstance(adapter, BitFit) else adapter.base.bias
    expected = x @ (adapter.base.weight + adapter.delta_weight()).T + bias
    assert torch.allclose(adapter(x), expected, rtol=0, atol=tolerance(expected, adapter.base.weight))
    merged = adapter.merge()
    assert type(merged) is nn.Linear and torch.allclose(merged(x), adapter(x), rtol=0, atol=tolerance(expected))


@settings(max_examples=40, deadline=None)
@given(case=layers())
def test_the_update_is_zero_at_init(case):
    adapter = build(case)
    assert torch.allclose(adapter.delta_weight(), torch.zeros_like(adapter.base.weight), rtol=0,
                          atol=tolerance(adapter.base.weight))


# -----------------------------------------------------------------------------
# DoRA: DFoRA's decomposition with LoRA's ΔW


@settings(max_examples=40, deadline=None)
@given(case=layers(methods=("dora",)))
def test_dora_is_the_weight_decomposition_of_loras_update(case):
    dora = randomise(build(case))
    W0 = dora.base.weight
    V = W0 + LoRA.delta_weight(dora)  # W0 + (alpha/r) B A
    expected = dora.magnitude[:, None] * V / V.norm(dim=1, keepdim=True)
    assert torch.allclose(dora.merged_weight(), expected, rtol=0, atol=tolerance(expected))
    lora_delta = dora.alpha / dora.r * dora.lora_B @ dora.lora_A
    assert torch.allclose(LoRA.delta_weight(dora), lora_delta, rtol=0, atol=tolerance(lora_delta))
    assert DoRA.merged_weight is DFoRA.merged_weight  # one decomposition, shared


@settings(max_examples=30, deadline=None)
@given(case=layers(methods=("dora",)))
def test_dora_gradients_treat_the_norm_as_a_constant_unless_asked(case):
    dora = randomise(build(case))
    x = torch.randn(4, case[1], generator=torch.Generator().manual_seed(2), dtype=F64)
    A, B, m = (t.detach().clone().requires_grad_(True) for t in (dora.lora_A, dora.lora_B, dora.magnitude))
    V = dora.base.weight + dora.alpha / dora.r * B @ A
    norm = V.norm(dim=1, keepdim=True)
    W = m[:, None] * V / (norm.detach() if dora.detach_norm else norm)
    (x @ W.T).sum().backward()
    dora(x).sum().backward()
    for mine, ref in ((dora.lora_A, A), (dora.lora_B, B), (dora.magnitude, m)):
        assert torch.allclose(mine.grad, ref.grad, rtol=0, atol=tolerance(ref.grad, W))


def test_dora_count_is_loras_plus_the_magnitude():
    assert own_count(DoRA(nn.Linear(768, 768), r=24)) == 24 * (768 + 768) + 768


# -----------------------------------------------------------------------------
# OFT: R orthogonal, W' = W0 Rᵀ, counts


@settings(max_examples=60, deadline=None)
@given(case=layers(methods=("oft",)), scale=st.floats(0.01, 10.0))
def test_oft_rotation_is_orthogonal_and_block_diagonal(case, scale):
    oft = build(case)
    with torch.no_grad():
        oft.oft_R.copy_(scale * torch.randn(oft.oft_R.shape, generator=torch.Generator().manual_seed(case[4]), dtype=F64))
    blocks = oft.rotation_blocks()
    eye = torch.eye(oft.block_size, dtype=F64)
    assert torch.allclose(blocks.mT @ blocks, eye.expand_as(blocks), rtol=0, atol=1000 * EPS)
    R = torch.block_diag(*blocks)
    W0 = oft.base.weight
    assert torch.allclose(oft.merged_weight(), W0 @ R.T, rtol=0, atol=tolerance(W0) * oft.block_size)
    if oft.block_share:
        assert all(torch.equal(b, blocks[0]) for b in blocks)


@given(r=st.sampled_from([1, 2, 3, 4, 6, 12]), share=st.booleans())
def test_oft_counts(r, share):
    b = 12 // r
    assert own_count(OFT(nn.Linear(12, 5), r=r, block_share=share)) == (1 if share else r) * b * (b - 1) // 2


def test_oft_r_must_divide_in_features():
    with pytest.raises(ValueError, match="r=5 must divide in=12"):
        OFT(nn.Linear(12, 4), r=5)


# -----------------------------------------------------------------------------
# Random masking on LoRA and FoRA: equal counts at every r, n capped


@settings(max_examples=60, deadline=None)
@given(i=st.integers(1, 40), o=st.integers(1, 40), r=st.integers(1, 64), n=st.integers(1, 3000))
def test_masked_lora_trains_foras_count_at_every_rank(i, o, r, n):
    fora, masked = FoRA(nn.Linear(i, o), n=n, r=r), MaskedLoRA(nn.Linear(i, o), n=n, r=r)
    assert own_count(masked) == own_count(fora) == min(n, r * i) + min(n, o * r)


def test_fora_caps_n_at_the_matrix_as_table_10_counts():
    fora = FoRA(nn.Linear(768, 768), n=10_000, r=8)  # ViT-base, r = 8: 6,144 a matrix
    assert fora.spectrum_A.numel() == fora.spectrum_B.numel() == 6_144
    assert fora.indices_A.unique(dim=1).shape[1] == 6_144  # every entry once


@settings(max_examples=30, deadline=None)
@given(case=layers(methods=("masked_lora",)))
def test_masked_lora_is_lora_on_fixed_sparse_factors(case):
    masked = randomise(build(case))
    A = torch.zeros(masked.r, case[1], dtype=F64)
    A[masked.indices_A[0], masked.indices_A[1]] = masked.values_A.detach()
    B = torch.zeros(case[2], masked.r, dtype=F64)
    B[masked.indices_B[0], masked.indices_B[1]] = masked.values_B.detach()
    expected = masked.alpha / masked.r * B @ A
    assert torch.allclose(masked.delta_weight(), expected, rtol=0, atol=tolerance(expected))
    fora = FoRA(nn.Linear(case[1], case[2]), n=masked.n, r=masked.r, seed=masked.seed)
    assert torch.equal(fora.indices_A, masked.indices_A) and torch.equal(fora.indices_B, masked.indices_B)


@settings(max_examples=40, deadline=None)
@given(i=st.integers(8, 64), r=st.integers(1, 16), n=st.integers(4, 200), seed=st.integers(0, 1000))
def test_fora_xavier_init_matches_a_xavier_uniform_variance(i, r, n, seed):
    fora = FoRA(nn.Linear(i, 6, dtype=F64), n=n, r=r, init="xavier", seed=seed)
    A = spectral_ft.sparse_idft2_real(fora.spectrum_A.detach(), fora.indices_A, (r, i))
    if A.var(unbiased=False) > 1e-6 * A.pow(2).mean():
        assert math.isclose(A.var(unbiased=False).item(), 2.0 / (i + r), rel_tol=1e-9)


def test_fora_init_must_be_kaiming_or_xavier():
    with pytest.raises(ValueError, match="init='he' is unknown"):
        FoRA(nn.Linear(6, 6), n=4, r=2, init="he")


@pytest.mark.parametrize("method", ["fora", "dfora", "masked_lora", "dora"])
def test_dropout_acts_on_the_adapters_input_in_training_only(method):
    torch.manual_seed(0)
    kwargs = dict(r=3) if method == "dora" else dict(n=10, r=3)
    adapter = randomise(spectral_ft.METHODS[method](nn.Linear(6, 5, dtype=F64), dropout=0.5, **kwargs))
    x = torch.randn(4, 6, dtype=F64)
    W0, b, delta = adapter.base.weight, adapter.base.bias, adapter.delta_weight().detach()
    assert torch.allclose(adapter.eval()(x), x @ (W0 + delta).T + b, atol=tolerance(W0, delta))
    torch.manual_seed(7)
    y = adapter.train()(x)
    torch.manual_seed(7)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    assert torch.allclose(y, x @ W0.T + b + dropped @ delta.T, atol=tolerance(W0, delta, dropped))


# -----------------------------------------------------------------------------
# BitFit: the biases, LayerNorm's included


class TinyEncoder(nn.Module):
    """Names as BERT's: attention query/key/value, attention.output.dense, intermediate.dense, output.dense, LayerNorms."""

    def __init__(self, h=8):
        super().__init__()
        self.attention = nn.ModuleDict({"query": nn.Linear(h, h), "key": nn.Linear(h, h), "value": nn.Linear(h, h),
                                        "output": nn.ModuleDict({"dense": nn.Linear(h, h), "LayerNorm": nn.LayerNorm(h)})})
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(h, 2 * h)})
        self.output = nn.ModuleDict({"dense": nn.Linear(2 * h, h), "LayerNorm": nn.LayerNorm(h)})
        self.pooler = nn.ModuleDict({"dense": nn.Linear(h, h)})


def test_bitfit_trains_every_bias_the_paper_names_and_saves_them(tmp_path):
    model = TinyEncoder()
    inject(model, "bitfit", targets=BitFit.default_targets)
    h = 8
    assert count_trainable(model) == 4 * h + 2 * h + h + 2 * h  # q, k, v, attention out; intermediate; out; 2 LayerNorms
    assert {n for n, p in model.named_parameters() if p.requires_grad} >= {"attention.output.LayerNorm.bias",
                                                                           "output.LayerNorm.bias"}
    assert not model.pooler["dense"].bias.requires_grad
    state = spectral_ft.adapter_state_dict(model)
    assert "output.LayerNorm.bias" in state and "attention.query.bias" in state
    other = TinyEncoder()
    inject(other, "bitfit", targets=BitFit.default_targets)
    with torch.no_grad():
        for t in state.values():
            t.add_(1.0)
    spectral_ft.load_adapter_state_dict(other, state)
    assert torch.equal(other.output["LayerNorm"].bias, state["output.LayerNorm.bias"])


def test_bitfit_update_is_the_bias_alone_and_merges_into_it():
    adapter = randomise(BitFit(nn.Linear(5, 3, dtype=F64)))
    assert torch.equal(adapter.delta_weight(), torch.zeros(3, 5, dtype=F64))
    merged = adapter.merge()
    assert torch.equal(merged.weight, adapter.base.weight) and torch.equal(merged.bias, adapter.bias)
    with pytest.raises(ValueError, match="bitfit trains biases"):
        BitFit(nn.Linear(5, 3, bias=False))


# -----------------------------------------------------------------------------
# Equality with PEFT (skipped where peft is not importable)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


@pytest.mark.parametrize("kwargs", [dict(i=12, o=10, r=3, alpha=6.0), dict(i=7, o=16, r=5, alpha=2.0, seed=3)])
def test_dora_equals_peft_use_dora(kwargs):
    pytest.importorskip("peft")
    from check_peft_baselines import compare_dora
    diffs = compare_dora(**kwargs)
    assert max(diffs.values()) < 1e-12, diffs


@pytest.mark.parametrize("kwargs", [dict(i=12, o=10, r=4), dict(i=12, o=7, r=3, block_share=True),
                                    dict(i=16, o=16, r=2, seed=5)])
def test_oft_equals_peft_oftconfig_without_neumann(kwargs):
    pytest.importorskip("peft")
    from check_peft_baselines import compare_oft
    diffs = compare_oft(**kwargs)
    assert max(diffs.values()) < 1e-12, diffs


# -----------------------------------------------------------------------------
# Counts on RoBERTa-base's shapes (meta tensors: nothing allocated), q and v unless said


def roberta_base_count(method, targets=("query", "value"), **kwargs):
    from encoder.model import KNOWN_CONFIGS, classifier_for, config_from_json
    with torch.device("meta"):
        model = classifier_for(config_from_json(KNOWN_CONFIGS["roberta-base"]), 2)
    inject(model, method, targets=targets, **kwargs)
    outside_head = [p for n, p in model.named_parameters() if not n.startswith(("classifier", "pooler"))]
    return sum(p.numel() for p in outside_head if p.requires_grad)


def test_counts_on_roberta_base():
    d, layers, ffn = 768, 12, 3072
    assert roberta_base_count("dora") == 2 * layers * (8 * (d + d) + d)  # LoRA r 8 + the magnitude
    b = d // 4
    assert roberta_base_count("oft", r=4) == 2 * layers * 4 * b * (b - 1) // 2
    assert roberta_base_count("oft", r=4, block_share=True) == 2 * layers * b * (b - 1) // 2
    assert roberta_base_count("masked_lora") == 2 * layers * 2 * 500 == 24_000  # FoRA's n 500 (REFERENCES' table)
    linear_biases = layers * (4 * d + ffn + d)  # q, k, v, attention output; intermediate; output
    layer_norm_biases = layers * 2 * d + d  # two a layer, and the embeddings'
    assert (linear_biases, layer_norm_biases) == (82_944, 19_200)
    assert roberta_base_count("bitfit", targets=BitFit.default_targets) == 102_144  # LoCA Table 1's 0.1M
