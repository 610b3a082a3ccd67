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
from torch.utils.weak import WeakTensorKeyDictionary

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


class _SparseIDFT2Real(torch.autograd.Function):
    """Σ_k s_k cos(2π(u_k p/M + v_k q/N)) (M, N): Re of the unnormalised inverse DFT2 of a
    spectrum zero but s_k at (u_k, v_k).

    Forward: the values go straight into the real parts of a complex zero spectrum, one
    inverse FFT. Backward, with G = ∂L/∂ΔW: ∂L/∂s_k = Σ_pq G_pq cos(...) = Re(DFT2(G))[u_k, v_k],
    one forward FFT of G read at the n locations (where autograd would convert, transform
    and gather through complex copies). Both FFTs unnormalised: normalisation is left to
    the caller, on the n values instead of an (M, N) pass each way.
    """

    @staticmethod
    def forward(ctx, values, indices, shape):
        spectrum = torch.zeros(shape, dtype=values.dtype.to_complex(), device=values.device)  # (M, N)
        torch.view_as_real(spectrum)[..., 0].index_put_((indices[0], indices[1]), values)  # real parts
        ctx.save_for_backward(indices)
        return torch.fft.ifft2(spectrum, norm="forward").real  # "forward": the inverse is not divided by M·N

    @staticmethod
    def backward(ctx, grad):
        indices, = ctx.saved_tensors
        return torch.fft.fft2(grad).real[indices[0], indices[1]], None, None


def sparse_idft2_real(values, indices, shape, scale=1.0):
    """scale · Re(IDFT2(F)) for F of `shape` zero except F[indices[0], indices[1]] = values (distinct).

    The IDFT2 is torch.fft.ifft2 with its default normalisation (divides by rows·cols);
    scale and normalisation are applied to the n values, before the transform.
    """
    rows, cols = shape
    return _SparseIDFT2Real.apply(values * (scale / (rows * cols)), indices, (rows, cols))


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


