"""
The executable specification of spectral_ft's methods (facts: each method's paper and its authors' code).

Each test states one property: merging changes nothing, delta_weight() is the paper's
equation (recomputed here in float64 from the definitions, never from spectral_ft's own
transforms), zero update at init, exact orthogonality, Lemma 3.1, gradients, the index
conventions, argument checks, low precision, FouRA's gate, the model helpers and the
parameter-count table. Shapes, ranks, counts and seeds are drawn by hypothesis; every
model is tiny and built here. LoCA's location gradients, its schedule and the transform
identities (Parseval, DCT) are specified in other files.
"""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import spectral_ft
from spectral_ft import (METHODS, OFT, Adapter, BitFit, DoRA, FoRA, FouRA, FourierFT, LoCA, LoCASchedule, LoRA, MaskedLoRA,
                         SpectralAdapterA, SpectralAdapterR, VeRA, adapter_state_dict, adapters,
                         cayley, count_trainable, inject, load_adapter_state_dict, random_locations)

ALL = list(METHODS)  # lora, dora, vera, fourierft, oft, bitfit, fora, dfora, masked_lora, loca, foura, spectral_a, spectral_r
F64 = torch.float64
LOW_PRECISION = [torch.float16, torch.bfloat16]

# -----------------------------------------------------------------------------
# Random valid hyperparameters for a layer with `i` inputs and `o` outputs


def valid_hyperparameters(method, i, o, gate=False):
    """A strategy of keyword arguments for METHODS[method] on an (o, i) weight."""
    small = min(i, o)
    alpha = st.floats(0.25, 16.0)
    seed = st.integers(0, 10_000)
    if method in ("lora", "dora"):
        extra = {"detach_norm": st.booleans()} if method == "dora" else {}
        return st.fixed_dictionaries({"r": st.integers(1, 8), "alpha": alpha, "dropout": st.sampled_from([0.0, 0.3]),
                                      **extra})
    if method == "oft":
        return st.fixed_dictionaries({"r": st.sampled_from([d for d in range(1, i + 1) if i % d == 0]),
                                      "block_share": st.booleans()})
    if method == "bitfit":
        return st.just({})
    if method == "masked_lora":
        return st.integers(1, 8).flatmap(lambda r: st.fixed_dictionaries(
            {"r": st.just(r), "n": st.integers(1, r * max(i, o) + 3), "alpha": st.none() | alpha, "seed": seed}))
    if method == "vera":
        return st.fixed_dictionaries({"r": st.integers(1, 32), "d_initial": st.floats(0.01, 1.0), "seed": seed})
    if method == "fourierft":
        return st.fixed_dictionaries({"n": st.integers(1, i * o), "scaling": st.floats(1.0, 300.0), "seed": seed})
    if method in ("fora", "dfora"):  # alpha None: the paper's scale 1 (alpha = r)
        extra = {"detach_norm": st.booleans()} if method == "dfora" else {}
        return st.integers(1, 8).flatmap(lambda r: st.fixed_dictionaries(
            {"r": st.just(r), "n": st.integers(1, r * small), "alpha": st.none() | alpha, "seed": seed,
             "init": st.sampled_from(["kaiming", "xavier"]), **extra}))
    if method == "loca":
        return st.fixed_dictionaries({"n": st.integers(1, i * o), "alpha": alpha, "seed": seed})
    if method == "foura":
        return st.fixed_dictionaries({"r": st.integers(1, small), "alpha": alpha,
                                      "transform": st.sampled_from(["dct", "dft"]), "gate": st.just(gate)})
    if method in ("spectral_a", "spectral_r"):
        return st.fixed_dictionaries({"r": st.integers(1, small)})
    raise AssertionError(method)


@st.composite
def cases(draw, methods=tuple(ALL), max_dim=24, gate=False):
    """(method, in, out, hyperparameters, seed), often non-square."""
    method = draw(st.sampled_from(methods))
    i, o = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
    return method, i, o, draw(valid_hyperparameters(method, i, o, gate)), draw(st.integers(0, 2**31 - 1))


def build(case, dtype=F64, bias=True):
    """The adapter of `case` around a seeded random nn.Linear of `dtype`, in eval mode."""
    method, i, o, kwargs, seed = case
    torch.manual_seed(seed)
    base = nn.Linear(i, o, bias=bias or method == "bitfit", dtype=dtype)  # (BitFit needs a bias to train)
    return METHODS[method](base, **kwargs).eval()


@torch.no_grad()
def randomise(module, seed=0):
    """Every trainable tensor of every adapter in `module` drawn at random (standard normal;
    LoCA locations uniform in [0, 1], where they live). Base weights are left alone."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if name == "base.weight" or name == "base.bias" or ".base." in name or not _inside_adapter(module, name):
            continue
        if name.endswith("locations"):
            p.copy_(torch.rand(p.shape, generator=g, dtype=F64))
        else:
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    return module


def _inside_adapter(module, name):
    if isinstance(module, Adapter):
        return True
    return any(name.startswith(prefix + ".") for prefix, _ in adapters(module))


def own_parameters(adapter):
    """{name: tensor} of the adapter's own parameters (everything but the frozen base)."""
    return {n: p for n, p in adapter.named_parameters() if not n.startswith("base.")}


def tokens(i, B=2, T=5, dtype=F64, seed=0):
    return torch.randn(B, T, i, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)  # (B, T, in)


def numpy64(t):
    return t.detach().to(F64).cpu().numpy()


# -----------------------------------------------------------------------------
# Float64 references straight from the definitions


def dct_reference(N):
    """Orthonormal DCT-II (N, N): C[k, i] = √(2/N) cos(π (2i+1) k / 2N), row 0 times 1/√2."""
    k, i = np.arange(N)[:, None], np.arange(N)[None, :]
    C = np.sqrt(2.0 / N) * np.cos(np.pi * (2 * i + 1) * k / (2 * N))
    C[0] /= np.sqrt(2.0)
    return C


def real_dft_reference(N):
    """The orthonormal real DFT of spectral_ft.real_dft as a matrix: rows DC, √2·Re of
    frequencies 1..m, Nyquist (even N), √2·Im of frequencies 1..m (X_k = Σ x_n e^{-2πikn/N}/√N)."""
    n, m = np.arange(N), (N - 1) // 2
    rows = [np.ones(N) / np.sqrt(N)]
    rows += [np.sqrt(2.0 / N) * np.cos(2 * np.pi * k * n / N) for k in range(1, m + 1)]
    if N % 2 == 0:
        rows.append(np.cos(np.pi * n) / np.sqrt(N))
    rows += [-np.sqrt(2.0 / N) * np.sin(2 * np.pi * k * n / N) for k in range(1, m + 1)]
    return np.stack(rows)


def idft2_real_reference(values, indices, M, N):
    """Re(IDFT2(F)) for F (M, N) zero but F[u_k, v_k] = s_k, from the definition
    (1/MN) Σ_k s_k cos(2π (u_k p / M + v_k q / N))."""
    s, (u, v) = numpy64(values), numpy64(indices)
    p, q = np.arange(M)[:, None, None], np.arange(N)[None, :, None]
    return (np.cos(2 * np.pi * (u * p / M + v * q / N)) * s).sum(-1) / (M * N)  # (M, N)


def cayley_reference(P):
    P = numpy64(P)
    Q = (P - P.T) / 2
    eye = np.eye(len(P))
    return (eye + Q) @ np.linalg.inv(eye - Q)


