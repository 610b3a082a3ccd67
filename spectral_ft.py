"""
spectral_ft: spectral parameter-efficient fine-tuning, every method a plain nn.Module.

Each adapter wraps a frozen `nn.Linear` (kept as `.base`, computing y = x W0^T + b with
W0 of shape (out, in)) and adds an update ΔW of shape (out, in):

    lora        LoRA        ΔW = (alpha/r) B A                              Hu et al. 2021
    vera        VeRA        ΔW = diag(λ_b) B diag(λ_d) A, A, B frozen random   Kopiczko et al. 2023
    fourierft   FourierFT   ΔW = scaling · Re(IDFT2(F)), F sparse          Gao et al. 2024
    fora        FoRA        ΔW = (alpha/r) B̃ Ã, Ã, B̃ each Re(IDFT2(sparse))  "LoRA Unleashed" 2025
    dfora       DFoRA       W' = m ⊙ (W0 + ΔW) / ‖W0 + ΔW‖_row with FoRA's ΔW
    loca        LoCA        ΔW = alpha · iDCT2(S), S sparse, locations learnt   LoCA, ICLR 2025
    foura       FouRA       y += F⁻¹(B (alpha/r · g ⊙ A F(x))), on activations  Borse et al. 2024
    spectral_a  Spectral Adapter A: W' = W0 − U1S1V1ᵀ + (U1+A_U) S1 (V1+A_V)ᵀ  Zhang & Pilanci 2024
    spectral_r  Spectral Adapter R: W' = W0 − U1S1V1ᵀ + (U1R_U) S1 (V1R_V)ᵀ, R Cayley

Every class: `Cls(base, **hyperparameters)`, `forward(x)` for x of shape (..., in) in any
float dtype and under torch.autocast, `delta_weight()` -> (out, in) update computed in the
adapter's own precision (float32; float64 when the adapter is float64), and `merge()` -> a
plain nn.Linear with the same output. Each method is its paper's equations in plain torch,
differentiated by autograd (LoCA alone defines its location gradient, as its paper does).
Helpers: `inject`, `merge`, `adapter_state_dict`, `load_adapter_state_dict`,
`count_trainable`, and `LoCASchedule` for LoCA's alternating optimisation. `TokenMask` carries
FouRA's padding mask from the model's forward to its gates; `SEED_FOLLOWS_RUN` names the methods
whose `seed` follows the run's seed, as their authors' code draws it.

    import spectral_ft
    names = spectral_ft.inject(model, "loca", targets=("query", "value"), n=1000)
"""

import copy
import functools
import inspect
import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# Transforms: orthonormal DCT-II and an orthonormal real DFT, both along the last axis


