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
plain nn.Linear with the same output. Helpers: `inject`, `merge`, `adapter_state_dict`,
`load_adapter_state_dict`, `count_trainable`, and `LoCASchedule` for LoCA's alternating
optimisation.

    import spectral_ft
    names = spectral_ft.inject(model, "loca", targets=("query", "value"), n=1000)
"""

import functools
import inspect
import math

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


def dct_matrix(size, dtype=torch.float32, device="cpu"):
    """The orthonormal DCT-II matrix C (size, size): DCT(x) = C x, C Cᵀ = I, so iDCT = Cᵀ.

    Built once in float64 and cached per (size, dtype, device); do not modify it in place.
    """
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
    """Re(IDFT2(F)) for F of `shape` zero except F[indices[0], indices[1]] = values.

    The IDFT2 is torch.fft.ifft2 with its default normalisation (divides by rows·cols).
    """
    spectrum = torch.zeros(shape, dtype=values.dtype, device=values.device)
    spectrum = spectrum.index_put((indices[0], indices[1]), values)  # (rows, cols), differentiable
    return torch.fft.ifft2(spectrum).real


def random_locations(n, rows, cols, generator):
    """n distinct positions of a (rows, cols) grid from a seeded permutation -> (2, n) long.

    Flat index L maps to (L // cols, L % cols): the column count divides, also for
    non-square grids (FoRA's Algorithm 1 divides by the wrong side when rows != cols).
    """
    flat = torch.randperm(rows * cols, generator=generator)[:n]
    return torch.stack([flat // cols, flat % cols])


# -----------------------------------------------------------------------------
# Argument checks that name the argument and the allowed values


def _check_int(name, value, low=1, high=None, what=""):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}={value} is out of range: allowed {allowed}{what}")
    return value


def _check_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_count(name, n, rows, cols, what):
    _check_int(name, n)
    if n > rows * cols:
        raise ValueError(f"{name}={n} spectral coefficients do not fit a {rows}x{cols} {what} (max {rows * cols})")
    return n


def _kaiming_uniform(shape, fan_in, dtype, device, generator=None):
    """nn.Linear's default init (Kaiming-uniform, a=√5): U(-1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    out = torch.empty(shape, dtype=dtype)
    out.uniform_(-bound, bound, generator=generator)
    return out.to(device)


def _linear(x, weight, bias=None):
    """F.linear in x's dtype (a no-op cast under autocast, which casts again itself)."""
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


def _plus_low_rank(x, base, down, up, scaling=1.0, dropout=None):
    """x W0ᵀ + b + scaling · (x downᵀ) upᵀ, down (k, in), up (out, k): two GEMMs over the
    tokens for the base and the down projection, and the up projection and the sum in one addmm."""
    x2 = x.reshape(-1, x.shape[-1])  # (tokens, in)
    y = _linear(x2, base.weight, base.bias)  # (tokens, out)
    h = _linear(x2 if dropout is None else dropout(x2), down)  # (tokens, k)
    y = torch.addmm(y, h, up.to(h.dtype).T, alpha=scaling)
    return y.view(*x.shape[:-1], y.shape[-1])


def _exact(fn):
    """Run fn with autocast off: ΔW is computed in the adapter's own precision."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with torch.autocast(self.base.weight.device.type, enabled=False):
            return fn(self, *args, **kwargs)

    return wrapper


# -----------------------------------------------------------------------------
# The base class: what every adapter shares


class Adapter(nn.Module):
    """A frozen nn.Linear `base` plus an update. Subclasses define `delta_weight()`.

    The default forward computes x (W0 + ΔW)ᵀ + b in one GEMM over the tokens; adapters
    whose update is low rank override it with the cheaper factored product.
    """

    method = None  # the name in METHODS

    def __init__(self, base):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"base must be an nn.Linear, got {type(base).__name__}")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        # Adapter tensors are made in float32 (float64 if the base is float64), whatever the base.
        self._made_in = (torch.float64 if base.weight.dtype == torch.float64 else torch.float32, base.weight.device)

    def _own_tensor(self):
        return next((p for name, p in self.named_parameters() if not name.startswith("base.")), None)

    @property
    def dtype(self):
        """The precision ΔW is computed in: float64 for a float64 adapter, else float32
        (also after .half() or .bfloat16(), whose tensors are upcast for the computation)."""
        tensor = self._own_tensor()
        own = self._made_in[0] if tensor is None else tensor.dtype
        return torch.float64 if own == torch.float64 else torch.float32

    def _up(self, *tensors):
        """The tensors in `self.dtype`: a no-op unless the adapter was cast to half precision."""
        return [t.to(self.dtype) for t in tensors]

    @property
    def device(self):
        tensor = self._own_tensor()
        return self._made_in[1] if tensor is None else tensor.device

    def delta_weight(self):
        raise NotImplementedError

    def merged_weight(self):
        delta = self.delta_weight()
        return self.base.weight.to(delta.dtype) + delta  # (out, in)

    def forward(self, x):
        return _linear(x, self.merged_weight(), self.base.bias)

    @torch.no_grad()
    def merge(self):
        """A new plain nn.Linear computing what this adapter computes (base dtype and device)."""
        weight = self.base.weight
        merged = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        merged.weight.copy_(self.merged_weight())
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged.requires_grad_(weight.requires_grad)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}"


# -----------------------------------------------------------------------------
# Baselines


class LoRA(Adapter):
    """LoRA (Hu et al. 2021, eq. 3): ΔW = (alpha / r) · B A.

    lora_A (r, in) Kaiming-uniform as nn.Linear, lora_B (out, r) zeros, so ΔW = 0 at init.
    Dropout acts on the adapter's input only.
    """

    method = "lora"

    def __init__(self, base, r=8, alpha=8.0, dropout=0.0):
        super().__init__(base)
        self.r = _check_int("r", r)
        self.alpha = _check_float("alpha", alpha)
        if not 0.0 <= _check_float("dropout", dropout) < 1.0:
            raise ValueError(f"dropout={dropout} is out of range: allowed [0, 1)")
        self.scaling = self.alpha / self.r
        self.lora_A = nn.Parameter(_kaiming_uniform((r, self.in_features), self.in_features, self.dtype, self.device))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=self.dtype, device=self.device))  # (out, r)
        self.dropout = nn.Dropout(dropout)

    @_exact
    def delta_weight(self):
        B, A = self._up(self.lora_B, self.lora_A)
        return self.scaling * B @ A  # (out, in)

    def forward(self, x):
        dropout = self.dropout if self.dropout.p > 0 else None
        return _plus_low_rank(x, self.base, self.lora_A, self.lora_B, self.scaling, dropout)


def vera_projections(r, in_features, out_features, seed=0, dtype=torch.float32, device="cpu"):
    """VeRA's frozen random pair (A (r, in), B (out, r)), Kaiming-uniform from `seed`.

    `inject` draws them once at the largest adapted shape; smaller layers take slices.
    """
    _check_int("r", r)
    _check_int("seed", seed, low=0)
    generator = torch.Generator().manual_seed(seed)
    A = _kaiming_uniform((r, in_features), in_features, dtype, device, generator)  # (r, in)
    B = _kaiming_uniform((out_features, r), r, dtype, device, generator)  # (out, r)
    return A, B


class VeRA(Adapter):
    """VeRA (Kopiczko et al. 2023, eq. 1): ΔW = diag(λ_b) · B · diag(λ_d) · A.

    vera_A (r, in) and vera_B (out, r) are frozen random matrices shared by every layer,
    rebuilt from `seed` (so they are not saved); lambda_d (r,) starts at d_initial and
    lambda_b (out,) at zero, so ΔW = 0 at init.
    """

    method = "vera"

    def __init__(self, base, r=1024, d_initial=0.1, seed=0, projections=None):
        super().__init__(base)
        self.r = _check_int("r", r)
        self.d_initial = _check_float("d_initial", d_initial)
        self.seed = _check_int("seed", seed, low=0)
        if projections is None:
            projections = vera_projections(r, self.in_features, self.out_features, seed, self.dtype, self.device)
        A, B = projections
        self.register_buffer("vera_A", A[:, :self.in_features].to(self.device, self.dtype), persistent=False)  # (r, in)
        self.register_buffer("vera_B", B[:self.out_features, :].to(self.device, self.dtype), persistent=False)  # (out, r)
        self.lambda_d = nn.Parameter(torch.full((r,), self.d_initial, dtype=self.dtype, device=self.device))  # (r,)
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, dtype=self.dtype, device=self.device))  # (out,)
        # With r large (1024 > 768 in the paper), x (W0 + ΔW)ᵀ is cheaper than the factored path.
        self.factored = r * (self.in_features + self.out_features) < self.in_features * self.out_features

    @_exact
    def delta_weight(self):
        lambda_b, B, lambda_d, A = self._up(self.lambda_b, self.vera_B, self.lambda_d, self.vera_A)
        return (lambda_b.unsqueeze(1) * B * lambda_d) @ A  # (out, in)

    def forward(self, x):
        if not self.factored:
            return super().forward(x)
        up = self.lambda_b.unsqueeze(1) * self.vera_B * self.lambda_d  # (out, r)
        return _plus_low_rank(x, self.base, self.vera_A, up)


class FourierFT(Adapter):
    """FourierFT (Gao et al. 2024, eq. 2-3): ΔW = scaling · Re(IDFT2(F)).

    F (out, in) is zero except at n fixed random `indices` (2, n) (rows; cols) holding the
    trainable `spectrum` (n,). Locations follow PEFT's convention (randperm of out·in from
    `seed`, row = i // in, col = i % in), so a seed gives the same locations in both. The
    spectrum starts standard normal, as the reference code does: ΔW ≠ 0 at init. The FFT
    runs in float32 whatever the input dtype (torch has no bfloat16 FFT).
    """

    method = "fourierft"

    def __init__(self, base, n=1000, scaling=150.0, seed=777):
        super().__init__(base)
        self.n = _check_count("n", n, self.out_features, self.in_features, "weight matrix")
        self.scaling = _check_float("scaling", scaling)
        self.seed = _check_int("seed", seed, low=0)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("indices", random_locations(n, self.out_features, self.in_features, generator).to(self.device))  # (2, n)
        self.spectrum = nn.Parameter(torch.randn(n, dtype=self.dtype).to(self.device))  # (n,)

    @_exact
    def delta_weight(self):
        shape = (self.out_features, self.in_features)
        spectrum, = self._up(self.spectrum)
        return self.scaling * sparse_idft2_real(spectrum, self.indices, shape)  # (out, in)


# -----------------------------------------------------------------------------
# FoRA and DFoRA


class FoRA(Adapter):
    """FoRA ("LoRA Unleashed", eq. 3-4): ΔW = (alpha / r) · B̃ Ã with

        Ã = Re(IDFT2(S_A)),  S_A (r, in) zero but n trainable `spectrum_A` at `indices_A`
        B̃ = Re(IDFT2(S_B)),  S_B (out, r) zero but n trainable `spectrum_B` at `indices_B`

    so the rank r can be large at a fixed cost of 2n parameters. Init: `spectrum_B` = 0
    (ΔW = 0); `spectrum_A` Kaiming-uniform, then rescaled by √(Var(A') / Var(Ã)) so that
    Var(Ã) equals the variance of a Kaiming-uniform A' of the same shape, 1 / (3·in)
    (we use that expected variance rather than one random draw of A'). Locations are
    distinct and drawn correctly for non-square matrices (see `random_locations`).
    """

    method = "fora"

    def __init__(self, base, n=500, r=32, alpha=32.0, seed=0):
        super().__init__(base)
        self.r = _check_int("r", r)
        self.n = _check_count("n", n, r, min(self.in_features, self.out_features), f"spectrum (r={r} by min(in, out))")
        self.alpha = _check_float("alpha", alpha)
        self.seed = _check_int("seed", seed, low=0)
        self.scaling = self.alpha / r
        generator = torch.Generator().manual_seed(seed)
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
    def factors(self):
        """(Ã (r, in), B̃ (out, r)), the spatial factors of eq. 3-4."""
        spectrum_A, spectrum_B = self._up(self.spectrum_A, self.spectrum_B)
        A = sparse_idft2_real(spectrum_A, self.indices_A, (self.r, self.in_features))  # (r, in)
        B = sparse_idft2_real(spectrum_B, self.indices_B, (self.out_features, self.r))  # (out, r)
        return A, B

    @_exact
    def delta_weight(self):
        A, B = self.factors()
        return self.scaling * B @ A  # (out, in)

    def forward(self, x):
        A, B = self.factors()
        return _plus_low_rank(x, self.base, A, B, self.scaling)


class DFoRA(FoRA):
    """DFoRA: DoRA's decomposition (Liu et al. 2024, eq. 5) with FoRA's update.

        W' = m ⊙ (W0 + ΔW) / ‖W0 + ΔW‖_row,  ΔW = (alpha/r) B̃ Ã as in FoRA

    The norm is taken per output row of the (out, in) weight; the trainable `magnitude`
    m (out,) starts at ‖W0‖_row, so W' = W0 at init. Unlike DoRA §4.3 we do not detach
    the norm in backward: gradients are exact (the saving is one (out, in) buffer).
    """

    method = "dfora"

    def __init__(self, base, n=500, r=32, alpha=32.0, seed=0):
        super().__init__(base, n=n, r=r, alpha=alpha, seed=seed)
        self.magnitude = nn.Parameter(base.weight.detach().to(self.dtype).norm(dim=1))  # (out,)

    @_exact
    def delta_weight(self):
        # m ⊙ V / ‖V‖ - W0 written as ΔW + (m / ‖V‖ - 1) ⊙ V: exactly zero at init, where
        # ΔW = 0 and m = ‖W0‖_row come from the same float operations.
        update = FoRA.delta_weight(self)  # (out, in)
        direction = self.base.weight.to(update.dtype) + update  # V (out, in)
        magnitude, = self._up(self.magnitude)
        return update + (magnitude / direction.norm(dim=1) - 1).unsqueeze(1) * direction

    forward = Adapter.forward


# -----------------------------------------------------------------------------
# LoCA


class _LoCADelta(torch.autograd.Function):
    """ΔW = alpha · C_outᵀ S C_in (LoCA eq. 1), S zero but coefficients at rounded locations.

    Forward: for n < out + in a sum of n rank-1 products of DCT basis rows, O(n·out·in),
    S never formed; otherwise the dense product C_outᵀ S C_in, O(out·in·(out + in)).
    Backward: with G = ∂L/∂ΔW, one DCT D = C_out G C_inᵀ gives (eq. 3-5)
        ∂L/∂s_k   = alpha · D[r_k, c_k]
        ∂L/∂row_k = alpha · s_k · (D[r_k+1, c_k] - D[r_k-1, c_k]) / 2   (columns alike),
    one-sided at the grid's edges; times (size - 1) since locations live in [0, 1].
    """

    @staticmethod
    def forward(ctx, coefficients, locations, C_out, C_in, alpha):
        rows, cols = _grid_indices(locations, C_out.shape[0], C_in.shape[0])
        ctx.save_for_backward(coefficients, rows, cols, C_out, C_in)
        ctx.alpha = alpha
        if len(coefficients) < C_out.shape[0] + C_in.shape[0]:
            return alpha * (C_out[rows].T * coefficients) @ C_in[cols]  # (out, n) @ (n, in)
        S = torch.zeros(C_out.shape[0], C_in.shape[0], dtype=coefficients.dtype, device=coefficients.device)
        S.index_put_((rows, cols), coefficients, accumulate=True)  # (out, in); colliding locations add
        return alpha * C_out.T @ S @ C_in

    @staticmethod
    def backward(ctx, grad):
        coefficients, rows, cols, C_out, C_in = ctx.saved_tensors
        alpha = ctx.alpha
        D = C_out @ grad @ C_in.T  # DCT2 of ∂L/∂ΔW (out, in)
        grad_coefficients = grad_locations = None
        if ctx.needs_input_grad[0]:
            grad_coefficients = alpha * D[rows, cols]  # (n,)
        if ctx.needs_input_grad[1]:
            d_rows = _difference(D, rows, cols, axis=0) * (C_out.shape[0] - 1)  # (n,), per unit of location
            d_cols = _difference(D, rows, cols, axis=1) * (C_in.shape[0] - 1)  # (n,)
            grad_locations = alpha * coefficients * torch.stack([d_rows, d_cols])  # (2, n)
        return grad_coefficients, grad_locations, None, None, None


def _grid_indices(locations, rows, cols):
    """Continuous locations (2, n) in [0, 1] -> nearest grid points (rows; cols), long."""
    locations = locations.detach()
    row = torch.round(locations[0] * (rows - 1)).long().clamp_(0, rows - 1)
    col = torch.round(locations[1] * (cols - 1)).long().clamp_(0, cols - 1)
    return row, col


def _difference(D, rows, cols, axis):
    """Central difference of D along `axis` at (rows, cols); one-sided at the edges."""
    index = rows if axis == 0 else cols
    last = D.shape[axis] - 1
    after, before = (index + 1).clamp(max=last), (index - 1).clamp(min=0)
    step = (after - before).clamp(min=1).to(D.dtype)  # 2 inside, 1 at an edge (0 for size 1 -> 1)
    if axis == 0:
        return (D[after, cols] - D[before, cols]) / step
    return (D[rows, after] - D[rows, before]) / step


class LoCA(Adapter):
    """LoCA (ICLR 2025, eq. 1): ΔW = alpha · iDCT2(S) = alpha · C_outᵀ S C_in.

    S (out, in) is zero except n trainable `coefficients` (n,) at trainable continuous
    `locations` (2, n) (rows; cols), kept scaled to [0, 1] as in the paper; the forward
    pass rounds them to the nearest grid point, `location_indices()`. Their gradient is
    the paper's finite-difference estimate (eq. 3-5, see _LoCADelta). Coefficients start
    at zero (ΔW = 0); locations at n distinct grid points drawn uniformly from `seed`.
    Train with `LoCASchedule`, which alternates coefficients and locations (§4.4).
    """

    method = "loca"

    def __init__(self, base, n=1000, alpha=1.0, seed=0):
        super().__init__(base)
        self.n = _check_count("n", n, self.out_features, self.in_features, "weight matrix")
        self.alpha = _check_float("alpha", alpha)
        self.seed = _check_int("seed", seed, low=0)
        generator = torch.Generator().manual_seed(seed)
        grid = random_locations(n, self.out_features, self.in_features, generator).to(self.dtype)  # (2, n)
        sizes = torch.tensor([self.out_features - 1, self.in_features - 1], dtype=self.dtype).clamp(min=1)
        self.locations = nn.Parameter((grid / sizes.unsqueeze(1)).to(self.device))  # (2, n) in [0, 1]
        self.coefficients = nn.Parameter(torch.zeros(n, dtype=self.dtype, device=self.device))  # (n,)

    def location_indices(self):
        """The (2, n) long grid positions (rows; cols) the forward pass uses."""
        return torch.stack(_grid_indices(self.locations, self.out_features, self.in_features))

    @_exact
    def delta_weight(self):
        C_out = dct_matrix(self.out_features, self.dtype, self.locations.device)  # (out, out)
        C_in = dct_matrix(self.in_features, self.dtype, self.locations.device)  # (in, in)
        coefficients, locations = self._up(self.coefficients, self.locations)
        return _LoCADelta.apply(coefficients, locations, C_out, C_in, self.alpha)


class LoCASchedule:
    """LoCA's alternating optimisation (§4.4), called once per optimiser step.

    Steps [0, T_s) cycle through B_a steps that train `coefficients` with the locations
    fixed, then B_l steps that train `locations` with the coefficients fixed. From T_s on
    the locations are frozen for good (requires_grad=False: no longer counted as
    trainable) and only coefficients train. Locations are clamped to [0, 1] after each step.

        schedule = LoCASchedule(model, B_a=10, B_l=20, T_s=600)
        for batch in data: loss.backward(); optimizer.step(); optimizer.zero_grad(); schedule.step()
    """

    def __init__(self, model, B_a=10, B_l=20, T_s=600):
        self.adapters = [m for m in model.modules() if isinstance(m, LoCA)]
        if not self.adapters:
            raise ValueError("LoCASchedule needs a model with LoCA adapters; inject(model, 'loca') first")
        self.B_a, self.B_l, self.T_s = _check_int("B_a", B_a, 0), _check_int("B_l", B_l, 0), _check_int("T_s", T_s, 0)
        if B_a + B_l == 0:
            raise ValueError("B_a + B_l must be >= 1 (a cycle needs at least one step)")
        self.step_count = 0
        self._apply()

    @property
    def phase(self):
        """'coefficients', 'locations', or 'frozen' (locations fixed for good)."""
        if self.step_count >= self.T_s:
            return "frozen"
        return "coefficients" if self.step_count % (self.B_a + self.B_l) < self.B_a else "locations"

    def _apply(self):
        phase = self.phase
        for adapter in self.adapters:
            for tensor, trainable in ((adapter.coefficients, phase != "locations"), (adapter.locations, phase == "locations")):
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
        return {"step_count": self.step_count, "B_a": self.B_a, "B_l": self.B_l, "T_s": self.T_s}

    def load_state_dict(self, state):
        self.step_count = int(state["step_count"])
        self._apply()


# -----------------------------------------------------------------------------
# FouRA


class FouRA(Adapter):
    """FouRA (Borse et al. 2024, eq. 4-6): a low-rank adapter in the frequency domain of
    the activations,  y = x W0ᵀ + b + F_out⁻¹( B (scaling · g ⊙ (A F_in(x))) ),

    F a transform along the feature axis of each token: "dct" (orthonormal DCT-II) or
    "dft" (`real_dft`, the DFT written as N real numbers, orthonormal). foura_A (r, in)
    Kaiming-uniform, foura_B (out, r) zeros (ΔW = 0 at init), scaling = alpha / r.

    gate=True: adaptive rank gating. With z = A F(x) (..., T, r), H_i the entropy over the
    T tokens of softmax(z[..., i]) divided by log T (so in [0, 1] whatever the length),
    g_i = sigmoid(a_i (H_i - b_i)) with trainable `gate_scale` a (init 1) and `gate_shift`
    b (init 0), as in the community code. The gate is the same function in training and
    evaluation, computed per sequence (padding tokens included), and needs x of shape
    (..., T, in). It depends on the input, so the adapter is no fixed matrix: with the
    gate on, `delta_weight()` and `merge()` raise; with it off ΔW = F_out⁻¹ B A F_in · scaling.
    """

    method = "foura"
    transforms = {"dct": (dct, idct), "dft": (real_dft, inverse_real_dft)}

    def __init__(self, base, r=16, alpha=32.0, transform="dct", gate=True):
        super().__init__(base)
        self.r = _check_int("r", r, high=min(self.in_features, self.out_features), what=" (r <= min(in, out))")
        self.alpha = _check_float("alpha", alpha)
        if transform not in self.transforms:
            raise ValueError(f"transform={transform!r} is unknown: allowed {sorted(self.transforms)}")
        if not isinstance(gate, bool):
            raise ValueError(f"gate must be True or False, got {gate!r}")
        self.transform, self.gate, self.scaling = transform, gate, self.alpha / r
        self.foura_A = nn.Parameter(_kaiming_uniform((r, self.in_features), self.in_features, self.dtype, self.device))  # (r, in)
        self.foura_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=self.dtype, device=self.device))  # (out, r)
        if gate:
            self.gate_scale = nn.Parameter(torch.ones(r, dtype=self.dtype, device=self.device))  # (r,)
            self.gate_shift = nn.Parameter(torch.zeros(r, dtype=self.dtype, device=self.device))  # (r,)

    def rank_gate(self, z):
        """g (..., 1, r) from the low-rank features z (..., T, r)."""
        T = z.shape[-2]
        p = torch.softmax(z, dim=-2)
        entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(dim=-2, keepdim=True)  # (..., 1, r)
        entropy = entropy / math.log(T) if T > 1 else torch.zeros_like(entropy)
        scale, shift = self._up(self.gate_scale, self.gate_shift)
        return torch.sigmoid(scale * (entropy - shift))

    @_exact
    def factors(self):
        """(down (r, in), up (out, r)) with A F_in(x) = down x and F_out⁻¹(B u) = up u.

        F is linear and orthogonal (F⁻¹ = Fᵀ), so A F_in = (F_in⁻¹ Aᵀ)ᵀ and F_out⁻¹ B act on
        the r rows of A and columns of B once per step, not on every token: exact, and the
        cost of LoRA plus the gate instead of two (in, in) transforms per token."""
        _, inverse_transform = self.transforms[self.transform]
        A, B = self._up(self.foura_A, self.foura_B)
        return inverse_transform(A), inverse_transform(B.T).T

    def forward(self, x):
        down, up = self.factors()
        if not self.gate:
            return _plus_low_rank(x, self.base, down, up, self.scaling)
        if x.dim() < 2:
            raise ValueError(f"FouRA's rank gate needs x of shape (..., T, in) with a token axis, got {tuple(x.shape)}")
        z = _linear(x, down)  # (..., T, r) = A F_in(x)
        z = z * self.rank_gate(z.to(torch.promote_types(z.dtype, self.dtype))).to(z.dtype)  # gate in float32+
        return _linear(x, self.base.weight, self.base.bias) + self.scaling * _linear(z, up)

    @_exact
    def delta_weight(self):
        if self.gate:
            raise ValueError("FouRA with gate=True depends on its input: it has no fixed ΔW and cannot be "
                             "merged; build it with gate=False to merge")
        down, up = self.factors()
        return self.scaling * up @ down  # F_out⁻¹ B A F_in · scaling (out, in)


# -----------------------------------------------------------------------------
# Spectral Adapter


def top_singular(weight, r):
    """Thin SVD of weight (out, in) in float64 -> (U1 (out, r), S1 (r,), V1 (in, r)), top r."""
    U, S, Vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
    return U[:, :r], S[:r], Vh[:r].T


def cayley(P):
    """Cayley map R = (I + Q)(I - Q)⁻¹ with Q = (P - Pᵀ)/2: exactly orthogonal, R(0) = I.
    P (..., r, r): a batch of matrices maps in one call."""
    Q = (P - P.mT) / 2
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    # (I - Q)⁻¹ (I + Q), equal since they commute; I - Q is never singular for skew Q, so the
    # solver's error check (a GPU synchronisation) is skipped.
    return torch.linalg.solve_ex(eye - Q, eye + Q)[0]


class _SpectralAdapter(Adapter):
    """Shared by Spectral Adapter A and R: the top-r singular triplets of W0 as frozen buffers.

    The rest, W0 - U1 S1 V1ᵀ, stays merged inside the frozen base, so ΔW is written only in
    terms of U1, S1, V1 and the trainable tensors.
    """

    def __init__(self, base, r):
        super().__init__(base)
        limit = min(self.in_features, self.out_features)
        self.r = _check_int("r", r, high=limit, what=f" (r <= min(in, out) = {limit} singular vectors)")
        U1, S1, V1 = top_singular(base.weight, r)
        self.register_buffer("U1", U1.to(self.dtype), persistent=False)  # (out, r)
        self.register_buffer("S1", S1.to(self.dtype), persistent=False)  # (r,)
        self.register_buffer("V1", V1.to(self.dtype), persistent=False)  # (in, r)


class SpectralAdapterA(_SpectralAdapter):
    """Spectral Adapter A, additive (Zhang & Pilanci 2024, eq. 2):

        W' = W0 - U1 S1 V1ᵀ + (U1 + A_U) S1 (V1 + A_V)ᵀ,   A_U (out, r), A_V (in, r) zeros

    The same parameter count as LoRA of rank r, but ΔW can reach rank 2r (Lemma 3.1).
    """

    method = "spectral_a"

    def __init__(self, base, r=8):
        super().__init__(base, r)
        self.A_U = nn.Parameter(torch.zeros(self.out_features, r, dtype=self.dtype, device=self.device))  # (out, r)
        self.A_V = nn.Parameter(torch.zeros(self.in_features, r, dtype=self.dtype, device=self.device))  # (in, r)

    def factors(self):
        """ΔW = left @ rightᵀ, left (out, 2r), right (in, 2r), expanded without cancellation:
        (U1 + A_U) S1 (V1 + A_V)ᵀ - U1 S1 V1ᵀ = U1 S1 A_Vᵀ + A_U S1 (V1 + A_V)ᵀ, exactly 0 at init."""
        U1, S1, V1, A_U, A_V = self._up(self.U1, self.S1, self.V1, self.A_U, self.A_V)
        left = torch.cat([U1 * S1, A_U * S1], dim=1)  # (out, 2r)
        right = torch.cat([A_V, V1 + A_V], dim=1)  # (in, 2r)
        return left, right

    @_exact
    def delta_weight(self):
        left, right = self.factors()
        return left @ right.T  # (out, in)

    def forward(self, x):
        left, right = self.factors()
        return _plus_low_rank(x, self.base, right.T, left)


class SpectralAdapterR(_SpectralAdapter):
    """Spectral Adapter R, rotational (Zhang & Pilanci 2024, eq. 3):

        W' = W0 - U1 S1 V1ᵀ + (U1 R_U) S1 (V1 R_V)ᵀ,   R = cayley(P), P (r, r) zeros -> R = I

    R_U, R_V are exactly orthogonal, so W' keeps the singular values of W0 (Lemma 4.1).
    Trainable: P_U, P_V, 2r² parameters.
    """

    method = "spectral_r"

    def __init__(self, base, r=8):
        super().__init__(base, r)
        self.P_U = nn.Parameter(torch.zeros(r, r, dtype=self.dtype, device=self.device))  # (r, r)
        self.P_V = nn.Parameter(torch.zeros(r, r, dtype=self.dtype, device=self.device))  # (r, r)

    def rotations(self):
        """(R_U, R_V), each (r, r) orthogonal (one batched Cayley map for both)."""
        R = cayley(torch.stack(self._up(self.P_U, self.P_V)))  # (2, r, r)
        return R[0], R[1]

    def core(self):
        """M (r, r) with ΔW = U1 M V1ᵀ: M = R_U S1 R_Vᵀ - S1."""
        R_U, R_V = self.rotations()
        S1, = self._up(self.S1)
        return (R_U * S1) @ R_V.T - torch.diag(S1)

    @_exact
    def delta_weight(self):
        U1, V1 = self._up(self.U1, self.V1)
        return U1 @ self.core() @ V1.T  # (out, in)

    def forward(self, x):
        V1, = self._up(self.V1)
        down = self.core() @ V1.T  # (r, in): ΔW = U1 (M V1ᵀ)
        return _plus_low_rank(x, self.base, down, self.U1)


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


def hyperparameters(method):
    """{name: default} of a method's hyperparameters, e.g. hyperparameters('loca')."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: allowed {', '.join(METHODS)}")
    parameters = list(inspect.signature(METHODS[method].__init__).parameters.values())[2:]
    return {p.name: p.default for p in parameters if p.name != "projections"}


def adapters(model):
    """(qualified name, adapter) for every adapter in the model."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, Adapter)]


def _replace(model, name, module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def inject(model, method, targets=("query", "value"), **hyperparameters_):
    """Wrap every nn.Linear whose qualified name ends with a target in `method`'s adapter.

    Freezes every other parameter of the model, leaving only the adapters' tensors
    trainable. Returns the replaced names. Hyperparameters are the method's keywords
    (see `hyperparameters(method)`); the defaults are the papers' RoBERTa-base GLUE settings.
    """
    allowed = hyperparameters(method)
    unknown = sorted(set(hyperparameters_) - set(allowed))
    if unknown:
        raise ValueError(f"{method} takes no hyperparameter {', '.join(map(repr, unknown))}: allowed {', '.join(allowed)}")
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if not targets:
        raise ValueError("targets is empty: name at least one module suffix, e.g. ('query', 'value')")
    inside_adapter = {f"{name}.{child}" for name, a in adapters(model) for child, _ in a.named_modules() if child}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in inside_adapter}
    names = [name for name in linears if any(name == t or name.endswith("." + t) for t in targets)]
    if not names:
        sample = ", ".join(list(linears)[:8]) or "none"
        raise ValueError(f"no nn.Linear's name ends with any of targets={targets}; linear layers here: {sample}")
    model.requires_grad_(False)
    cls = METHODS[method]
    extra = {}
    if cls is VeRA:  # one shared random pair, drawn at the largest shape
        settings = {**allowed, **hyperparameters_}
        largest_in = max(linears[n].in_features for n in names)
        largest_out = max(linears[n].out_features for n in names)
        extra["projections"] = vera_projections(settings["r"], largest_in, largest_out, settings["seed"])
    for name in names:
        _replace(model, name, cls(linears[name], **hyperparameters_, **extra))
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