def delta_reference(adapter):
    """ΔW (out, in) of `adapter` by its paper's equation, in float64 numpy."""
    W0 = numpy64(adapter.base.weight)
    t = {name: numpy64(p) for name, p in own_parameters(adapter).items()}
    o, i = W0.shape
    if isinstance(adapter, DoRA):  # DoRA eq. 5 on LoRA's ΔW
        V = W0 + adapter.alpha / adapter.r * t["lora_B"] @ t["lora_A"]
        return t["magnitude"][:, None] * V / np.linalg.norm(V, axis=1, keepdims=True) - W0
    if isinstance(adapter, OFT):  # W0 Rᵀ - W0, R = diag(R_1..R_r), R_k = (I - Q)(I + Q)⁻¹, Q = U - Uᵀ (PEFT's)
        b = adapter.block_size
        blocks = []
        for row in t["oft_R"][[0] * adapter.r if adapter.block_share else range(adapter.r)]:
            U = np.zeros((b, b))
            U[np.triu_indices(b, 1)] = row
            blocks.append((np.eye(b) - (U - U.T)) @ np.linalg.inv(np.eye(b) + (U - U.T)))
        R = np.zeros((i, i))
        for k, block in enumerate(blocks):
            R[k * b:(k + 1) * b, k * b:(k + 1) * b] = block
        return W0 @ R.T - W0
    if isinstance(adapter, BitFit):
        return np.zeros_like(W0)
    if isinstance(adapter, MaskedLoRA):
        A, B = np.zeros((adapter.r, i)), np.zeros((o, adapter.r))
        A[tuple(numpy64(adapter.indices_A).astype(int))] = t["values_A"]
        B[tuple(numpy64(adapter.indices_B).astype(int))] = t["values_B"]
        return adapter.alpha / adapter.r * B @ A
    if isinstance(adapter, LoRA):
        return adapter.alpha / adapter.r * t["lora_B"] @ t["lora_A"]
    if isinstance(adapter, VeRA):
        A, B = numpy64(adapter.vera_A), numpy64(adapter.vera_B)
        return np.diag(t["lambda_b"]) @ B @ np.diag(t["lambda_d"]) @ A
    if isinstance(adapter, FourierFT):
        return adapter.scaling * idft2_real_reference(adapter.spectrum, adapter.indices, o, i)
    if isinstance(adapter, FoRA):  # and DFoRA
        A = idft2_real_reference(adapter.spectrum_A, adapter.indices_A, adapter.r, i)  # (r, in)
        B = idft2_real_reference(adapter.spectrum_B, adapter.indices_B, o, adapter.r)  # (out, r)
        delta = adapter.alpha / adapter.r * B @ A
        if adapter.method == "fora":
            return delta
        V = W0 + delta
        return t["magnitude"][:, None] * V / np.linalg.norm(V, axis=1, keepdims=True) - W0
    if isinstance(adapter, LoCA):
        S = np.zeros((o, i))
        rows, cols = numpy64(adapter.location_indices()).astype(int)
        np.add.at(S, (rows, cols), t["coefficients"])
        return adapter.alpha * dct_reference(o).T @ S @ dct_reference(i)
    if isinstance(adapter, FouRA):
        F = dct_reference if adapter.transform == "dct" else real_dft_reference
        return adapter.alpha / adapter.r * F(o).T @ t["foura_B"] @ t["foura_A"] @ F(i)
    U1, S1, V1 = numpy64(adapter.U1), np.diag(numpy64(adapter.S1)), numpy64(adapter.V1)
    if isinstance(adapter, SpectralAdapterA):
        return (U1 + t["A_U"]) @ S1 @ (V1 + t["A_V"]).T - U1 @ S1 @ V1.T
    if isinstance(adapter, SpectralAdapterR):
        R_U, R_V = cayley_reference(adapter.P_U), cayley_reference(adapter.P_V)
        return (U1 @ R_U) @ S1 @ (V1 @ R_V).T - U1 @ S1 @ V1.T
    raise AssertionError(type(adapter))


def assert_close64(actual, expected, tol=1e-10):
    actual, expected = numpy64(torch.as_tensor(actual)), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# -----------------------------------------------------------------------------
# A tiny nested model: attention.self.{query, key, value}, distractors whose names only
# contain a target (query_proj, subquery), and a non-square value projection


class TinyLayer(nn.Module):
    def __init__(self, d, dv):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(d, d)
        self.attention.self.key = nn.Linear(d, d)
        self.attention.self.value = nn.Linear(d, dv)  # non-square: (dv, d)
        self.query_proj = nn.Linear(d, d)
        self.subquery = nn.Linear(d, d, bias=False)
        self.output = nn.Linear(dv, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):  # (B, T, d)
        s = self.attention.self
        h = torch.tanh(s.query(x)) + s.key(x) + self.query_proj(x) + self.subquery(x)
        return self.norm(x + h + self.output(s.value(x)))


class TinyEncoder(nn.Module):
    def __init__(self, layers=2, d=6, dv=4):
        super().__init__()
        self.layer = nn.ModuleList(TinyLayer(d, dv) for _ in range(layers))
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        for layer in self.layer:
            x = layer(x)
        return self.head(x)


def tiny_encoder(seed=0, dtype=F64):
    torch.manual_seed(seed)
    return TinyEncoder().to(dtype).eval()


# Hyperparameters that fit every target of TinyEncoder (min(in, out) = 4 for value).
SMALL = {"lora": dict(r=2), "dora": dict(r=2), "vera": dict(r=3), "fourierft": dict(n=5), "oft": dict(r=2),
         "bitfit": dict(), "fora": dict(n=4, r=3), "dfora": dict(n=4, r=3), "masked_lora": dict(n=4, r=3),
         "loca": dict(n=5), "foura": dict(r=2, gate=False), "spectral_a": dict(r=2), "spectral_r": dict(r=2)}

# -----------------------------------------------------------------------------
# 1. Merging changes nothing


@pytest.mark.parametrize("method", ALL)  # FouRA with gate=False: the gated one cannot merge
@settings(max_examples=12, deadline=None)
@given(data=st.data(), bias=st.booleans(), B=st.integers(1, 3), T=st.integers(1, 4))
def test_merge_matches_forward(method, data, bias, B, T):
    case = data.draw(cases(methods=(method,)))
    adapter = randomise(build(case, bias=bias), seed=case[-1])
    x = tokens(case[1], B, T)
    merged = adapter.merge()
    with torch.no_grad():
        assert_close64(merged(x), adapter(x))


@settings(max_examples=25, deadline=None)
@given(case=cases(max_dim=8), dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, F64]),
       bias=st.booleans())
def test_merge_returns_plain_linear_in_base_dtype(case, dtype, bias):
    bias = bias or case[0] == "bitfit"  # (build gives BitFit a bias to train)
    adapter = build(case, dtype=dtype, bias=bias)
    merged = adapter.merge()
    assert type(merged) is nn.Linear
    assert merged.weight.dtype == dtype and (merged.bias is None) == (not bias)
    assert (merged.in_features, merged.out_features) == (case[1], case[2])
    if bias:
        assert torch.equal(merged.bias, adapter.base.bias)


@settings(max_examples=len(ALL) * 2, deadline=None)
@given(method=st.sampled_from(ALL), seed=st.integers(0, 1000))
def test_model_merge_keeps_outputs_and_leaves_no_adapter(method, seed):
    model = tiny_encoder(seed)
    names = inject(model, method, targets=("query", "value"), **SMALL[method])
    randomise(model, seed)
    x = tokens(6, seed=seed)
    with torch.no_grad():
        before = model(x)
        assert sorted(spectral_ft.merge(model)) == sorted(names)
        after = model(x)
    assert not adapters(model) and not any(isinstance(m, Adapter) for m in model.modules())
    assert all(type(model.get_submodule(name)) is nn.Linear for name in names)
    assert_close64(after, before)


# -----------------------------------------------------------------------------
# 2. delta_weight() is the paper's equation


@pytest.mark.parametrize("method", ALL)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_delta_weight_equals_paper_equation(method, data):
    case = data.draw(cases(methods=(method,)))
    adapter = randomise(build(case), seed=case[-1])
    delta = adapter.delta_weight()
    assert delta.dtype == F64 and delta.shape == (case[2], case[1])
    assert_close64(delta, delta_reference(adapter))


def test_foura_delta_weight_equals_paper_equation_for_both_transforms():
    for transform in ("dct", "dft"):
        for (i, o, r) in [(7, 4, 3), (4, 8, 4), (1, 5, 1), (10, 10, 6)]:
            torch.manual_seed(i * o)
            adapter = randomise(FouRA(nn.Linear(i, o, dtype=F64), r=r, transform=transform, gate=False), seed=r)
            assert_close64(adapter.delta_weight(), delta_reference(adapter))