def _compute_dtype(x):
    """The dtype F.linear computes x in: autocast's, where it is on and x is float32 or half,
    else x's own."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.get_autocast_dtype(device)
    return x.dtype


_casts = WeakTensorKeyDictionary()  # input tensor -> ((its version, grad mode), its copy in the compute dtype)


def _cast_once(x):
    """x in its compute dtype (`_compute_dtype`), cast once per tensor.

    Under autocast every F.linear casts its input again, and each one that trains a weight
    keeps its own copy for backward. The adapters of one layer (query and value) read the
    same LayerNorm output: one cast serves both GEMMs, autograd keeps one copy (4096 x 768
    bf16 = 6.3 MB per layer at batch 32 x 128) and their input gradients meet in that copy
    before one cast back. Only tensors made by this forward pass (x.grad_fn set) are cached:
    an entry lives as long as x does and is dropped if x changes, so no step reuses the cast
    (and autograd node) of another one, nor does a captured CUDA graph leave its cast out."""
    dtype = _compute_dtype(x)
    if x.dtype == dtype:
        return x
    if x.grad_fn is None or torch.compiler.is_compiling():  # (the compiler removes repeated casts itself)
        return x.to(dtype)
    key = (x._version, torch.is_grad_enabled())
    cached = _casts.get(x)
    if cached is None or cached[0] != key or cached[1].dtype != dtype:
        cached = (key, x.to(dtype))
        _casts[x] = cached
    return cached[1]


def _matmul_into(a, b, dtype):
    """a @ b written in `dtype`: on CUDA, half-precision operands write float32 directly
    (fp32 accumulation kept, no bf16 rounding of the result and no cast kernel)."""
    if a.is_cuda and a.dtype in (torch.float16, torch.bfloat16) and dtype == torch.float32:
        return torch.mm(a, b, out_dtype=dtype)
    return (a @ b).to(dtype)


class _Linear(torch.autograd.Function):
    """y = x (W0 + ΔW)ᵀ + b, x in its compute dtype (`_cast_once`), W0 and b frozen, ΔW
    (out, in) in float32 (or float64); W0 may be None (y = x ΔWᵀ + b).

    Forward: W0 + ΔW summed and cast to x's dtype in one pass, one GEMM over the tokens.
    Backward: ∂L/∂x = g (W0 + ΔW) in x's dtype and ∂L/∂ΔW = gᵀ x, the one product over the
    tokens that training any weight needs, written straight in ΔW's dtype; nothing for the
    frozen W0 and b (unless someone unfroze them). Saved: x and the cast weight, what
    autocast's F.linear would keep.
    """

    @staticmethod
    def forward(ctx, x, weight0, delta, bias):
        if weight0 is None:
            weight = delta.to(x.dtype)  # (out, in)
        else:  # the sum in float32, rounded once to x's dtype
            weight = torch.add(weight0, delta, out=torch.empty(delta.shape, dtype=x.dtype, device=delta.device))
        needs_x, needs_w0, needs_delta, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if needs_w0 or needs_delta else None, weight if needs_x else None)
        ctx.dtypes = (None if weight0 is None else weight0.dtype, delta.dtype)
        return F.linear(x, weight, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        needs_x, needs_w0, needs_delta, needs_bias = ctx.needs_input_grad
        grad_x = grad_w0 = grad_delta = grad_bias = None
        if needs_x:
            grad_x = grad @ weight  # (..., in)
        grad2 = grad.reshape(-1, grad.shape[-1])  # (tokens, out)
        if needs_w0 or needs_delta:
            grad_weight = _matmul_into(grad2.T, x.reshape(-1, x.shape[-1]), ctx.dtypes[1])  # (out, in)
            grad_delta = grad_weight if needs_delta else None
            grad_w0 = grad_weight.to(ctx.dtypes[0]) if needs_w0 else None
        if needs_bias:
            grad_bias = grad2.sum(0)
        return grad_x, grad_w0, grad_delta, grad_bias


def _scaled(factor, t):
    """factor · t, with no kernel (and no gradient pass) when factor is 1 (LoRA's and FoRA's defaults)."""
    return t if factor == 1 else factor * t


def _plus_low_rank(x, base, down, up, scaling=1.0, dropout=None):
    """x W0ᵀ + b + scaling · (x downᵀ) upᵀ, down (k, in), up (out, k), for adapters that act on
    the activations (LoRA's dropout): x cast once for both GEMMs over the tokens, the up
    projection and the sum in one addmm."""
    x2 = _cast_once(x).reshape(-1, x.shape[-1])  # (tokens, in)
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

    forward computes x (W0 + ΔW)ᵀ + b: one GEMM over the tokens forward, two backward
    (∂L/∂x and ∂L/∂W = gᵀ x, the one product over the tokens any trained weight needs),
    while ΔW, its sum with W0 and their backward are (out, in)-sized work that does not
    grow with the batch. Only adapters that act on the activations (LoRA with dropout,
    FouRA's input-dependent gate) take the factored path instead.
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
        return next(iter(self._parameters.values()), None)  # every adapter's tensors are its own attributes

    @property
    def dtype(self):
        """The precision ΔW is computed in: float64 for a float64 adapter, else float32
        (also after .half() or .bfloat16(), whose tensors are upcast for the computation)."""
        tensor = self._own_tensor()
        own = self._made_in[0] if tensor is None else tensor.dtype
        return torch.float64 if own == torch.float64 else torch.float32

    def _up(self, *tensors):
        """The tensors in `self.dtype`: a no-op unless the adapter was cast to half precision."""
        dtype = self.dtype
        return [t if t.dtype == dtype else t.to(dtype) for t in tensors]

    @property
    def device(self):
        tensor = self._own_tensor()
        return self._made_in[1] if tensor is None else tensor.device

    def delta_weight(self):
        """ΔW (out, in), computed in the adapter's own precision (subclasses wrap it in @_exact)."""
        raise NotImplementedError

    def merged_weight(self):
        """W0 + ΔW (out, in), in the adapter's own precision."""
        delta = self.delta_weight()
        return self.base.weight.to(delta.dtype) + delta

    def forward(self, x):
        return _Linear.apply(_cast_once(x), self.base.weight, self.delta_weight(), self.base.bias)

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
        return _scaled(self.scaling, B) @ A  # (out, r) @ (r, in)

    def forward(self, x):
        if self.dropout.p > 0 and self.training:  # dropout acts on the adapter's input: no merged weight
            return _plus_low_rank(x, self.base, self.lora_A, self.lora_B, self.scaling, self.dropout)
        return super().forward(x)


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


class VeRAProjections(nn.Module):
    """VeRA's frozen random pair A (r, in), B (out, r) as the buffers of one module that every
    layer holds: moving or casting the model converts the pair once. (As each layer's own
    buffers, `model.to(device)` would make one copy per layer: 24 x 6 MB for RoBERTa-base
    at r = 1024.) Not saved: `vera_projections` rebuilds it from the seed."""

    def __init__(self, A, B):
        super().__init__()
        self.register_buffer("A", A, persistent=False)  # (r, in)
        self.register_buffer("B", B, persistent=False)  # (out, r)


class _RowColScale(torch.autograd.Function):
    """diag(a) M diag(b) (out, r) for a frozen M. Backward, with H = G ⊙ M:
    ∂L/∂a = H b and ∂L/∂b = Hᵀ a, two matrix-vector products (autograd's broadcasting would
    multiply and reduce twice); only M and the two vectors are kept for backward."""

    @staticmethod
    def forward(ctx, a, M, b):
        ctx.save_for_backward(a, M, b)
        return M * torch.outer(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, M, b = ctx.saved_tensors
        H = grad * M  # (out, r)
        return H @ b, None, H.T @ a


class VeRA(Adapter):
    """VeRA (Kopiczko et al. 2023, eq. 1): ΔW = diag(λ_b) · B · diag(λ_d) · A.

    vera_A (r, in) and vera_B (out, r) are frozen random matrices shared by every layer
    (one `VeRAProjections` module, sliced per layer), rebuilt from `seed` (so they are not
    saved); lambda_d (r,) starts at d_initial and lambda_b (out,) at zero, so ΔW = 0 at init.
    """

    method = "vera"

    def __init__(self, base, r=1024, d_initial=0.1, seed=0, projections=None):
        super().__init__(base)
        self.r = _check_int("r", r)
        self.d_initial = _check_float("d_initial", d_initial)
        self.seed = _check_int("seed", seed, low=0)
        if projections is None:
            projections = vera_projections(r, self.in_features, self.out_features, seed, self.dtype, self.device)
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
        return _RowColScale.apply(lambda_b, B, lambda_d) @ A  # (out, r) @ (r, in)


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
        spectrum, = self._up(self.spectrum)
        # the scaling acts on the n coefficients (the IDFT is linear), not on the (out, in) result
        return sparse_idft2_real(spectrum, self.indices, (self.out_features, self.in_features), self.scaling)


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
        return _scaled(self.scaling, B) @ A  # (out, r) @ (r, in)


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
        # W' - W0 written as ΔW_FoRA + (m / ‖V‖ - 1) ⊙ V: exactly zero at init, where
        # ΔW_FoRA = 0 and m = ‖W0‖_row come from the same float operations.
        update = FoRA.delta_weight(self)  # (out, in)
        direction = self.base.weight.to(update.dtype) + update  # V (out, in)
        magnitude, = self._up(self.magnitude)
        return update + (magnitude.unsqueeze(1) / direction.norm(dim=1, keepdim=True) - 1) * direction

    @_exact
    def merged_weight(self):
        update = FoRA.delta_weight(self)  # (out, in)
        magnitude, = self._up(self.magnitude)
        return _RowRescale.apply(self.base.weight.to(update.dtype) + update, magnitude)  # W' = m ⊙ V / ‖V‖_row

    def forward(self, x):
        return _Linear.apply(_cast_once(x), None, self.merged_weight(), self.base.bias)


class _RowRescale(torch.autograd.Function):
    """W' = m ⊙ V / ‖V‖_row for V (out, in), m (out,): DoRA's normalisation, gradients exact
    (the norm not detached). With G = ∂L/∂W', n = ‖V‖_row and d = (G·V)_row / n:
        ∂L/∂m = d,   ∂L/∂V = (m / n) (G - (d / n) V)
    in a few (out, in) passes, where autograd takes a dozen through norm, division and product.
    """

    @staticmethod
    def forward(ctx, direction, magnitude):
        norm = direction.norm(dim=1, keepdim=True)  # (out, 1)
        scale = magnitude.unsqueeze(1) / norm  # (out, 1)
        ctx.save_for_backward(direction, norm, scale)
        return scale * direction

    @staticmethod
    def backward(ctx, grad):
        direction, norm, scale = ctx.saved_tensors
        d = (grad * direction).sum(dim=1, keepdim=True) / norm  # (out, 1)
        return scale * (grad - (d / norm) * direction), d.squeeze(1)


# -----------------------------------------------------------------------------
# LoCA


class _LoCADelta(torch.autograd.Function):
    """ΔW = alpha · C_outᵀ S C_in (LoCA eq. 1), S (out, in) zero but coefficients s at the grid
    points (r, c) of the locations: a sum of n rank-1 products of DCT basis rows, S never formed.
    A custom Function: rounding to the grid has no gradient, so LoCA defines one (eq. 3-5). With
    D = C_out (∂L/∂ΔW) C_inᵀ,  ∂L/∂s_k = alpha · D[r_k, c_k]  and, columns alike,
        ∂L/∂row_k = clamp(alpha · s_k · (D[r_k+1, c_k] - D[r_k-1, c_k]) / 2, -1, 1) · (out - 1),
    a neighbour off the grid being the point itself; · (out - 1) turns grid steps into location units.
    """

    @staticmethod
    def forward(ctx, coefficients, locations, C_out, C_in, alpha):
        rows, cols = _grid_indices(locations, len(C_out), len(C_in))  # (n,), (n,)
        ctx.save_for_backward(coefficients, rows, cols, C_out, C_in)
        ctx.alpha = alpha
        return (C_out[rows].T * (alpha * coefficients)) @ C_in[cols]  # (out, n) @ (n, in); repeated points add

    @staticmethod
    def backward(ctx, grad):
        coefficients, rows, cols, C_out, C_in = ctx.saved_tensors
        D = C_out @ grad @ C_in.T  # (out, in)
        last_row, last_col, scale = len(C_out) - 1, len(C_in) - 1, ctx.alpha / 2 * coefficients
        d_row = D[(rows + 1).clamp(max=last_row), cols] - D[(rows - 1).clamp(min=0), cols]  # (n,)
        d_col = D[rows, (cols + 1).clamp(max=last_col)] - D[rows, (cols - 1).clamp(min=0)]  # (n,)
        grad_locations = torch.stack([(d_row * scale).clamp(-1, 1) * last_row, (d_col * scale).clamp(-1, 1) * last_col])
        return ctx.alpha * D[rows, cols], grad_locations, None, None, None


def _grid_indices(locations, rows, cols):
    """Locations (2, n) in [0, 1] -> the nearest grid points: rows (n,), cols (n,), long."""
    fraction = locations.detach().clamp(0, 1)
    return torch.round(fraction[0] * (rows - 1)).long(), torch.round(fraction[1] * (cols - 1)).long()


class LoCA(Adapter):
    """LoCA (Du et al., ICLR 2025, eq. 1): ΔW = alpha · iDCT2(S) = alpha · C_outᵀ S C_in, S (out, in)
    zero but n trainable `coefficients` (init 0) at trainable `locations` (2, n) (rows; cols) in
    [0, 1], rounded to the grid (`location_indices()`), with the gradient of _LoCADelta. Train
    with `LoCASchedule`. `seed`: an int, or a torch.Generator to draw the locations from.
    Choices against the paper (P) or the authors' code (A, their PEFT fork's tuners/loca):
    - as A, not P: a location's step is clamped to [-1, 1] grid steps;
    - as A, not P's one-sided difference: at the grid's edge the missing neighbour is the point;
    - as A: every layer draws its own uniform locations (`inject` passes one generator); they
      may coincide, and coinciding coefficients add;
    - not as A: locations are clamped to [0, 1], not [0, 0.999], which leaves the last row and
      column out of reach for sizes above 501 (round(0.999 · 767) = 766).
    """

    method = "loca"

    def __init__(self, base, n=1000, alpha=1.0, seed=0):
        super().__init__(base)
        self.n = _check_count("n", n, self.out_features, self.in_features, "weight matrix")
        self.alpha = _check_float("alpha", alpha)
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
            return _LoCADelta.apply(coefficients, locations, C_out, C_in, self.alpha)

    def forward(self, x):
        weight, bias = self.base.weight + self.delta_weight(), self.base.bias  # (out, in): W0 + ΔW
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


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
    """FouRA (Borse et al. 2024, eq. 4-6): LoRA in the frequency domain of the activations,
    y = x W0ᵀ + b + F_out⁻¹(B (alpha/r · g ⊙ A F_in(x))), F "dct" or "dft" (`real_dft`) along each token's
    features; foura_A (r, in) Kaiming-uniform, foura_B (out, r) zeros: ΔW = 0 at init (the community
    code starts B at nn.Linear's default). gate=False: a fixed ΔW, merged. gate=True: g_i =
    sigmoid(a_i (H_i - b_i)), H_i the entropy of softmax over the real tokens of z[..., i], z = A F_in(x)
    (..., T, r) (raw H, as the community code; the paper asks only for a gate learnt from z), a =
    `gate_scale` (init 1), b = `gate_shift` (init 0), the same in training and eval; merge() raises.
    Set `token_mask` (..., T), 1 = real token, None = all, before the forward (SequenceClassifier does).
    """

    method = "foura"

    def __init__(self, base, r=16, alpha=32.0, transform="dct", gate=True):
        super().__init__(base)
        self.r = _check_int("r", r, high=min(self.in_features, self.out_features), what=" (r <= min(in, out))")
        self.alpha = _check_float("alpha", alpha)
        if transform not in ("dct", "dft"):
            raise ValueError(f"transform={transform!r} is unknown: allowed 'dct', 'dft'")
        if not isinstance(gate, bool):
            raise ValueError(f"gate must be True or False, got {gate!r}")
        self.transform, self.gate, self.scaling, self.token_mask = transform, gate, self.alpha / r, None
        like = dict(dtype=self.dtype, device=self.device)
        self.foura_A = nn.Parameter(_kaiming_uniform((r, self.in_features), self.in_features, **like))  # (r, in)
        self.foura_B = nn.Parameter(torch.zeros(self.out_features, r, **like))  # (out, r)
        if gate:
            self.gate_scale, self.gate_shift = nn.Parameter(torch.ones(r, **like)), nn.Parameter(torch.zeros(r, **like))

    def factors(self):
        """(down (r, in), up (out, r)) with A F_in(x) = down x and F_out⁻¹(B u) = up u: as F⁻¹ = Fᵀ,
        down = F_in⁻¹ of A's rows and up = F_out⁻¹ of B's columns, once per step, not per token."""
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
        bias = self.base.bias
        y = F.linear(x, self.base.weight.to(x.dtype), None if bias is None else bias.to(x.dtype))  # (..., T, out)
        z = F.linear(x, down.to(x.dtype))  # (..., T, r)
        if self.gate:
            z = z * self.rank_gate(z.to(torch.promote_types(z.dtype, self.dtype)), self.token_mask).to(z.dtype)
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


class _Cayley(torch.autograd.Function):
    """R = (I + Q)(I - Q)⁻¹ = 2 K - I with K = (I - Q)⁻¹, Q = (P - Pᵀ)/2 (they commute).

    Backward: dR = 2 K dQ K, so ∂L/∂Q = 2 Kᵀ G Kᵀ and, Q being the skew part of P,
    ∂L/∂P = M - Mᵀ with M = Kᵀ G Kᵀ: two small batched products where autograd would
    differentiate the solve, the transposes and the sums one by one.
    """

    @staticmethod
    def forward(ctx, P):
        eye = _identity(P.shape[-1], P.dtype, P.device)
        # I - Q is never singular for skew Q, so the inverse's error check (a GPU synchronisation) is skipped.
        K = torch.linalg.inv_ex(eye - (P - P.mT) / 2)[0]  # (..., r, r)
        ctx.save_for_backward(K)
        return 2 * K - eye

    @staticmethod
    def backward(ctx, grad):
        K, = ctx.saved_tensors
        M = K.mT @ grad @ K.mT
        return M - M.mT


@functools.lru_cache(maxsize=64)
def _identity(size, dtype, device):
    """The (size, size) identity, cached per size, dtype and device; do not modify it in place."""
    return torch.eye(size, dtype=dtype, device=device)


def cayley(P):
    """Cayley map R = (I + Q)(I - Q)⁻¹ with Q = (P - Pᵀ)/2: exactly orthogonal, R(0) = I.
    P (..., r, r): a batch of matrices maps in one call."""
    return _Cayley.apply(P)


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
        return left @ right.T  # (out, 2r) @ (2r, in)


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
        """M (r, r) with ΔW = U1 M V1ᵀ: M = R_U S1 R_Vᵀ - S1 (one addmm, beta = -1)."""
        R_U, R_V = self.rotations()
        S1, = self._up(self.S1)
        return torch.addmm(torch.diag(S1), R_U * S1, R_V.T, beta=-1)

    @_exact
    def delta_weight(self):
        U1, V1 = self._up(self.U1, self.V1)
        return U1 @ (self.core() @ V1.T)  # (out, r) @ (r, in)


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
        extra["projections"] = VeRAProjections(*vera_projections(settings["r"], largest_in, largest_out, settings["seed"]))
    if cls is LoCA:  # one generator for the model: each layer draws its own locations from it, in module order
        seed = _check_int("seed", hyperparameters_.get("seed", allowed["seed"]), low=0)
        hyperparameters_["seed"] = torch.Generator().manual_seed(seed)
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