@functools.lru_cache(maxsize=64)
def _dct_matrix_cached(size, dtype, device):
    k = torch.arange(size, dtype=torch.float64).unsqueeze(1)  # frequency (size, 1)
    i = torch.arange(size, dtype=torch.float64).unsqueeze(0)  # position (1, size)
    C = torch.cos(math.pi * (2 * i + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    C[0] /= math.sqrt(2.0)
    return C.to(dtype=dtype, device=device)  # (size, size), rows are the basis vectors


# Compiled code calls this, never traces it: dynamo would trace through the cache and rebuild C on the CPU at every
# pass (a copy that no CUDA graph can hold). One graph break; the cached C becomes the next graph's input.
@torch.compiler.disable
def dct_matrix(size, dtype=torch.float32, device="cpu"):
    """The orthonormal DCT-II matrix C (size, size): DCT(x) = C x, iDCT = Cᵀ. Built in float64, cached: never modify."""
    return _dct_matrix_cached(int(size), dtype, torch.device(device))


def dct(x):
    """Orthonormal DCT-II of x along its last axis."""
    return x @ dct_matrix(x.shape[-1], x.dtype, x.device).T


def idct(f):
    """Inverse of `dct` (the orthonormal DCT-III) along the last axis."""
    return f @ dct_matrix(f.shape[-1], f.dtype, f.device)


def real_dft(x):
    """The DFT of real x along its last axis as N real numbers, orthonormally.

    rfft(x, norm="ortho") gives N//2+1 complex values X_k. Frequencies 1..m (m = (N-1)//2)
    stand for themselves and their mirror N-k, so they enter scaled by √2; DC and, for
    even N, Nyquist are real and enter once. Output: [Re X_0, √2 Re X_1..m, Re X_N/2, √2 Im X_1..m].
    The map is orthogonal: ‖real_dft(x)‖ = ‖x‖ (Parseval) and `inverse_real_dft` undoes it.
    """
    N = x.shape[-1]
    m = (N - 1) // 2
    X = torch.fft.rfft(x, norm="ortho")  # (..., N//2 + 1)
    s = math.sqrt(2.0)
    return torch.cat([X.real[..., :1], s * X.real[..., 1:m + 1], X.real[..., m + 1:], s * X.imag[..., 1:m + 1]], dim=-1)


def inverse_real_dft(f):
    """Inverse of `real_dft` along the last axis."""
    N = f.shape[-1]
    m = (N - 1) // 2
    s = math.sqrt(2.0)
    nyquist = f[..., m + 1:N - m]  # one value for even N, none for odd N
    real = torch.cat([f[..., :1], f[..., 1:m + 1] / s, nyquist], dim=-1)
    imag = torch.cat([torch.zeros_like(f[..., :1]), f[..., N - m:] / s, torch.zeros_like(nyquist)], dim=-1)
    return torch.fft.irfft(torch.complex(real, imag), n=N, norm="ortho")



def sparse_idft2_real(values, indices, shape):
    """Re(IDFT2(F)) (rows, cols), F zero but F[indices[0], indices[1]] = values (distinct);
    the IDFT2 is torch.fft.ifft2 with its default normalisation (divides by rows·cols)."""
    dense = values.new_zeros(shape).index_put((indices[0], indices[1]), values)  # (rows, cols)
    return torch.fft.ifft2(dense).real


def random_locations(n, rows, cols, generator):
    """n distinct positions of a (rows, cols) grid from a seeded permutation -> (2, n) long,
    flat index L -> (L // cols, L % cols) (FoRA's Algorithm 1 divides by the wrong side)."""
    flat = torch.randperm(rows * cols, generator=generator)[:n]
    return torch.stack([flat // cols, flat % cols])


# -----------------------------------------------------------------------------
# Argument checks that name the argument and the allowed values


def _check_int(name, value, low=1, high=None, what=""):
    """value as a Python int: any integer type (int, numpy.int64, ...) but bool; else ValueError."""
    try:
        index = None if isinstance(value, bool) else operator.index(value)  # (a bool is an int to Python)
    except TypeError:
        index = None
    if index is None:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if index < low or (high is not None and index > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}={index} is out of range: allowed {allowed}{what}")
    return index


def _check_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_count(name, n, rows, cols, what):
    if _check_int(name, n) > rows * cols:
        raise ValueError(f"{name}={n} spectral coefficients do not fit a {rows}x{cols} {what} (max {rows * cols})")
    return operator.index(n)


def _kaiming_uniform(shape, fan_in, dtype, device):
    """nn.Linear's default init (Kaiming-uniform, a=√5): U(-1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape, dtype=dtype).uniform_(-bound, bound).to(device)


def _linear(x, weight, bias=None):
    """F.linear in x's dtype, like nn.Linear on x (under autocast, which casts again itself)."""
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


def _exact(fn):
    """Run the method with autocast off: ΔW is computed in the adapter's own precision."""
    @functools.wraps(fn)
    def wrapper(self, *args):
        with torch.autocast(self.base.weight.device.type, enabled=False):
            return fn(self, *args)
    return wrapper


# -----------------------------------------------------------------------------
# The base class: what every adapter shares


class Adapter(nn.Module):
    """A frozen nn.Linear `base` (W0 (out, in), b) plus the update ΔW (out, in) of `delta_weight()`,
    float32 (float64 for a float64 adapter) with autocast off. forward: y = x W0ᵀ + b + x ΔWᵀ,
    two GEMMs as in PEFT, so ΔW is never rounded into W0's half-precision step."""

    method = None  # the name in METHODS

    def __init__(self, base):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"base must be an nn.Linear, got {type(base).__name__}")
        if min(base.in_features, base.out_features) < 1:
            raise ValueError(f"base is nn.Linear({base.in_features}, {base.out_features}): an adapter needs in and out features >= 1")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features

    @property
    def dtype(self):
        """ΔW's precision: float64 if the adapter's own tensors are (the base's before it has any), else float32."""
        tensor = next(iter(self._parameters.values()), self.base.weight)
        return torch.float64 if tensor.dtype == torch.float64 else torch.float32

    @property
    def device(self):
        return self.base.weight.device

    def _up(self, *tensors):  # the tensors in `self.dtype` (upcast where the adapter was cast to half precision)
        return [t.to(self.dtype) for t in tensors]

    def merged_weight(self):  # W0 + ΔW (out, in)
        delta = self.delta_weight()
        return self.base.weight.to(delta.dtype) + delta

    def forward(self, x):
        return _linear(x, self.base.weight, self.base.bias) + _linear(x, self.delta_weight())  # x W0ᵀ + b + x ΔWᵀ

    @torch.no_grad()
    def merge(self):
        """A new nn.Linear like `base` (dtype, device, bias) whose weight is the merged one."""
        merged = copy.deepcopy(self.base)
        merged.weight.copy_(self.merged_weight())
        return merged


# -----------------------------------------------------------------------------
# Baselines


class LoRA(Adapter):
    """LoRA (Hu et al. 2021, eq. 3): ΔW = (alpha / r) · B A, forward y = x W0ᵀ + b + scaling · B(A(dropout(x))).

    lora_A (r, in) Kaiming-uniform as nn.Linear, lora_B (out, r) zeros, so ΔW = 0 at init.
    Dropout acts on the adapter's input only. Seed: lora_A comes from torch's global generator, so it
    follows the run's seed, as in microsoft/LoRA and PEFT (nn.init on the global generator).
    """

    method = "lora"

    def __init__(self, base, r=8, alpha=8.0, dropout=0.0):
        super().__init__(base)
        r = self.r = _check_int("r", r)
        self.alpha = _check_float("alpha", alpha)
        if not 0.0 <= _check_float("dropout", dropout) < 1.0:
            raise ValueError(f"dropout={dropout} is out of range: allowed [0, 1)")
        self.scaling = self.alpha / r
        self.lora_A = nn.Parameter(_kaiming_uniform((r, self.in_features), self.in_features, self.dtype, self.device))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=self.dtype, device=self.device))  # (out, r)
        self.dropout = nn.Dropout(dropout)

    @_exact
    def delta_weight(self):
        B, A = self._up(self.lora_B, self.lora_A)
        return self.scaling * (B @ A)  # (out, r) @ (r, in)

    def forward(self, x):
        down = _linear(self.dropout(x), self.lora_A)  # (..., r)
        return _linear(x, self.base.weight, self.base.bias) + self.scaling * _linear(down, self.lora_B)


def vera_projections(r, in_features, out_features, seed=0):
    """VeRA's frozen random pair (A (r, in), B (out, r)) in float32, as PEFT draws it for `seed`.

    One generator seeded with `seed` (PEFT's `projection_prng_key`) draws A, then B, each
    Kaiming-uniform with gain √2 (PEFT's `_kaiming_init`): U(-√(6/fan_in), √(6/fan_in)) with
    fan_in = in for A and r for B. `inject` draws them once at the largest adapted in and out;
    smaller layers take the corner slices A[:, :in], B[:out].
    """
    r, in_features, out_features = (_check_int(k, v) for k, v in (("r", r), ("in_features", in_features),
                                                                    ("out_features", out_features)))
    generator = torch.Generator().manual_seed(_check_int("seed", seed, low=0))
    bound_A, bound_B = math.sqrt(6.0 / in_features), math.sqrt(6.0 / r)
    A = torch.empty(r, in_features).uniform_(-bound_A, bound_A, generator=generator)  # (r, in)
    B = torch.empty(out_features, r).uniform_(-bound_B, bound_B, generator=generator)  # (out, r)
    return A, B


class VeRAProjections(nn.Module):
    """VeRA's frozen random pair A (r, in), B (out, r) as the buffers of one module that every
    layer holds: moving or casting the model converts the pair once (as each layer's own
    buffers, `model.to(device)` would make one copy per layer). Not saved: `vera_projections`
    rebuilds it from the seed."""

    def __init__(self, A, B):
        super().__init__()
        self.register_buffer("A", A, persistent=False)  # (r, in)
        self.register_buffer("B", B, persistent=False)  # (out, r)


class VeRA(Adapter):
    """VeRA (Kopiczko et al. 2023, eq. 1): ΔW = diag(λ_b) · B · diag(λ_d) · A.

    vera_A (r, in) and vera_B (out, r) are frozen random matrices shared by every layer
    (one `VeRAProjections` module, sliced per layer), PEFT's for the same seed
    (`vera_projections`) and rebuilt from it (so not saved); lambda_d (r,) starts at
    d_initial and lambda_b (out,) at zero, so ΔW = 0 at init.
    Differs from PEFT: the update is formed as ΔW (out, in) and applied as x ΔWᵀ, where PEFT
    computes λ_b ⊙ (λ_d ⊙ x Aᵀ) Bᵀ on the activations (the same product; at r = 1024 > in
    one (out, in) GEMM over the tokens is cheaper than two through r); no VeRA dropout.
    Seed: the pair comes from `seed` alone (default 0), fixed whatever the run's, as PEFT's `projection_prng_key`.
    """

    method = "vera"

    def __init__(self, base, r=1024, d_initial=0.1, seed=0, projections=None):
        super().__init__(base)
        r = self.r = _check_int("r", r)
        self.d_initial = _check_float("d_initial", d_initial)
        self.seed = _check_int("seed", seed, low=0)
        if projections is None:
            projections = vera_projections(r, self.in_features, self.out_features, self.seed)
        if not isinstance(projections, VeRAProjections):
            projections = VeRAProjections(*projections)
        A, B = projections.A, projections.B
        if A.shape[0] != r or B.shape[1] != r or A.shape[1] < self.in_features or B.shape[0] < self.out_features:
            raise ValueError(f"projections of shapes A {tuple(A.shape)}, B {tuple(B.shape)} do not fit r={r} on a "
                             f"({self.out_features}, {self.in_features}) layer: need A (r, >= in), B (>= out, r)")
        self.projections = projections.to(self.device, self.dtype)  # shared: converted in place, once
        self.lambda_d = nn.Parameter(torch.full((r,), self.d_initial, dtype=self.dtype, device=self.device))  # (r,)
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, dtype=self.dtype, device=self.device))  # (out,)

    @property
    def vera_A(self):
        return self.projections.A[:, :self.in_features]  # (r, in)

    @property
    def vera_B(self):
        return self.projections.B[:self.out_features]  # (out, r)

    @_exact
    def delta_weight(self):
        lambda_b, B, lambda_d, A = self._up(self.lambda_b, self.vera_B, self.lambda_d, self.vera_A)
        return (lambda_b[:, None] * B * lambda_d) @ A  # diag(λ_b) B diag(λ_d) (out, r) @ A (r, in)