@settings(max_examples=20, deadline=None)
@given(case=cases(methods=("spectral_a", "spectral_r")))
def test_spectral_adapter_buffers_are_top_singular_triplets_of_W0(case):
    adapter = build(case)
    W0, r = numpy64(adapter.base.weight), case[3]["r"]
    U1, S1, V1 = numpy64(adapter.U1), numpy64(adapter.S1), numpy64(adapter.V1)
    assert U1.shape == (case[2], r) and S1.shape == (r,) and V1.shape == (case[1], r)
    assert_close64(S1, np.linalg.svd(W0, compute_uv=False)[:r])
    assert_close64(U1.T @ U1, np.eye(r))
    assert_close64(V1.T @ V1, np.eye(r))
    assert_close64(W0 @ V1, U1 * S1)
    assert_close64(W0.T @ U1, V1 * S1)


@settings(max_examples=30, deadline=None)
@given(case=cases(max_dim=10), dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_delta_weight_is_float32_for_float32_and_half_precision_bases(case, dtype):
    adapter = randomise(build(case, dtype=dtype))
    assert adapter.delta_weight().dtype == torch.float32


# -----------------------------------------------------------------------------
# 3. Zero update at init, where the paper says so

ZERO_AT_INIT = [m for m in ALL if m != "fourierft"]


@pytest.mark.parametrize("method", ZERO_AT_INIT)
@settings(max_examples=25, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([torch.float32, F64]))
def test_update_is_exactly_zero_at_init(method, data, dtype):
    case = data.draw(cases(methods=(method,), gate=data.draw(st.booleans())))
    adapter = build(case, dtype=dtype)
    x = tokens(case[1], dtype=dtype)
    with torch.no_grad():
        assert torch.equal(adapter(x), adapter.base(x))
    if not getattr(adapter, "gate", False):
        assert torch.equal(adapter.delta_weight(), torch.zeros(case[2], case[1], dtype=dtype))


@settings(max_examples=20, deadline=None)
@given(case=cases(methods=("fourierft",)))
def test_fourierft_update_is_nonzero_at_init(case):
    adapter = build(case)
    assert adapter.delta_weight().abs().max() > 0


# -----------------------------------------------------------------------------
# 4. Orthogonality


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 12), scale=st.floats(0.01, 3.0), seed=st.integers(0, 10_000))
def test_cayley_is_orthogonal(r, scale, seed):
    P = scale * torch.randn(r, r, generator=torch.Generator().manual_seed(seed), dtype=F64)
    R = cayley(P)
    assert_close64(R.T @ R, np.eye(r), tol=1e-12)
    assert_close64(R, cayley_reference(P))


@pytest.mark.parametrize("r", [1, 2, 5])
def test_cayley_of_zero_is_identity(r):
    assert torch.equal(cayley(torch.zeros(r, r, dtype=F64)), torch.eye(r, dtype=F64))


@settings(max_examples=25, deadline=None)
@given(case=cases(methods=("spectral_r",)))
def test_spectral_adapter_r_keeps_singular_values_of_W0(case):
    adapter = randomise(build(case), seed=case[-1])
    for R in adapter.rotations():
        assert_close64(R.T @ R, np.eye(case[3]["r"]), tol=1e-12)
    merged = numpy64(adapter.merge().weight)
    W0 = numpy64(adapter.base.weight)
    assert_close64(np.linalg.svd(merged, compute_uv=False), np.linalg.svd(W0, compute_uv=False))
    if case[3]["r"] >= 2:  # (a 1x1 skew-symmetric Q is 0: R = I)
        assert np.abs(merged - W0).max() > 0  # the rotation did change the weight


# -----------------------------------------------------------------------------
# 5. Lemma 3.1: Spectral Adapter A reaches rank 2r where LoRA of the same size stays at r