class FourierFT(Adapter):
    """FourierFT (Gao et al. 2024, eq. 2-3): ΔW = scaling · Re(IDFT2(F)).

    F (out, in) is zero except at n fixed random `indices` (2, n) (rows; cols) holding the
    trainable `spectrum` (n,). Locations follow PEFT's convention (randperm of out·in from
    `seed`, row = i // in, col = i % in), so a seed gives the same locations in both. The
    spectrum starts standard normal, as the reference code does: ΔW ≠ 0 at init. The FFT
    runs in float32 whatever the input dtype (torch has no bfloat16 FFT). Seed: the indices come
    from `seed` alone (default 777), fixed whatever the run's, as PEFT's `random_loc_seed` (the
    authors' GLUE scripts fix theirs too: --share_entry, entry_seed 2024); the spectrum comes from
    torch's global generator, so it follows the run's seed, as in both.
    """

    method = "fourierft"

    def __init__(self, base, n=1000, scaling=150.0, seed=777):
        super().__init__(base)
        n = self.n = _check_count("n", n, self.out_features, self.in_features, "weight matrix")
        self.scaling = _check_float("scaling", scaling)
        self.seed = _check_int("seed", seed, low=0)
        generator = torch.Generator().manual_seed(self.seed)
        self.register_buffer("indices", random_locations(n, self.out_features, self.in_features, generator).to(self.device))  # (2, n)
        self.spectrum = nn.Parameter(torch.randn(n, dtype=self.dtype).to(self.device))  # (n,)

    @_exact
    def delta_weight(self):
        spectrum, = self._up(self.spectrum)
        return self.scaling * sparse_idft2_real(spectrum, self.indices, (self.out_features, self.in_features))


# -----------------------------------------------------------------------------
# FoRA and DFoRA


class FoRA(Adapter):
    """FoRA ("LoRA Unleashed", eq. 3-4): ΔW = (alpha / r) · B̃ Ã, with Ã (r, in) and B̃ (out, r) each Re(IDFT2) of a
    spectrum zero but n trainable coefficients at fixed random indices. The paper has no alpha: alpha=None (default)
    means alpha = r, scale 1, for any r. Init: spectrum_B = 0 (ΔW = 0); spectrum_A Kaiming-uniform, rescaled so that
    Var(Ã) = 1/(3·in), that of a Kaiming-uniform A'. Differs from the paper: that expected Var(A'), not one draw's.
    Seed (no public code): the indices come from `seed` alone (default 0), fixed whatever the run's, as FourierFT's;
    spectrum_A comes from torch's global generator, so it follows the run's seed.
    """

    method = "fora"

    def __init__(self, base, n=500, r=32, alpha=None, seed=0):
        super().__init__(base)
        r = self.r = _check_int("r", r)
        n = self.n = _check_count("n", n, r, min(self.in_features, self.out_features), f"spectrum (r={r} by min(in, out))")
        self.alpha = float(r) if alpha is None else _check_float("alpha", alpha)
        self.seed = _check_int("seed", seed, low=0)
        generator = torch.Generator().manual_seed(self.seed)
        self.register_buffer("indices_A", random_locations(n, r, self.in_features, generator).to(self.device))  # (2, n)
        self.register_buffer("indices_B", random_locations(n, self.out_features, r, generator).to(self.device))  # (2, n)
        self.spectrum_B = nn.Parameter(torch.zeros(n, dtype=self.dtype, device=self.device))  # (n,)
        spectrum_A = _kaiming_uniform((n,), self.in_features, self.dtype, self.device)  # (n,)
        A = sparse_idft2_real(spectrum_A, self.indices_A, (r, self.in_features))  # (r, in)
        variance = A.var(unbiased=False)
        if variance > 1e-6 * A.pow(2).mean():  # a lone DC coefficient gives a constant Ã: nothing to match
            spectrum_A = spectrum_A * torch.sqrt(1.0 / (3 * self.in_features) / variance)
        self.spectrum_A = nn.Parameter(spectrum_A)

    @_exact
    def delta_weight(self):
        spectrum_A, spectrum_B = self._up(self.spectrum_A, self.spectrum_B)
        A = sparse_idft2_real(spectrum_A, self.indices_A, (self.r, self.in_features))  # Ã (r, in)
        B = sparse_idft2_real(spectrum_B, self.indices_B, (self.out_features, self.r))  # B̃ (out, r)
        return self.alpha / self.r * (B @ A)  # (out, r) @ (r, in)


class DFoRA(FoRA):
    """DFoRA: DoRA's decomposition (Liu et al. 2024, eq. 5) with FoRA's ΔW,
    W' = m ⊙ (W0 + ΔW) / ‖W0 + ΔW‖_row (norm per output row), y = x W'ᵀ + b.

    m (out,) trainable, starts at ‖W0‖_row (W' = W0 at init). detach_norm=True (default): the
    norm is a constant in backward, as in DoRA §4.3 and PEFT (`.detach()`; the FoRA paper is
    silent); detach_norm=False differentiates it too. Seed: as FoRA.
    """

    method = "dfora"

    def __init__(self, base, n=500, r=32, alpha=None, seed=0, detach_norm=True):
        super().__init__(base, n=n, r=r, alpha=alpha, seed=seed)
        if not isinstance(detach_norm, bool):
            raise ValueError(f"detach_norm must be True or False, got {detach_norm!r}")
        self.detach_norm = detach_norm
        self.magnitude = nn.Parameter(base.weight.detach().to(self.dtype).norm(dim=1))  # (out,)

    @_exact
    def merged_weight(self):
        V = self.base.weight.to(self.dtype) + FoRA.delta_weight(self)  # W0 + ΔW (out, in)
        norm = V.norm(dim=1).detach() if self.detach_norm else V.norm(dim=1)  # (out,)
        magnitude, = self._up(self.magnitude)
        return (magnitude / norm)[:, None] * V  # W' = m ⊙ V / ‖V‖_row (exactly W0 at init)

    def delta_weight(self):
        return self.merged_weight() - self.base.weight.to(self.dtype)  # W' - W0

    def forward(self, x):
        return _linear(x, self.merged_weight(), self.base.bias)


# -----------------------------------------------------------------------------
# LoCA


class _LoCADelta(torch.autograd.Function):
    """ΔW = alpha · C_outᵀ S C_in (LoCA eq. 1), S (out, in) zero but coefficients s at the grid
    points (r, c) of the locations: a sum of n rank-1 products of DCT basis rows, S never formed.
    A custom Function: rounding to the grid has no gradient, so LoCA defines one (eq. 3-5). With
    D = C_out (∂L/∂ΔW) C_inᵀ,  ∂L/∂s_k = alpha · D[r_k, c_k]  and, columns alike, for `difference`
        central   ∂L/∂row_k = clamp(alpha · s_k · (D[r_k+1, c_k] - D[r_k-1, c_k]) / 2, -1, 1) · (out - 1)
        forward   ∂L/∂row_k = clamp(alpha · s_k · (D[r_k+1, c_k] - D[r_k, c_k]), -1, 1) · (out - 1)
        backward  ∂L/∂row_k = clamp(alpha · s_k · (D[r_k, c_k] - D[r_k-1, c_k]), -1, 1) · (out - 1)
    (one-sided: Table 5's V4, V5); a neighbour off the grid is the point; · (out - 1): grid steps to [0, 1].
    """

    STEPS = {"central": (1, 1, 2), "forward": (1, 0, 1), "backward": (0, 1, 1)}  # (ahead, behind, divisor)

    @staticmethod
    def forward(ctx, coefficients, locations, C_out, C_in, alpha, difference="central"):
        rows, cols = _grid_indices(locations, len(C_out), len(C_in))  # (n,), (n,)
        ctx.save_for_backward(coefficients, rows, cols, C_out, C_in)
        ctx.alpha, ctx.difference = alpha, difference
        return (C_out[rows].T * (alpha * coefficients)) @ C_in[cols]  # (out, n) @ (n, in); repeated points add

    @staticmethod
    def backward(ctx, grad):
        coefficients, rows, cols, C_out, C_in = ctx.saved_tensors
        D = C_out @ grad @ C_in.T  # (out, in)
        ahead, behind, divisor = _LoCADelta.STEPS[ctx.difference]
        last_row, last_col, scale = len(C_out) - 1, len(C_in) - 1, ctx.alpha / divisor * coefficients
        d_row = D[(rows + ahead).clamp(max=last_row), cols] - D[(rows - behind).clamp(min=0), cols]  # (n,)
        d_col = D[rows, (cols + ahead).clamp(max=last_col)] - D[rows, (cols - behind).clamp(min=0)]  # (n,)
        grad_locations = torch.stack([(d_row * scale).clamp(-1, 1) * last_row, (d_col * scale).clamp(-1, 1) * last_col])
        return ctx.alpha * D[rows, cols], grad_locations, None, None, None, None