@settings(max_examples=25, deadline=None)
@given(i=st.integers(2, 24), o=st.integers(2, 24), data=st.data())
def test_spectral_adapter_a_reaches_rank_2r_where_lora_stays_at_r(i, o, data):
    r = data.draw(st.integers(1, min(i, o) // 2))
    seed = data.draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    spectral = randomise(SpectralAdapterA(nn.Linear(i, o, dtype=F64), r=r), seed)
    lora = randomise(LoRA(nn.Linear(i, o, dtype=F64), r=r), seed)
    assert count_trainable(spectral) == count_trainable(lora) == r * (i + o)
    assert np.linalg.matrix_rank(numpy64(spectral.delta_weight())) == 2 * r
    assert np.linalg.matrix_rank(numpy64(lora.delta_weight())) <= r


# -----------------------------------------------------------------------------
# 6. Gradients: autograd agrees with finite differences (float64)


def _gradcheck(adapter, x, skip=()):
    names = [n for n in own_parameters(adapter) if n not in skip]
    tensors = tuple(own_parameters(adapter)[n].detach().clone().requires_grad_() for n in names)
    weights = torch.randn(x.shape[:-1] + (adapter.out_features,), generator=torch.Generator().manual_seed(1), dtype=F64)

    def loss(*values):
        out = torch.func.functional_call(adapter, dict(zip(names, values)), (x,))
        return (out * weights).sum() + (out ** 2).sum()

    assert names
    assert torch.autograd.gradcheck(loss, tensors, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("method,gate", [(m, False) for m in ALL] + [("foura", True)])
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_gradients_match_finite_differences(method, gate, data):
    case = data.draw(cases(methods=(method,), max_dim=6, gate=gate))
    if method in ("dfora", "dora"):  # the exact gradient: the norm differentiated (the default detaches it)
        case[3]["detach_norm"] = False
    adapter = randomise(build(case), seed=case[-1])  # eval mode: no dropout
    _gradcheck(adapter, tokens(case[1], B=2, T=3), skip=("locations",))


# -----------------------------------------------------------------------------
# 7. Locations: distinct and in range, also for non-square matrices; FoRA's init variance


def assert_distinct_in_range(indices, rows, cols):
    assert indices.dtype == torch.long and indices.dim() == 2 and indices.shape[0] == 2
    r, c = indices
    assert ((0 <= r) & (r < rows)).all(), f"row index out of range [0, {rows}): {r.tolist()}"
    assert ((0 <= c) & (c < cols)).all(), f"column index out of range [0, {cols}): {c.tolist()}"
    pairs = set(zip(r.tolist(), c.tolist()))
    assert len(pairs) == indices.shape[1], "repeated locations"


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 30), data=st.data())
def test_random_locations_are_distinct_and_in_range(rows, cols, data):
    n = data.draw(st.integers(1, rows * cols))
    seed = data.draw(st.integers(0, 10_000))
    indices = random_locations(n, rows, cols, torch.Generator().manual_seed(seed))
    assert indices.shape == (2, n)
    assert_distinct_in_range(indices, rows, cols)


@settings(max_examples=40, deadline=None)
@given(case=cases(methods=("fora", "dfora")).filter(lambda c: c[1] != c[2] or c[1] != c[3]["r"]))
def test_fora_indices_are_distinct_and_in_range_for_nonsquare_shapes(case):
    adapter = build(case)
    r = case[3]["r"]
    assert adapter.indices_A.shape == adapter.indices_B.shape == (2, case[3]["n"])
    assert_distinct_in_range(adapter.indices_A, r, case[1])  # S_A (r, in)
    assert_distinct_in_range(adapter.indices_B, case[2], r)  # S_B (out, r)


@pytest.mark.parametrize("rows,cols", [(3, 8), (8, 3), (2, 5)])
def test_algorithm_1_mapping_is_caught_by_the_range_check(rows, cols):
    """The paper's row = L // din, col = L % dout on a (din, dout) = (rows, cols) matrix
    goes out of range or repeats when rows != cols: the check above must notice."""
    flat = torch.randperm(rows * cols, generator=torch.Generator().manual_seed(0))
    buggy = torch.stack([flat // rows, flat % cols])
    with pytest.raises(AssertionError):
        assert_distinct_in_range(buggy, rows, cols)
    assert_distinct_in_range(torch.stack([flat // cols, flat % cols]), rows, cols)


@settings(max_examples=40, deadline=None)
@given(case=cases(methods=("fora", "dfora")), dtype=st.sampled_from([torch.float32, F64]))
@example(case=("fora", 2, 3, {"r": 1, "n": 2, "alpha": None, "seed": 0}, 4011), dtype=F64)  # nearly constant
@example(case=("fora", 5, 3, {"r": 2, "n": 2, "alpha": None, "seed": 0}, 2200), dtype=torch.float32)  # mirrored
@example(case=("fora", 2, 3, {"r": 1, "n": 2, "alpha": None, "seed": 591}, 591), dtype=F64)  # DC + one 4e-4 its size
@example(case=("fora", 2, 3, {"r": 1, "n": 2, "alpha": None, "seed": 4096}, 4096), dtype=torch.float32)
def test_fora_init_variance_of_A_is_kaiming(case, dtype):
    """Var(Ã) = 1/(3·in), the variance of a Kaiming-uniform (r, in) matrix, unless Ã is nearly constant: FoRA's
    rule leaves a draw whose variance is at most 1e-6 of its mean square (a DC coefficient alone or dominating)
    as drawn, every coefficient within its Kaiming bound 1/√in. Each draw is in one branch by construction
    (the pinned one: a DC coefficient 1,400 times the other: not alone, yet left as drawn).
    Rounding: a coefficient is stored to `eps` of itself and an entry of Ã is at most scale = Σ|s_k| / (r·in),
    so Var(Ã) moves by at most ~2 · 11 eps · scale / std(Ã) (storage, the FFT and the variance, in the
    adapter's dtype): mirrored frequencies whose raw draws nearly cancel get huge coefficients, and float32
    loses digits there (seen: 2e-4); tolerance 32 eps · scale / std(Ã), and 1e-9 beside it."""
    assume(case[3].get("init", "kaiming") == "kaiming")  # (Xavier: tests/test_baselines.py)
    adapter = build(case, dtype=dtype)
    i, r = case[1], case[3]["r"]
    A = torch.as_tensor(idft2_real_reference(adapter.spectrum_A, adapter.indices_A, r, i))  # float64
    variance, spectrum = A.var(unbiased=False).item(), adapter.spectrum_A.detach().to(F64)
    scale = spectrum.abs().sum().item() / (r * i)  # bounds every entry of Ã
    rescaled = variance > 0 and abs(variance * 3 * i - 1) < 1e-9 + 32 * torch.finfo(dtype).eps * scale / variance ** 0.5
    left_as_drawn = spectrum.abs().max() <= 1 / math.sqrt(i) and variance <= 2e-6 * A.pow(2).mean().item()
    assert rescaled or left_as_drawn


def test_fora_lone_dc_coefficient_is_not_blown_up():
    """n=1 at the DC location makes Ã constant; its float rounding noise must not be
    'rescaled' to Kaiming variance (which multiplies the coefficient by ~1e7)."""
    checked = 0
    for i in (3, 5, 6):
        for seed in range(60):
            torch.manual_seed(seed)
            adapter = FoRA(nn.Linear(i, 4), n=1, r=1, seed=seed)
            if adapter.indices_A[:, 0].tolist() == [0, 0]:
                checked += 1
                A = idft2_real_reference(adapter.spectrum_A, adapter.indices_A, 1, i)
                assert abs(A).max() <= 1 / math.sqrt(i), (i, seed, abs(A).max())
    assert checked >= 10


# -----------------------------------------------------------------------------
# 8. FourierFT locations follow PEFT's convention


@settings(max_examples=30, deadline=None)
@given(case=cases(methods=("fourierft",)))
def test_fourierft_indices_follow_peft_convention(case):
    _, i, o, kwargs, _ = case
    adapter = build(case)
    flat = torch.randperm(o * i, generator=torch.Generator().manual_seed(kwargs["seed"]))[:kwargs["n"]]
    assert torch.equal(adapter.indices, torch.stack([flat // i, flat % i]))


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 16), seed=st.integers(0, 10_000))
def test_fourierft_same_seed_gives_same_indices_across_layers_of_one_shape(n, seed):
    model = tiny_encoder()
    names = inject(model, "fourierft", targets=("query", "key", "value"), n=n, seed=seed)
    by_shape = {}
    for name in names:
        layer = model.get_submodule(name)
        by_shape.setdefault((layer.out_features, layer.in_features), []).append(layer.indices)
    assert len(by_shape) == 2 and all(len(group) >= 2 for group in by_shape.values())
    for group in by_shape.values():
        assert all(torch.equal(group[0], other) for other in group[1:])


# -----------------------------------------------------------------------------
# 8b. VeRA's frozen pair is PEFT's, tensor for tensor; FoRA's default scale is the paper's 1

# Made once in a separate environment (torch 2.13.0+cpu, peft 0.21.2): get_peft_model on a module with
# query = nn.Linear(7, 5) and value = nn.Linear(6, 9), VeraConfig(r, target_modules=["query", "value"],
# projection_prng_key=seed), then query.vera_A["default"] (r, 7) and query.vera_B["default"] (9, r):
# the pair at the largest in (7) and out (9). Entries are float32 values; sums taken in float64.
PEFT_VERA = {  # (seed, r): (A's first 4, A's last 2, sum A, sum |A|, B's first 4, B's last 2, sum B, sum |B|)
    (0, 4): ([-0.006931448820978403, 0.4966502785682678, -0.7619917392730713, -0.681347131729126],
             [0.8383080959320068, -0.8588559031486511], -1.0639162347652018, 11.891774422023445,
             [-0.7710233926773071, -0.31006285548210144, -0.47740551829338074, 1.058180570602417],
             [-0.7254807353019714, 0.3700041174888611], -3.2546061240136623, 23.518659602850676),
    (1234, 3): ([-0.8721609711647034, -0.18164856731891632, -0.44468218088150024, -0.246932253241539],
                [0.42825567722320557, 0.18742790818214417], -1.376520775258541, 8.737989880144596,
                [-0.5534427165985107, -0.693665623664856, 0.36589062213897705, 1.3194925785064697],
                [-0.2292567640542984, -1.2289342880249023], -0.1341438740491867, 16.877460062503815),
}


@pytest.mark.parametrize("seed,r", list(PEFT_VERA))
def test_vera_projections_are_pefts_for_the_same_seed(seed, r):
    model = nn.Module()
    model.query, model.value = nn.Linear(7, 5), nn.Linear(6, 9)
    inject(model, "vera", targets=("query", "value"), r=r, seed=seed)
    A, B = model.query.projections.A, model.query.projections.B  # the shared pair, (r, 7) and (9, r)
    assert A.shape == (r, 7) and B.shape == (9, r) and A.dtype == B.dtype == torch.float32
    first_A, last_A, sum_A, abs_A, first_B, last_B, sum_B, abs_B = PEFT_VERA[(seed, r)]
    # The draws are the generator's, the same on every CPU; uniform_'s a + (b - a) u is one float32 rounding apart
    # between vectorized (fused multiply-add) and scalar kernels, so the values match to float32 rounding: another
    # seed or order of draws moves them by O(1).
    assert A.flatten()[:4].tolist() == pytest.approx(first_A, rel=1e-6, abs=1e-7)
    assert A.flatten()[-2:].tolist() == pytest.approx(last_A, rel=1e-6, abs=1e-7)
    assert B.flatten()[:4].tolist() == pytest.approx(first_B, rel=1e-6, abs=1e-7)
    assert B.flatten()[-2:].tolist() == pytest.approx(last_B, rel=1e-6, abs=1e-7)
    for tensor, total, absolute in ((A, sum_A, abs_A), (B, sum_B, abs_B)):
        assert math.isclose(tensor.double().sum().item(), total, rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(tensor.double().abs().sum().item(), absolute, rel_tol=1e-6)
    assert torch.equal(model.query.vera_A, A[:, :7]) and torch.equal(model.value.vera_A, A[:, :6])
    assert torch.equal(model.query.vera_B, B[:5]) and torch.equal(model.value.vera_B, B)


def test_fora_default_alpha_is_the_rank_and_dfora_detaches_the_norm():
    assert spectral_ft.hyperparameters("fora")["alpha"] is None
    assert spectral_ft.hyperparameters("dfora")["alpha"] is None
    assert spectral_ft.hyperparameters("dfora")["detach_norm"] is True  # DoRA §4.3, PEFT
    assert spectral_ft.DFoRA(nn.Linear(6, 6), n=4, r=3).detach_norm is True


@settings(max_examples=20, deadline=None)
@given(method=st.sampled_from(["fora", "dfora"]), r=st.integers(1, 64), seed=st.integers(0, 100))
def test_fora_default_scale_is_one_for_any_rank(method, r, seed):
    """alpha=None: ΔW = B̃ Ã exactly (the paper's eq. 3-4 has no alpha), the same as alpha = r."""
    torch.manual_seed(seed)
    base = nn.Linear(12, 10, dtype=F64)
    n = min(4, r * 10)
    torch.manual_seed(seed)
    default = randomise(METHODS[method](base, n=n, r=r, seed=seed), seed)
    torch.manual_seed(seed)
    explicit = randomise(METHODS[method](base, n=n, r=r, alpha=float(r), seed=seed), seed)
    assert default.alpha == r
    assert torch.equal(default.delta_weight(), explicit.delta_weight())
    A = idft2_real_reference(default.spectrum_A, default.indices_A, r, 12)
    B = idft2_real_reference(default.spectrum_B, default.indices_B, 10, r)
    if method == "fora":
        assert_close64(default.delta_weight(), B @ A)


# -----------------------------------------------------------------------------
# 8c. DFoRA's gradients: the norm detached (DoRA §4.3, default) or differentiated


def cosine_basis(indices, M, N):
    """(n, M, N): Re(IDFT2) of a spectrum with a single 1 at each of the n locations."""
    u, v = numpy64(indices)
    p, q = np.arange(M)[:, None, None], np.arange(N)[None, :, None]
    return np.moveaxis(np.cos(2 * np.pi * (u * p / M + v * q / N)) / (M * N), -1, 0)


@pytest.mark.parametrize("detach_norm", [True, False])
@settings(max_examples=15, deadline=None)
@given(case=cases(methods=("dfora",), max_dim=10))
def test_dfora_gradients_match_float64_reference(detach_norm, case):
    """With G = ∂L/∂W', V = W0 + ΔW, ν = ‖V‖_row, d = (G·V)_row / ν: ∂L/∂m = d, and
    ∂L/∂V = (m/ν) G with the norm detached, (m/ν) (G - (d/ν) V) with it differentiated;
    then through ΔW = (alpha/r) B̃ Ã to the two spectra."""
    case[3]["detach_norm"] = detach_norm
    adapter = randomise(build(case), seed=case[-1])
    _, i, o, kwargs, seed = case
    x = tokens(i, B=2, T=3, seed=seed)
    weights = torch.randn(2, 3, o, generator=torch.Generator().manual_seed(seed), dtype=F64)
    (adapter(x) * weights).sum().backward()

    G = numpy64(weights).reshape(-1, o).T @ numpy64(x).reshape(-1, i)  # ∂L/∂W' (out, in)
    r, scale, m = adapter.r, adapter.alpha / adapter.r, numpy64(adapter.magnitude)
    basis_A, basis_B = cosine_basis(adapter.indices_A, r, i), cosine_basis(adapter.indices_B, o, r)
    A = np.einsum("k,kmn->mn", numpy64(adapter.spectrum_A), basis_A)  # Ã (r, in)
    B = np.einsum("k,kmn->mn", numpy64(adapter.spectrum_B), basis_B)  # B̃ (out, r)
    V = numpy64(adapter.base.weight) + scale * B @ A
    norm = np.linalg.norm(V, axis=1)
    d = (G * V).sum(1) / norm
    grad_V = (m / norm)[:, None] * (G if detach_norm else G - (d / norm)[:, None] * V)
    assert_close64(adapter.magnitude.grad, d)
    assert_close64(adapter.spectrum_A.grad, np.einsum("kmn,mn->k", basis_A, scale * B.T @ grad_V))
    assert_close64(adapter.spectrum_B.grad, np.einsum("kmn,mn->k", basis_B, scale * grad_V @ A.T))


def test_dfora_detach_norm_must_be_a_bool():
    raises_with(["detach_norm", "'yes'"], spectral_ft.DFoRA, nn.Linear(6, 6), n=4, r=3, detach_norm="yes")


# -----------------------------------------------------------------------------
# 9. Invalid hyperparameters: ValueError with the numbers in it


def raises_with(substrings, fn, *args, **kwargs):
    with pytest.raises(ValueError) as error:
        fn(*args, **kwargs)
    for s in substrings:
        assert str(s) in str(error.value), f"{s!r} missing from: {error.value}"


@settings(max_examples=20, deadline=None)
@given(i=st.integers(1, 12), o=st.integers(1, 12), extra=st.integers(1, 50))
def test_too_many_coefficients_are_rejected_with_the_limit(i, o, extra):
    n = i * o + extra
    raises_with([f"n={n}", i * o], FourierFT, nn.Linear(i, o), n=n)
    raises_with([f"n={n}", i * o], LoCA, nn.Linear(i, o), n=n)  # (FoRA caps n: tests/test_baselines.py)


@settings(max_examples=20, deadline=None)
@given(i=st.integers(1, 12), o=st.integers(1, 12), extra=st.integers(1, 5))
def test_rank_above_min_in_out_is_rejected_for_spectral_and_foura(i, o, extra):
    r = min(i, o) + extra
    for cls in (SpectralAdapterA, SpectralAdapterR, FouRA):
        raises_with([f"r={r}", min(i, o)], cls, nn.Linear(i, o), r=r)


BAD_VALUES = [("r", 0), ("r", -2), ("n", 0), ("n", -1), ("r", 2.5), ("r", "4"), ("r", True)]
BAD_CASES = [(m, name, value) for m in ALL for name, value in BAD_VALUES if name in spectral_ft.hyperparameters(m)]


@pytest.mark.parametrize("method,name,value", BAD_CASES)
def test_bad_rank_or_count_is_rejected(method, name, value):
    kwargs = {**SMALL[method], name: value}
    raises_with([name, repr(value) if isinstance(value, (float, str, bool)) else f"{name}={value}"],
                METHODS[method], nn.Linear(6, 6), **kwargs)


@pytest.mark.parametrize("method,name,value", [c for c in BAD_CASES if c[2] in (0, 2.5, "4")])
def test_inject_rejects_bad_rank_or_count_with_value_error(method, name, value):
    raises_with([name], inject, tiny_encoder(), method, **{**SMALL[method], name: value})


def test_unknown_transform_is_rejected_with_the_allowed_ones():
    raises_with(["'fft'", "dct", "dft"], FouRA, nn.Linear(6, 6), r=2, transform="fft")


@pytest.mark.parametrize("method", ALL)
def test_base_must_be_a_linear_layer(method):
    raises_with(["base", "nn.Linear", "Conv1d"], METHODS[method], nn.Conv1d(6, 6, 1), **SMALL[method])


# -----------------------------------------------------------------------------
# 10. Low precision: float16 / bfloat16 inputs and autocast


def relative_error(actual, expected):
    actual, expected = actual.to(F64), expected.to(F64)
    return ((actual - expected).norm() / expected.norm()).item()


TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 5e-3}
LOW_PRECISION_CASES = [(m, False) for m in ALL] + [("foura", True)]


def _small_case(method, gate, seed):
    i, o = 12, 10  # non-square
    kwargs = {**SMALL[method], "gate": gate} if method == "foura" else dict(SMALL[method])
    if method == "vera":
        kwargs["r"] = 3 if seed % 2 else 64  # r below and above in
    return method, i, o, kwargs, seed


@pytest.mark.parametrize("method,gate", LOW_PRECISION_CASES)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("seed", [0, 1])
def test_half_precision_base_runs_in_input_dtype_and_stays_close(method, gate, dtype, seed):
    case = _small_case(method, gate, seed)
    torch.manual_seed(seed)
    base = nn.Linear(case[1], case[2]).to(dtype)  # converted before wrapping
    adapter = randomise(METHODS[method](base, **case[3]).eval(), seed)
    reference = copy.deepcopy(adapter)
    reference.base.float()  # the same (rounded) numbers, computed in float32
    x = tokens(case[1], B=3, T=7, dtype=dtype, seed=seed)
    with torch.no_grad():
        y, expected = adapter(x), reference(x.float())
    assert y.dtype == dtype
    assert relative_error(y, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("method,gate", LOW_PRECISION_CASES)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("seed", [0, 1])
def test_half_precision_input_with_float32_base_stays_close(method, gate, dtype, seed):
    case = _small_case(method, gate, seed)
    adapter = randomise(build(case, dtype=torch.float32), seed)
    x = tokens(case[1], B=3, T=7, dtype=dtype, seed=seed)
    with torch.no_grad():
        y, expected = adapter(x), adapter(x.float())
    assert y.dtype == dtype
    assert relative_error(y, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("method,gate", LOW_PRECISION_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_autocast_bfloat16_returns_autocast_dtype_and_stays_close(method, gate, seed):
    case = _small_case(method, gate, seed)
    adapter = randomise(build(case, dtype=torch.float32), seed)
    x = tokens(case[1], B=3, T=7, dtype=torch.float32, seed=seed)
    with torch.no_grad():
        expected = adapter(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = adapter(x)
            assert adapter.base(x).dtype == torch.bfloat16  # what a plain nn.Linear returns here
    assert y.dtype == torch.bfloat16
    assert relative_error(y, expected) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("method,gate", LOW_PRECISION_CASES)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_adapter_cast_whole_to_half_precision_still_runs(method, gate, dtype):
    """model.to(torch.bfloat16) after inject casts the adapters' own tensors too; the
    methods that need an FFT or a solve must still run (they compute ΔW in float32)."""
    case = _small_case(method, gate, 0)
    adapter = randomise(build(case, dtype=torch.float32), 0)
    x = tokens(case[1], B=3, T=7, dtype=dtype)
    reference = copy.deepcopy(adapter).to(dtype).float()  # the same rounded numbers in float32
    low = adapter.to(dtype)
    with torch.no_grad():
        y, expected = low(x), reference(x.float())
    assert y.dtype == dtype
    assert relative_error(y, expected) < TOLERANCE[dtype]


# -----------------------------------------------------------------------------
# 11. FouRA


@pytest.mark.parametrize("transform", ["dct", "dft"])
def test_foura_with_gate_refuses_to_merge(transform):
    adapter = FouRA(nn.Linear(6, 5), r=3, transform=transform, gate=True)
    for fn in (adapter.delta_weight, adapter.merge):
        raises_with(["gate"], fn)
    model = tiny_encoder()
    inject(model, "foura", r=2, gate=True)
    raises_with(["gate"], spectral_ft.merge, model)


@pytest.mark.parametrize("transform", ["dct", "dft"])
@settings(max_examples=15, deadline=None)
@given(i=st.integers(1, 24), o=st.integers(1, 24), data=st.data())
def test_foura_without_gate_merges_for_both_transforms(transform, i, o, data):
    r, seed = data.draw(st.integers(1, min(i, o))), data.draw(st.integers(0, 10_000))
    case = ("foura", i, o, dict(r=r, transform=transform, gate=False), seed)
    adapter = randomise(build(case), seed)
    x = tokens(i, seed=seed)
    with torch.no_grad():
        assert_close64(adapter.merge()(x), adapter(x))


def foura_gated_reference(adapter, x):
    """y = x W0ᵀ + b + F_out⁻¹(B (alpha/r · g ⊙ A F_in(x))) with g_i = sigmoid(a_i (H_i - b_i)),
    H_i the entropy over the T tokens of softmax(z[..., i]) (raw: not divided by log T), z = A F_in(x)."""
    F = dct_reference if adapter.transform == "dct" else real_dft_reference
    t = {name: numpy64(p) for name, p in own_parameters(adapter).items()}
    x = numpy64(x)  # (B, T, in)
    z = x @ F(adapter.in_features).T @ t["foura_A"].T  # (B, T, r)
    p = np.exp(z - z.max(axis=-2, keepdims=True))
    p /= p.sum(axis=-2, keepdims=True)
    H = -(p * np.log(p)).sum(axis=-2, keepdims=True)  # (B, 1, r)
    g = 1 / (1 + np.exp(-t["gate_scale"] * (H - t["gate_shift"])))  # (B, 1, r)
    update = (adapter.alpha / adapter.r * g * z) @ t["foura_B"].T @ F(adapter.out_features)  # (B, T, out)
    return x @ numpy64(adapter.base.weight).T + numpy64(adapter.base.bias) + update


@settings(max_examples=25, deadline=None)
@given(case=cases(methods=("foura",), max_dim=12, gate=True), T=st.integers(1, 6))
def test_foura_gated_output_equals_paper_equation(case, T):
    adapter = randomise(build(case), seed=case[-1])
    x = tokens(case[1], B=2, T=T, seed=case[-1])
    with torch.no_grad():
        assert_close64(adapter(x), foura_gated_reference(adapter, x))


@settings(max_examples=25, deadline=None)
@given(r=st.integers(1, 6), T=st.integers(1, 9), scale=st.floats(0.1, 5.0), seed=st.integers(0, 10_000))
def test_foura_gate_lies_strictly_between_0_and_1(r, T, scale, seed):
    """Strictly, in float64, by construction: H lies in [0, log T] and a, b in [-3, 3], so |a (H - b)| < 16,
    where float64's sigmoid is still inside (0, 1) (it rounds to 1 only past 36.7)."""
    adapter = FouRA(nn.Linear(8, 8, dtype=F64), r=r, gate=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (adapter.gate_scale, adapter.gate_shift):
            p.uniform_(-3.0, 3.0, generator=generator)
    z = scale * torch.randn(2, T, r, generator=generator, dtype=F64)
    g = adapter.rank_gate(z)
    assert g.shape == (2, 1, r)
    assert ((g > 0) & (g < 1)).all()


@settings(max_examples=25, deadline=None)
@given(T=st.integers(2, 9), transform=st.sampled_from(["dct", "dft"]), seed=st.integers(0, 10_000))
def test_foura_gate_is_invariant_to_token_permutation(T, transform, seed):
    """The entropy over tokens ignores their order: the gate is unchanged and the adapter's
    output is permuted with its input."""
    torch.manual_seed(seed)
    adapter = randomise(FouRA(nn.Linear(7, 5, dtype=F64), r=3, transform=transform, gate=True), seed)
    x = tokens(7, B=2, T=T, seed=seed)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed + 1))
    z = x @ adapter.foura_A.T.detach()  # any (B, T, r) features
    with torch.no_grad():
        assert_close64(adapter.rank_gate(z[:, perm]), adapter.rank_gate(z), tol=1e-12)
        assert_close64(adapter(x[:, perm]), adapter(x)[:, perm], tol=1e-12)


def test_foura_gate_depends_on_the_input():
    """No fixed matrix: at init (a = 1, b = 0) g = sigmoid(H), and two tokens with features 0 and d have
    H(d) = log(1 + e^d) - d e^d / (1 + e^d), which falls from 0.58 at d = 1 to 0.20 at d = 3."""
    adapter = FouRA(nn.Linear(4, 4, dtype=F64), r=1, gate=True)
    entropy = lambda d: math.log(1 + math.exp(d)) - d * math.exp(d) / (1 + math.exp(d))
    for d in (1.0, 3.0):
        z = torch.tensor([[[0.0], [d]]], dtype=F64)  # (1, T=2, r=1)
        assert_close64(adapter.rank_gate(z).reshape(()), 1 / (1 + math.exp(-entropy(d))), tol=1e-14)
    assert entropy(1.0) - entropy(3.0) > 0.35


# -----------------------------------------------------------------------------
# 12. Helpers: inject, merge, adapter_state_dict, load_adapter_state_dict


def expected_targets(model, targets):
    """Names of nn.Linear modules whose last dotted components are one of the targets."""
    names = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, nn.Linear) and any(parts[-len(t.split(".")):] == t.split(".") for t in targets):
            names.append(name)
    return names


STATE_KEYS = {"lora": {"lora_A", "lora_B"}, "vera": {"lambda_d", "lambda_b"},
              "fourierft": {"spectrum", "indices"},
              "fora": {"spectrum_A", "spectrum_B", "indices_A", "indices_B"},
              "dfora": {"spectrum_A", "spectrum_B", "indices_A", "indices_B", "magnitude"},
              "dora": {"lora_A", "lora_B", "magnitude"}, "oft": {"oft_R"}, "bitfit": {"bias"},
              "masked_lora": {"values_A", "values_B", "indices_A", "indices_B"},
              "loca": {"coefficients", "locations"}, "foura": {"foura_A", "foura_B"},
              "spectral_a": {"A_U", "A_V"}, "spectral_r": {"P_U", "P_V"}}


@settings(max_examples=20, deadline=None)
@given(method=st.sampled_from(ALL),
       targets=st.sampled_from([("query",), ("query", "value"), ("self.query", "key"), ("value", "subquery"),
                                ("layer.1.attention.self.key",)]))
def test_inject_wraps_exactly_the_targets_and_freezes_the_rest(method, targets):
    assume(method != "bitfit" or "subquery" not in targets)  # (no bias to train: an error, tests/test_baselines.py)
    model = tiny_encoder()
    names = inject(model, method, targets=targets, **SMALL[method])
    assert sorted(names) == sorted(expected_targets(tiny_encoder(), targets))
    assert not any(name.endswith("query_proj") for name in names)
    assert sorted(name for name, _ in adapters(model)) == sorted(names)
    own = [p for _, a in adapters(model) for p in own_parameters(a).values()]
    assert all(p.requires_grad for p in own)
    assert count_trainable(model) == sum(p.numel() for p in own) > 0
    inside = {id(p) for p in own}
    assert not any(p.requires_grad for p in model.parameters() if id(p) not in inside)


def test_inject_errors_name_the_allowed_values():
    raises_with(["'adalora'", "lora", "loca", "spectral_r"], inject, tiny_encoder(), "adalora")
    raises_with(["nope", "query_proj"], inject, tiny_encoder(), "lora", targets=("nope",))
    raises_with(["rank", "r", "alpha", "dropout"], inject, tiny_encoder(), "lora", rank=4)
    raises_with(["n_frequency", "scaling"], inject, tiny_encoder(), "fourierft", n_frequency=4)


@settings(max_examples=10, deadline=None)
@given(r=st.integers(4, 12), seed=st.integers(0, 10_000))
def test_vera_layers_share_one_random_pair(r, seed):
    model = tiny_encoder()
    names = inject(model, "vera", targets=("query", "value", "output"), r=r, seed=seed)
    layers = [model.get_submodule(name) for name in names]
    assert len({(m.in_features, m.out_features) for m in layers}) == 3  # (6,6), (6,4), (4,6)
    widest_in = max(layers, key=lambda m: m.in_features)
    tallest_out = max(layers, key=lambda m: m.out_features)
    for m in layers:  # every layer's pair is a corner slice of the same matrices
        assert torch.equal(m.vera_A, widest_in.vera_A[:, :m.in_features])
        assert torch.equal(m.vera_B, tallest_out.vera_B[:m.out_features])
    A, B = spectral_ft.vera_projections(r, widest_in.in_features, tallest_out.out_features, seed)  # the largest shape
    assert torch.equal(widest_in.vera_A, A) and torch.equal(tallest_out.vera_B, B)


def test_vera_pair_is_kaiming_uniform_with_gain_sqrt_2():
    """PEFT's bounds √(6 / fan_in), not nn.Linear's √6 times smaller ones: on one fixed large draw (no seed can
    make it fail), the entries fill [-bound, bound] with a uniform's standard deviation bound / √3."""
    A, B = spectral_ft.vera_projections(256, 768, 768, seed=0)  # (r, in), (out, r)
    for tensor, bound in ((A, math.sqrt(6 / 768)), (B, math.sqrt(6 / 256))):
        assert tensor.abs().max() <= bound and tensor.abs().max() > 0.999 * bound
        assert tensor.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)


@settings(max_examples=len(ALL) * 2, deadline=None)
@given(method=st.sampled_from(ALL), seed=st.integers(0, 1000))
def test_adapter_state_round_trip_restores_outputs(method, seed, tmp_path_factory):
    kwargs = {**SMALL[method], "gate": True} if method == "foura" else SMALL[method]
    model = tiny_encoder(seed)
    names = inject(model, method, **kwargs)
    randomise(model, seed + 1)
    state = adapter_state_dict(model)
    # only adapter tensors: per layer exactly the method's trainable tensors and locations
    assert {key.rsplit(".", 1)[0] for key in state} == set(names)
    expected_keys = STATE_KEYS[method] | ({"gate_scale", "gate_shift"} if method == "foura" else set())
    for name in names:
        assert {key.rsplit(".", 1)[1] for key in state if key.rsplit(".", 1)[0] == name} == expected_keys
    assert not any(".base." in key for key in state)

    path = tmp_path_factory.mktemp("state") / "adapter.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)

    fresh = tiny_encoder(seed)
    inject(fresh, method, **kwargs)
    x = tokens(6, seed=seed)
    with torch.no_grad():
        assert not torch.equal(fresh(x), model(x))  # the saved state matters
        load_adapter_state_dict(fresh, loaded)
        assert torch.equal(fresh(x), model(x))


# What a run's seed changes in a fresh adapter, method by method (the tensors of adapter_state_dict; VeRA's pair,
# rebuilt from `seed`, is checked beside them): torch's global generator, which a run seeds, always; a `seed`
# hyperparameter only where the authors draw it from the run's generator (SEED_FOLLOWS_RUN: the run passes it on).
RUN_SEED_CHANGES = {"lora": {"lora_A"}, "dora": {"lora_A"}, "oft": set(), "bitfit": set(), "masked_lora": {"values_A"},
                    "vera": set(), "fourierft": {"spectrum"}, "fora": {"spectrum_A"},
                    "dfora": {"spectrum_A"}, "loca": {"locations"}, "foura": {"foura_A"}, "spectral_a": set(),
                    "spectral_r": set()}


@pytest.mark.parametrize("method", ALL)
def test_the_run_seed_changes_what_the_authors_code_draws_from_the_run(method):
    assert spectral_ft.SEED_FOLLOWS_RUN == {"loca"} and set(RUN_SEED_CHANGES) == set(ALL)
    assert all("seed" in spectral_ft.hyperparameters(m) for m in spectral_ft.SEED_FOLLOWS_RUN)

    def fresh(run_seed):  # as a run builds it: the generator seeded, then `seed` = the run's where the policy says
        model = tiny_encoder(0)
        torch.manual_seed(run_seed)
        inject(model, method, **SMALL[method], **({"seed": run_seed} if method in spectral_ft.SEED_FOLLOWS_RUN else {}))
        return model

    first, again, other = (fresh(s) for s in (6, 6, 66))
    changed = {key.rsplit(".", 1)[1] for key, tensor in adapter_state_dict(first).items()
               if not torch.equal(tensor, adapter_state_dict(other)[key])}
    assert changed == RUN_SEED_CHANGES[method]
    assert all(torch.equal(t, adapter_state_dict(again)[k]) for k, t in adapter_state_dict(first).items())
    if method == "vera":  # the frozen pair stays PEFT's for seed 0 whatever the run's seed
        assert torch.equal(first.layer[0].attention.self.query.vera_A, other.layer[0].attention.self.query.vera_A)


def test_loading_another_methods_state_names_both_tensor_sets():
    lora = tiny_encoder()
    inject(lora, "lora", r=2)
    loca = tiny_encoder()
    inject(loca, "loca", n=5)
    raises_with(["lora_A", "lora_B", "coefficients", "locations"], load_adapter_state_dict, loca, adapter_state_dict(lora))


def test_loading_a_state_of_another_rank_names_the_shapes():
    small, large = tiny_encoder(), tiny_encoder()
    inject(small, "lora", r=2)
    inject(large, "lora", r=3)
    raises_with(["(2, 6)", "(3, 6)"], load_adapter_state_dict, large, adapter_state_dict(small))


# -----------------------------------------------------------------------------
# 13. The parameter-count table (RoBERTa-base, q and v of 12 layers)


def roberta_base_shaped():
    """12 layers of attention.self.{query, value} nn.Linear(768, 768), nothing else."""
    torch.manual_seed(0)
    model = nn.Module()
    model.layer = nn.ModuleList()
    for _ in range(12):
        layer = nn.Module()
        layer.attention = nn.Module()
        layer.attention.self = nn.Module()
        layer.attention.self.query = nn.Linear(768, 768)
        layer.attention.self.value = nn.Linear(768, 768)
        model.layer.append(layer)
    return model


PAPER_DEFAULTS = {"lora": dict(r=8, alpha=8.0), "vera": dict(r=1024, d_initial=0.1), "fourierft": dict(n=1000),
                  "loca": dict(n=1000, alpha=1.0), "fora": dict(n=500, r=32)}


@pytest.mark.parametrize("method", list(PAPER_DEFAULTS))
def test_defaults_are_the_papers_glue_settings(method):
    defaults = spectral_ft.hyperparameters(method)
    assert {k: defaults[k] for k in PAPER_DEFAULTS[method]} == PAPER_DEFAULTS[method]


@pytest.mark.parametrize("method,kwargs,count", [
    ("lora", {}, 294_912),
    ("vera", {}, 43_008),
    ("fourierft", {}, 24_000),
    ("fora", {}, 24_000),
    ("fora", dict(n=250), 12_000),
])
def test_trainable_counts_match_paper_table(method, kwargs, count):
    model = roberta_base_shaped()
    assert len(inject(model, method, **kwargs)) == 24  # defaults: the papers' settings
    assert count_trainable(model) == count


def test_loca_counts_locations_until_they_are_frozen():
    model = roberta_base_shaped()
    inject(model, "loca")
    assert count_trainable(model) == 72_000  # 1000 coefficients + 2 x 1000 locations, x 24
    LoCASchedule(model, B_a=1, B_l=1, T_s=0)
    assert count_trainable(model) == 24_000
    model = roberta_base_shaped()
    inject(model, "loca")
    schedule = LoCASchedule(model, B_a=1, B_l=1, T_s=2)
    for _ in range(2):
        schedule.step()
    assert count_trainable(model) == 24_000


# -----------------------------------------------------------------------------
# 14. The forward pass is x (W0 + ΔW)ᵀ + b, in every precision, and trains under autocast


@pytest.mark.parametrize("method", ALL)  # FouRA with gate=False (the gated one: test_foura_gated_output_...)
@settings(max_examples=10, deadline=None)
@given(data=st.data(), bias=st.booleans())
def test_forward_equals_dense_paper_reference(method, data, bias):
    """forward(x) = x (W0 + ΔW)ᵀ + b with ΔW from `delta_reference` (the paper's equation in numpy)."""
    case = data.draw(cases(methods=(method,), max_dim=12))
    adapter = randomise(build(case, bias=bias), seed=case[-1])
    x = tokens(case[1], B=2, T=3, seed=case[-1])
    W = numpy64(adapter.base.weight) + delta_reference(adapter)  # (out, in)
    trained_bias = adapter.bias if isinstance(adapter, BitFit) else adapter.base.bias  # (BitFit: its own)
    b = 0.0 if trained_bias is None else numpy64(trained_bias)
    with torch.no_grad():
        assert_close64(adapter(x), numpy64(x) @ W.T + b)


@pytest.mark.parametrize("method,gate", LOW_PRECISION_CASES)
def test_autocast_training_step_gives_float32_gradients_close_to_float32_ones(method, gate):
    """Under bfloat16 autocast the adapter's gradients (and the input's) stay float32 tensors
    close to the float32 step's: ΔW is computed in float32 and autograd differentiates it."""
    case = _small_case(method, gate, 0)
    if method == "dfora":
        case[3]["detach_norm"] = False
    adapter = randomise(build(case, dtype=torch.float32), 0).train()
    x = torch.randn(2, 7, case[1], generator=torch.Generator().manual_seed(3))
    weights = torch.randn(2, 7, case[2], generator=torch.Generator().manual_seed(4))
    grads = []
    for autocast in (False, True):
        leaf = x.clone().requires_grad_(True)
        adapter.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = (adapter(leaf).float() * weights).sum()
        loss.backward()
        grads.append([leaf.grad] + [p.grad for p in own_parameters(adapter).values() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) >= 2
    for low, high in zip(*reversed(grads)):
        assert low.dtype == torch.float32 and torch.isfinite(low).all()
        assert relative_error(low, high) < 3 * TOLERANCE[torch.bfloat16]


def test_vera_pair_stays_one_tensor_when_the_model_is_converted():
    """`model.to()` converts each layer's buffers separately; the shared pair lives in one
    module, so every layer still reads one A and one B afterwards (not one copy per layer)."""
    model = tiny_encoder(dtype=torch.float32)
    names = inject(model, "vera", targets=("query", "value"), r=3)
    model.to(F64)
    layers = [model.get_submodule(name) for name in names]
    assert len({m.projections.A.untyped_storage().data_ptr() for m in layers}) == 1
    assert len({m.projections.B.untyped_storage().data_ptr() for m in layers}) == 1
    assert all(m.vera_A.dtype == F64 for m in layers)
    randomise(model)
    assert model(tokens(6)).dtype == F64


@pytest.mark.parametrize("method", [m for m in ALL if m not in ("foura", "dfora", "dora", "oft")])  # (DoRA and DFoRA
# normalise W0 + ΔW, OFT rotates W0: their W' is no W0 + ΔW with ΔW free of W0)
def test_unfrozen_base_weight_gets_the_gradient_of_the_merged_weight(method):
    """x W0ᵀ + x ΔWᵀ gives ∂L/∂W0 = gᵀ x when someone unfreezes W0, as a plain nn.Linear would."""
    case = _small_case(method, False, 0)
    adapter = randomise(build(case), 0)
    adapter.base.weight.requires_grad_(True)
    x = tokens(case[1], B=2, T=3)
    weights = torch.randn(2, 3, case[2], generator=torch.Generator().manual_seed(2), dtype=F64)
    (adapter(x) * weights).sum().backward()
    expected = weights.reshape(-1, case[2]).T @ x.reshape(-1, case[1])  # gᵀ x (out, in)
    assert_close64(adapter.base.weight.grad, expected)


@settings(max_examples=30, deadline=None)
@given(leading=st.lists(st.integers(1, 3), max_size=2), in_features=st.integers(1, 6), out_features=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_add_linear_is_the_sum_of_y_and_the_product_in_any_leading_shape(leading, in_features, out_features, seed):
    """What every adapter's forward adds its branch with: y + x Wᵀ (one torch.addmm over the flattened tokens), for
    x of any leading shape (none: a single vector), in x's dtype."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*leading, in_features, generator=g, dtype=F64)
    y = torch.randn(*leading, out_features, generator=g, dtype=F64)
    W = torch.randn(out_features, in_features, generator=g, dtype=F64)
    out = spectral_ft._add_linear(y, x, W)
    assert out.shape == y.shape
    torch.testing.assert_close(out, y + x @ W.T, rtol=1e-12, atol=1e-12)
    low = spectral_ft._add_linear(y.bfloat16(), x.bfloat16(), W.float())  # a float32 factor on bf16 activations
    assert low.dtype == torch.bfloat16