def _grid_indices(locations, rows, cols):
    """Locations (2, n) in [0, 1] -> the nearest grid points: rows (n,), cols (n,), long."""
    fraction = locations.detach().clamp(0, 1)
    return torch.round(fraction[0] * (rows - 1)).long(), torch.round(fraction[1] * (cols - 1)).long()


class LoCA(Adapter):
    """LoCA (Du et al., ICLR 2025, eq. 1): ΔW = alpha · iDCT2(S) = alpha · C_outᵀ S C_in, S (out, in)
    zero but n trainable `coefficients` (init 0) at trainable `locations` (2, n) (rows; cols) in
    [0, 1], rounded to the grid (`location_indices()`), with the gradient of _LoCADelta. Train
    with `LoCASchedule`. `seed`: an int, or a torch.Generator to draw the locations from. Seed: as the
    authors' layer draws them from the run's generator, `seed` should be the run's (SEED_FOLLOWS_RUN).
    Choices against the paper (P) or the authors' code (A, their PEFT fork's tuners/loca):
    - as A, not P: a location's step is clamped to [-1, 1] grid steps;
    - as A, not P's one-sided difference: at the grid's edge the missing neighbour is the point;
    - as A: every layer draws its own uniform locations (`inject` passes one generator); they
      may coincide, and coinciding coefficients add;
    - not as A: locations are clamped to [0, 1], not [0, 0.999], which leaves the last row and
      column out of reach for sizes above 501 (round(0.999 · 767) = 766).
    `difference`: the finite difference of the location gradient, "central" (eq. 3-5, the authors'
    code), or the one-sided "forward" / "backward" of the paper's ablation (Table 5, V4 / V5).
    """

    method = "loca"

    def __init__(self, base, n=1000, alpha=1.0, seed=0, difference="central"):
        super().__init__(base)
        self.n = _check_count("n", n, self.out_features, self.in_features, "weight matrix")
        self.alpha = _check_float("alpha", alpha)
        if difference not in _LoCADelta.STEPS:
            raise ValueError(f"difference={difference!r} is unknown: allowed {', '.join(_LoCADelta.STEPS)}")
        self.difference = difference
        if not isinstance(seed, torch.Generator):
            seed = torch.Generator().manual_seed(_check_int("seed", seed, low=0))
        locations = torch.rand(2, n, generator=seed, dtype=torch.float64)  # (2, n) uniform in [0, 1)
        self.locations = nn.Parameter(locations.to(self.dtype).to(self.device))
        self.coefficients = nn.Parameter(torch.zeros(n, dtype=self.dtype, device=self.device))  # (n,)

    def location_indices(self):
        """The (2, n) long grid points (rows; cols) the forward pass uses."""
        return torch.stack(_grid_indices(self.locations, self.out_features, self.in_features))

    def delta_weight(self):
        coefficients, locations = self._up(self.coefficients, self.locations)
        C_out = dct_matrix(self.out_features, coefficients.dtype, coefficients.device)  # (out, out)
        C_in = dct_matrix(self.in_features, coefficients.dtype, coefficients.device)  # (in, in)
        with torch.autocast(coefficients.device.type, enabled=False):  # ΔW in the adapter's precision
            return _LoCADelta.apply(coefficients, locations, C_out, C_in, self.alpha, self.difference)


class LoCASchedule:
    """LoCA's location search (§4.4), called once per optimiser step.

    mode "alternating" (the paper's LoCA): steps [0, T_s) cycle through B_a steps that train
    `coefficients` with the locations fixed, then B_l steps that train `locations` with the
    coefficients fixed. mode "joint" (Table 5's V3): steps [0, T_s) train both every step. From
    T_s on the locations are frozen for good (requires_grad=False: no longer counted as
    trainable) and only coefficients train. Locations are clamped to [0, 1] after each step.
    Table 5's other rows need no mode: V1 (coefficients only, at their random locations) is
    T_s = 0, V2 (alternating for the whole run) is T_s = the run's total steps.

        schedule = LoCASchedule(model, B_a=10, B_l=20, T_s=600)
        for batch in data: loss.backward(); optimizer.step(); optimizer.zero_grad(); schedule.step()
    """

    MODES = ("alternating", "joint")

    def __init__(self, model, B_a=10, B_l=20, T_s=600, mode="alternating"):
        self.adapters = [m for m in model.modules() if isinstance(m, LoCA)]
        if not self.adapters:
            raise ValueError("LoCASchedule needs a model with LoCA adapters; inject(model, 'loca') first")
        self.B_a, self.B_l, self.T_s = _check_int("B_a", B_a, 0), _check_int("B_l", B_l, 0), _check_int("T_s", T_s, 0)
        if B_a + B_l == 0:
            raise ValueError("B_a + B_l must be >= 1 (a cycle needs at least one step)")
        if mode not in self.MODES:
            raise ValueError(f"mode={mode!r} is unknown: allowed {', '.join(self.MODES)}")
        self.mode = mode
        self.step_count = 0
        self._apply()

    @property
    def phase(self):
        """'coefficients', 'locations', 'joint' (both train), or 'frozen' (locations fixed for good)."""
        if self.step_count >= self.T_s:
            return "frozen"
        if self.mode == "joint":
            return "joint"
        return "coefficients" if self.step_count % (self.B_a + self.B_l) < self.B_a else "locations"

    def _apply(self):
        phase = self.phase
        for adapter in self.adapters:
            for tensor, trainable in ((adapter.coefficients, phase != "locations"),
                                      (adapter.locations, phase in ("locations", "joint"))):
                tensor.requires_grad_(trainable)
                if not trainable:
                    tensor.grad = None  # so no optimiser applies a stale gradient

    @torch.no_grad()
    def step(self):
        for adapter in self.adapters:
            adapter.locations.clamp_(0.0, 1.0)
        self.step_count += 1
        self._apply()

    def state_dict(self):
        return {"step_count": self.step_count, "B_a": self.B_a, "B_l": self.B_l, "T_s": self.T_s, "mode": self.mode}

    def load_state_dict(self, state):
        self.step_count = int(state["step_count"])
        self._apply()


# -----------------------------------------------------------------------------
# FouRA


class TokenMask:
    """The padding mask (..., T) a model's forward sets once for its FouRA layers: 1 = real token, None = all."""
    mask = None


class FouRA(Adapter):
    """FouRA (Borse et al. 2024, eq. 4-6): LoRA in the frequency domain of the activations, y = x W0ᵀ + b +
    F_out⁻¹(B (alpha/r · g ⊙ A F_in(x))), F "dct" or "dft" (`real_dft`) along each token's features; foura_A (r, in)
    Kaiming-uniform, foura_B (out, r) zeros: ΔW = 0 at init (the community code starts B at nn.Linear's default).
    gate=False: a fixed ΔW, merged. gate=True: g_i = sigmoid(a_i (H_i - b_i)), H_i the entropy of softmax over the
    real tokens of z[..., i], z = A F_in(x) (..., T, r) (raw H, as the community code; the paper asks only for a gate
    learnt from z), a = `gate_scale` (init 1), b = `gate_shift` (init 0), the same in training and eval; merge()
    raises. The real tokens: `token_mask.mask`, of a TokenMask the model's forward sets (`inject` shares one).
    Seed: foura_A comes from torch's global generator, so it follows the run's seed (as the community code's)."""

    method = "foura"

    def __init__(self, base, r=16, alpha=32.0, transform="dct", gate=True, token_mask=None):
        super().__init__(base)
        self.r = _check_int("r", r, high=min(self.in_features, self.out_features), what=" (r <= min(in, out))")
        self.alpha = _check_float("alpha", alpha)
        if transform not in ("dct", "dft"):
            raise ValueError(f"transform={transform!r} is unknown: allowed 'dct', 'dft'")
        if not isinstance(gate, bool) or not isinstance(token_mask, (TokenMask, type(None))):
            raise ValueError(f"gate must be True or False, token_mask a TokenMask or None: {gate!r}, {token_mask!r}")
        self.transform, self.gate, self.scaling = transform, gate, self.alpha / r
        self.token_mask = TokenMask() if token_mask is None else token_mask  # shared with the model (see inject)
        like = dict(dtype=self.dtype, device=self.device)
        self.foura_A = nn.Parameter(_kaiming_uniform((r, self.in_features), self.in_features, **like))  # (r, in)
        self.foura_B = nn.Parameter(torch.zeros(self.out_features, r, **like))  # (out, r)
        if gate:
            self.gate_scale, self.gate_shift = nn.Parameter(torch.ones(r, **like)), nn.Parameter(torch.zeros(r, **like))

    def factors(self):
        """(down (r, in), up (out, r)): A F_in(x) = down x, F_out⁻¹(B u) = up u (as F⁻¹ = Fᵀ), once per step."""
        inverse = idct if self.transform == "dct" else inverse_real_dft
        A, B = self._up(self.foura_A, self.foura_B)
        with torch.autocast(A.device.type, enabled=False):  # in the adapter's precision
            return inverse(A), inverse(B.T).T

    def rank_gate(self, z, token_mask=None):
        """g (..., 1, r) from z (..., T, r), over the tokens where token_mask (..., T) is 1 (None: all)."""
        if z.dim() < 2 or (token_mask is not None and token_mask.shape[-1] != z.shape[-2]):
            raise ValueError(f"FouRA's gate needs x (..., T, in) and token_mask (..., T); got x {tuple(z.shape[:-1])} "
                             f"+ (in,) and token_mask {None if token_mask is None else tuple(token_mask.shape)}")
        real = (z.new_ones(z.shape[:-1]) if token_mask is None else token_mask).bool().unsqueeze(-1)  # (..., T, 1)
        log_p = torch.log_softmax(z.masked_fill(~real, -math.inf), dim=-2).masked_fill(~real, 0.0)  # (..., T, r)
        entropy = -(log_p.exp() * log_p).sum(dim=-2, keepdim=True)  # (..., 1, r)
        a, b = self._up(self.gate_scale, self.gate_shift)
        return torch.sigmoid(a * (entropy - b))

    def forward(self, x):
        down, up = self.factors()  # (r, in), (out, r)
        y = _linear(x, self.base.weight, self.base.bias)  # (..., T, out)
        z = _linear(x, down)  # (..., T, r)
        if self.gate:
            z = z * self.rank_gate(z.to(torch.promote_types(z.dtype, self.dtype)), self.token_mask.mask).to(z.dtype)
        return y + F.linear(z, (self.scaling * up).to(z.dtype))  # (..., T, out)

    def delta_weight(self):
        if self.gate:
            raise ValueError("FouRA with gate=True depends on its input: no fixed ΔW, it cannot merge; use gate=False")
        down, up = self.factors()
        with torch.autocast(up.device.type, enabled=False):
            return self.scaling * up @ down  # (out, in)


# -----------------------------------------------------------------------------
# Spectral Adapter


def top_singular(weight, r):
    """Thin SVD of weight (out, in) in float64 -> (U1 (out, r), S1 (r,), V1 (in, r)), top r."""
    U, S, Vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
    return U[:, :r], S[:r], Vh[:r].T


def cayley(P):
    """Cayley map R = (I + Q)(I - Q)⁻¹ with Q = (P - Pᵀ)/2: exactly orthogonal, R(0) = I.
    P (..., r, r): a batch of matrices maps in one call."""
    Q = (P - P.mT) / 2  # skew-symmetric
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    # I - Q is never singular for skew Q: inv_ex skips the error check (a GPU synchronisation).
    return (eye + Q) @ torch.linalg.inv_ex(eye - Q)[0]


class _SpectralAdapter(Adapter):
    """Shared by Spectral Adapter A and R: the top-r singular triplets of W0 as frozen buffers.

    The rest, W0 - U1 S1 V1ᵀ, stays merged inside the frozen base, so ΔW is written only in
    terms of U1, S1, V1 and the trainable tensors. Seed: none needed; no random draws (an SVD, zeros).
    """

    def __init__(self, base, r):
        super().__init__(base)
        limit = min(self.in_features, self.out_features)
        r = self.r = _check_int("r", r, high=limit, what=f" (r <= min(in, out) = {limit} singular vectors)")
        U1, S1, V1 = top_singular(base.weight, r)
        self.register_buffer("U1", U1.to(self.dtype), persistent=False)  # (out, r)
        self.register_buffer("S1", S1.to(self.dtype), persistent=False)  # (r,)
        self.register_buffer("V1", V1.to(self.dtype), persistent=False)  # (in, r)


class SpectralAdapterA(_SpectralAdapter):
    """Spectral Adapter A, additive (Zhang & Pilanci 2024, eq. 2):

        W' = W0 - U1 S1 V1ᵀ + (U1 + A_U) S1 (V1 + A_V)ᵀ,   A_U (out, r), A_V (in, r) zeros

    The same parameter count as LoRA of rank r, but ΔW can reach rank 2r (Lemma 3.1): it is the
    product of two rank-2r `factors`, applied on the activations as LoRA's are.
    Differs from the authors' code: W0 stays whole in the base and ΔW = W' - W0 is added
    (the same W'), where they store the residual W0 - U1 S1 V1ᵀ and the new top part.
    """

    method = "spectral_a"

    def __init__(self, base, r=8):
        super().__init__(base, r)
        self.A_U = nn.Parameter(torch.zeros(self.out_features, self.r, dtype=self.dtype, device=self.device))  # (out, r)
        self.A_V = nn.Parameter(torch.zeros(self.in_features, self.r, dtype=self.dtype, device=self.device))  # (in, r)

    def factors(self):
        """(up (out, 2r), down (2r, in)), ΔW = up @ down: (U1 + A_U) S1 (V1 + A_V)ᵀ - U1 S1 V1ᵀ multiplied
        out so that nothing cancels, U1 S1 A_Vᵀ + A_U S1 (V1 + A_V)ᵀ = [U1 S1, A_U S1] [A_V, V1 + A_V]ᵀ."""
        U1, S1, V1, A_U, A_V = self._up(self.U1, self.S1, self.V1, self.A_U, self.A_V)
        with torch.autocast(U1.device.type, enabled=False):  # in the adapter's precision
            return torch.cat([U1 * S1, A_U * S1], dim=1), torch.cat([A_V, V1 + A_V], dim=1).T

    @_exact
    def delta_weight(self):
        up, down = self.factors()
        return up @ down  # (out, 2r) @ (2r, in)

    def forward(self, x):  # on the activations, as LoRA: x W0ᵀ + b + (x downᵀ) upᵀ
        up, down = self.factors()
        return _linear(x, self.base.weight, self.base.bias) + _linear(_linear(x, down), up)


class SpectralAdapterR(_SpectralAdapter):
    """Spectral Adapter R, rotational (Zhang & Pilanci 2024, eq. 3):

        W' = W0 - U1 S1 V1ᵀ + (U1 R_U) S1 (V1 R_V)ᵀ,   R = cayley(P), P (r, r) zeros -> R = I

    R_U, R_V are exactly orthogonal, so W' keeps the singular values of W0 (Lemma 4.1).
    Trainable: P_U, P_V, 2r² parameters. Differs from the authors' code as Spectral Adapter A.
    """

    method = "spectral_r"

    def __init__(self, base, r=8):
        super().__init__(base, r)
        self.P_U = nn.Parameter(torch.zeros(self.r, self.r, dtype=self.dtype, device=self.device))  # (r, r)
        self.P_V = nn.Parameter(torch.zeros(self.r, self.r, dtype=self.dtype, device=self.device))  # (r, r)

    def rotations(self):
        """(R_U, R_V), each (r, r) orthogonal: one batched Cayley map (one matrix inverse, not two)."""
        R_U, R_V = cayley(torch.stack(self._up(self.P_U, self.P_V)))  # (2, r, r)
        return R_U, R_V

    @_exact
    def delta_weight(self):
        R_U, R_V = self.rotations()
        U1, S1, V1 = self._up(self.U1, self.S1, self.V1)
        core = (R_U * S1) @ R_V.T - torch.diag(S1)  # (r, r): R_U S1 R_Vᵀ - S1
        return U1 @ core @ V1.T  # (U1 R_U) S1 (V1 R_V)ᵀ - U1 S1 V1ᵀ (out, in)


# -----------------------------------------------------------------------------
# Working with whole models

METHODS = {
    "lora": LoRA,
    "vera": VeRA,
    "fourierft": FourierFT,
    "fora": FoRA,
    "dfora": DFoRA,
    "loca": LoCA,
    "foura": FouRA,
    "spectral_a": SpectralAdapterA,
    "spectral_r": SpectralAdapterR,
}

# BERT/RoBERTa name their attention projections query/value, DeBERTa-v2/v3 query_proj/value_proj.
DEFAULT_TARGETS = ("query", "value", "query_proj", "value_proj")

# Seeds as the authors use them. A method's `seed` hyperparameter drives its random locations or frozen matrices.
# The methods named here draw those, in their authors' code, from the run's own generator: their `seed` should
# default to the run's seed (train.py's --seed; --adapter-seed still pins it). LoCA: its layer calls uniform_ on the
# global generator, which the run seeds. The others keep a fixed reference seed whatever the run's: VeRA 0 (PEFT's
# projection_prng_key), FourierFT 777 (PEFT's random_loc_seed; the authors' GLUE scripts fix theirs too), FoRA and
# DFoRA 0 (no public code; as FourierFT). Draws without `seed` (LoRA's, FouRA's A, FoRA's spectrum_A, FourierFT's
# spectrum) come from torch's global generator, which the run seeds: they follow the run's seed in every method.
SEED_FOLLOWS_RUN = frozenset({"loca"})


def hyperparameters(method):
    """{name: default} of a method's hyperparameters, e.g. hyperparameters('loca')."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: allowed {', '.join(METHODS)}")
    parameters = list(inspect.signature(METHODS[method].__init__).parameters.values())[2:]
    return {p.name: p.default for p in parameters if p.name not in ("projections", "token_mask")}  # (inject shares)


def adapters(model):
    """(qualified name, adapter) for every adapter in the model."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, Adapter)]


def _replace(model, name, module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _matches(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def inject(model, method, targets=DEFAULT_TARGETS, **hyperparameters_):
    """Wrap every nn.Linear whose qualified name ends with a target in `method`'s adapter.

    A target matches whole dotted components: "query" matches "attention.self.query", not
    "query_proj". The default reaches BERT/RoBERTa's query and value and DeBERTa's query_proj
    and value_proj. Freezes every other parameter of the model, leaving only the adapters'
    tensors trainable. Returns the replaced names. Hyperparameters are the method's keywords
    (see `hyperparameters(method)`); the defaults are the papers' RoBERTa-base GLUE settings.
    FouRA: its layers share one `TokenMask`, set as `model.token_mask`; the model's forward must set
    `model.token_mask.mask` to the batch's padding mask (model.py's classifiers do), e.g. with a hook.
    """
    allowed = hyperparameters(method)
    unknown = sorted(set(hyperparameters_) - set(allowed))
    if unknown:
        raise ValueError(f"{method} takes no hyperparameter {', '.join(map(repr, unknown))}: allowed {', '.join(allowed)}")
    targets = (targets,) if isinstance(targets, str) else targets
    if not isinstance(targets, (tuple, list, set)) or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be module name suffixes (non-empty strings), e.g. {DEFAULT_TARGETS}; "
                         f"got {targets!r}")
    targets = tuple(targets)
    if not targets:
        raise ValueError("targets is empty: name at least one module suffix, e.g. ('query', 'value')")
    adapted = [f"{name} ({a.method})" for name, a in adapters(model) if _matches(name, targets)]
    if adapted:
        raise ValueError(f"layers already adapted: {', '.join(adapted)}; one adapter per layer "
                         f"(spectral_ft.merge(model) first to stack a new one on the merged weights)")
    inside_adapter = {f"{name}.{child}" for name, a in adapters(model) for child, _ in a.named_modules() if child}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in inside_adapter}
    names = [name for name in linears if _matches(name, targets)]
    if not names:
        sample = ", ".join(list(linears)[:8]) or "none"
        raise ValueError(f"no nn.Linear's name ends with any of targets={targets}; linear layers here: {sample}")
    cls = METHODS[method]
    extra = {}
    if cls is VeRA:  # one shared random pair, drawn at the largest shape
        settings = {**allowed, **hyperparameters_}
        largest_in = max(linears[n].in_features for n in names)
        largest_out = max(linears[n].out_features for n in names)
        extra["projections"] = VeRAProjections(*vera_projections(settings["r"], largest_in, largest_out, settings["seed"]))
    if cls is LoCA:  # one generator for the model: each layer draws its own locations from it, in module order
        seed = _check_int("seed", hyperparameters_.get("seed", allowed["seed"]), low=0)
        hyperparameters_["seed"] = torch.Generator().manual_seed(seed)
    if cls is FouRA:  # one TokenMask for the model's FouRA layers (a second inject reuses the first one's)
        shared = getattr(model, "token_mask", None)
        extra["token_mask"] = shared if isinstance(shared, TokenMask) else TokenMask()
    trainable, built = [p for p in model.parameters() if p.requires_grad], {}
    for name in names:  # every layer is built before the model changes
        try:
            built[name] = cls(linears[name], **hyperparameters_, **extra)
        except ValueError as error:
            for p in trainable:  # (the adapters built so far froze their base)
                p.requires_grad_(True)
            raise ValueError(f"layer {name!r}: {error}") from None
    model.requires_grad_(False)
    for name in names:
        _replace(model, name, built[name])
    if cls is FouRA:
        model.token_mask = extra["token_mask"]
    return names


def merge(model):
    """Fold every adapter into a plain nn.Linear, in place. Returns the merged names."""
    merged = adapters(model)
    for name, adapter in merged:
        _replace(model, name, adapter.merge())
    return [name for name, _ in merged]


def adapter_state_dict(model):
    """What the adapters need to be rebuilt: trainable tensors plus indices and locations.

    Never the frozen base weights, nor what a seed or the base rebuilds (VeRA's random
    matrices, the Spectral Adapter's singular vectors). Keys: '<layer>.<tensor>'.
    """
    state = {}
    for name, adapter in adapters(model):
        for key, tensor in adapter.state_dict().items():
            if not key.startswith("base."):
                state[f"{name}.{key}"] = tensor
    return state


def load_adapter_state_dict(model, state):
    """Restore `adapter_state_dict` output into a model with the same adapters injected."""
    expected = adapter_state_dict(model)
    if not expected:
        raise ValueError("the model has no adapters: inject(model, method, ...) with the saved method first")
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict of tensors (adapter_state_dict's output), got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"adapter state {key!r} is a {type(value).__name__}, not a tensor")
        if not torch.isfinite(value).all():
            raise ValueError(f"adapter state {key!r} holds non-finite values (inf or nan): the run that saved it "
                             f"diverged; load an earlier state")
    for name, adapter in adapters(model):
        want = sorted(k[len(name) + 1:] for k in expected if k.startswith(name + "."))
        have = sorted(k[len(name) + 1:] for k in state if k.startswith(name + ".") and "." not in k[len(name) + 1:])
        if want != have:
            raise ValueError(f"adapter state does not fit layer {name!r}: the model's {adapter.method} adapter holds "
                             f"{', '.join(want)} but the state holds {', '.join(have) or 'nothing'} "
                             f"(saved from another method or other targets?)")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"adapter state has {len(unexpected)} entries for layers without an adapter, e.g. "
                         f"{', '.join(unexpected[:5])}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f"adapter state {key!r} has shape {tuple(state[key].shape)}, the model needs "
                             f"{tuple(tensor.shape)} (other hyperparameters or another model size?)")
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(state[key])


def count_trainable(model):
    """Number of parameters with requires_grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
