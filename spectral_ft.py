"""
spectral_ft: spectral parameter-efficient fine-tuning, every method a plain nn.Module.

Each adapter wraps a frozen `nn.Linear` (kept as `.base`, computing y = x W0^T + b with
W0 of shape (out, in)) and adds an update ΔW of shape (out, in):

    lora        LoRA        ΔW = (alpha/r) B A                              Hu et al. 2021
    dora        DoRA        W' = m ⊙ (W0 + ΔW) / ‖W0 + ΔW‖_row with LoRA's ΔW   Liu et al. 2024
    vera        VeRA        ΔW = diag(λ_b) B diag(λ_d) A, A, B frozen random   Kopiczko et al. 2023
    fourierft   FourierFT   ΔW = scaling · Re(IDFT2(F)), F sparse          Gao et al. 2024
    oft         OFT         W' = W0 Rᵀ, R block-diagonal orthogonal (Cayley)    Qiu et al. 2023
    bitfit      BitFit      ΔW = 0, the bias b trains                        Ben Zaken et al. 2022
    fora        FoRA        ΔW = (alpha/r) B̃ Ã, Ã, B̃ each Re(IDFT2(sparse))  "LoRA Unleashed" 2025
    dfora       DFoRA       W' = m ⊙ (W0 + ΔW) / ‖W0 + ΔW‖_row with FoRA's ΔW
    masked_lora masked LoRA ΔW = (alpha/r) B A, A and B sparse at fixed random entries (FoRA §4.5)
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
`count_trainable`, `also_trained` (tensors outside the adapters a method trains: BitFit's LayerNorm
biases), `fuse_spectral` (Spectral Adapter A's multi-adapter fusion), and `LoCASchedule` for LoCA's
alternating optimisation. `TokenMask` carries FouRA's padding mask from the model's forward to its gates;
`SEED_FOLLOWS_RUN` names the methods whose `seed` follows the run's seed, as their authors' code draws it.
What a method asks of a training loop (a parameter group of its own, a schedule, shared state, its PEFT
format) is declared on its class (`Adapter`'s class attributes), so a pipeline never names a method.

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


def _check_dropout(p):
    if not 0.0 <= _check_float("dropout", p) < 1.0:
        raise ValueError(f"dropout={p} is out of range: allowed [0, 1)")
    return float(p)


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


def _add_linear(y, x, weight):
    """y + x weightᵀ in one torch.addmm (cuBLAS adds the product onto a copy of y: no sum kernel), as _linear's dtype."""
    return torch.addmm(y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1]), weight.to(x.dtype).T).view(y.shape)


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
    float32 (float64 for a float64 adapter) with autocast off. forward: y = x W0ᵀ + b + dropout(x) ΔWᵀ (`dropout`: the
    method's adapter dropout, else none), two GEMMs as in PEFT, so ΔW is never rounded into W0's half-precision step."""

    method = None  # the name in METHODS

    def __init__(self, base):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"base must be an nn.Linear, got {type(base).__name__}")
        if min(base.in_features, base.out_features) < 1:
            raise ValueError(f"base is nn.Linear({base.in_features}, {base.out_features}): an adapter needs in and out features >= 1")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.dropout = nn.Identity()  # a method with adapter dropout replaces it

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
        return _add_linear(_linear(x, self.base.weight, self.base.bias), self.dropout(x), self.delta_weight())

    @torch.no_grad()
    def merge(self):
        """A new nn.Linear like `base` (dtype, device, bias) whose weight is the merged one."""
        merged = copy.deepcopy(self.base)
        merged.weight.copy_(self.merged_weight())
        return merged


# -----------------------------------------------------------------------------
# Baselines


class LoRA(Adapter):
    """LoRA (Hu et al. 2021, eq. 3): ΔW = (alpha / r) · B A, forward y = x W0ᵀ + b + scaling · B(A(dropout(x))),
    computed as PEFT's but with the scaling applied to B (out, r) rather than to the (tokens, out) product, and the sum
    inside the second product (`_add_linear`): no sum kernel forward, no scaling kernel backward.

    lora_A (r, in) Kaiming-uniform as nn.Linear, lora_B (out, r) zeros, so ΔW = 0 at init.
    Dropout acts on the adapter's input only. Seed: lora_A comes from torch's global generator, so it
    follows the run's seed, as in microsoft/LoRA and PEFT (nn.init on the global generator).
    """

    method = "lora"
    peft = ("LORA", {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight"})  # PEFT's factors are nn.Linear modules

    def __init__(self, base, r=8, alpha=8.0, dropout=0.0):
        super().__init__(base)
        r = self.r = _check_int("r", r)
        self.alpha = _check_float("alpha", alpha)
        self.scaling = self.alpha / r
        self.lora_A = nn.Parameter(_kaiming_uniform((r, self.in_features), self.in_features, self.dtype, self.device))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=self.dtype, device=self.device))  # (out, r)
        self.dropout = nn.Dropout(_check_dropout(dropout))

    @_exact
    def delta_weight(self):
        B, A = self._up(self.lora_B, self.lora_A)
        return self.scaling * (B @ A)  # (out, r) @ (r, in)

    def forward(self, x):
        down = _linear(self.dropout(x), self.lora_A)  # (..., r)
        return _add_linear(_linear(x, self.base.weight, self.base.bias), down, self.scaling * self.lora_B)

    def peft_fields(self):  # PEFT's scaling = lora_alpha / r (use_rslora False): ours, alpha / r
        return dict(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout.p, use_rslora=False, use_dora=False,
                    init_lora_weights=True, rank_pattern={}, alpha_pattern={}, lora_bias=False)


class WeightDecomposition:
    """DoRA's weight decomposition (Liu et al. 2024, eq. 5) of the ΔW of the adapter it is mixed into (LoRA, FoRA):
    W' = m ⊙ (W0 + ΔW) / ‖W0 + ΔW‖_row, the norm per output row of W0 (out, in) as PEFT's get_weight_norm (dim=1); m (out,)
    trainable, starts at ‖W0‖_row (W' = W0 at init). Forward as PEFT's DoRA layer, Adapter's: x W0ᵀ + b + dropout(x) (W' -
    W0)ᵀ. detach_norm=True (default): the norm is a constant in backward, as DoRA §4.3 and PEFT (False: differentiated)."""

    def _decompose(self, detach_norm):
        if not isinstance(detach_norm, bool):
            raise ValueError(f"detach_norm must be True or False, got {detach_norm!r}")
        self.detach_norm = detach_norm
        self.magnitude = nn.Parameter(self.base.weight.detach().to(self.dtype).norm(dim=1))  # (out,)

    @_exact
    def merged_weight(self):
        V = self.base.weight.to(self.dtype) + super().delta_weight()  # W0 + ΔW (out, in), ΔW the mixed-in method's
        norm = V.norm(dim=1).detach() if self.detach_norm else V.norm(dim=1)  # (out,)
        magnitude, = self._up(self.magnitude)
        return (magnitude / norm)[:, None] * V  # W' = m ⊙ V / ‖V‖_row (exactly W0 at init)

    def delta_weight(self):
        return self.merged_weight() - self.base.weight.to(self.dtype)  # W' - W0


class DoRA(WeightDecomposition, LoRA):
    """DoRA (Liu et al. 2024, eq. 5): `WeightDecomposition` of LoRA's ΔW = (alpha / r) · B A, as PEFT's
    LoraConfig(use_dora=True): the same W', forward, gradients (norm detached) and merged weight. Differs from PEFT:
    ΔW is formed (out, in) and applied as x (W' - W0)ᵀ, where PEFT computes (m/‖·‖ - 1) x W0ᵀ + m/‖·‖ · s x AᵀBᵀ
    (the same product). Seed: as LoRA."""

    method = "dora"

    def __init__(self, base, r=8, alpha=8.0, dropout=0.0, detach_norm=True):
        super().__init__(base, r=r, alpha=alpha, dropout=dropout)
        self._decompose(detach_norm)

    forward = Adapter.forward  # as WeightDecomposition says, not LoRA's (which never forms W')
    peft = ("LORA", {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight", "magnitude": "lora_magnitude_vector"})

    def peft_fields(self):
        return dict(LoRA.peft_fields(self), use_dora=True)


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

    vera_A (r, in) and vera_B (out, r) are frozen random matrices shared by every layer (one `VeRAProjections`
    module, sliced per layer: `shared`), PEFT's for the same seed (`vera_projections`) and rebuilt from it (so not
    saved); lambda_d (r,) starts at d_initial and lambda_b (out,) at zero, so ΔW = 0 at init. Differs from PEFT: ΔW
    (out, in) is formed and applied as x ΔWᵀ, where PEFT computes λ_b ⊙ (λ_d ⊙ x Aᵀ) Bᵀ (the same product; at r = 1024
    > in one GEMM over the tokens is cheaper than two through r); no VeRA dropout. Seed: the pair comes from `seed`
    alone (default 0), fixed whatever the run's, as PEFT's `projection_prng_key`.
    """

    method = "vera"
    peft = ("VERA", {"lambda_b": "vera_lambda_b", "lambda_d": "vera_lambda_d"})

    @classmethod
    def shared(cls, model, layers, chosen):  # one random pair at the largest shape; chosen: every hyperparameter
        largest_in, largest_out = max(m.in_features for m in layers), max(m.out_features for m in layers)
        return {"projections": VeRAProjections(*vera_projections(chosen["r"], largest_in, largest_out, chosen["seed"]))}

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

    def peft_fields(self):  # the pair is saved too (save_projection): PEFT's own for this projection_prng_key
        return dict(r=self.r, projection_prng_key=self.seed, save_projection=True, vera_dropout=0.0,
                    d_initial=self.d_initial, init_weights=True)

    def peft_shared(self):  # (r, largest in) and (largest out, r), as PEFT's VeraModel._find_dim sizes them
        return {"vera_A": self.projections.A, "vera_B": self.projections.B}


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
    peft = ("FOURIERFT", {"spectrum": "fourierft_spectrum"})

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

    def peft_fields(self):  # PEFT redraws the entries from random_loc_seed, as __init__ does
        return dict(n_frequency=self.n, scaling=self.scaling, random_loc_seed=self.seed, n_frequency_pattern={},
                    init_weights=False)

    def peft_problem(self):
        expected = random_locations(self.n, self.out_features, self.in_features, torch.Generator().manual_seed(self.seed))
        if not torch.equal(self.indices.cpu(), expected):
            return f"its entries are not those random_loc_seed={self.seed} gives, which PEFT would use"
        return None


class OFT(Adapter):
    """OFT (Qiu et al. 2023, eq. 3) as PEFT's OFTConfig computes it: y = (x R) W0ᵀ + b, so W' = W0 Rᵀ (the paper's W = R W0
    on its (in, out) layout); R (in, in) rotates the input features, as PEFT's, block-diagonal with r orthogonal blocks
    of b = in / r: R_i = (I - Q_i)(I + Q_i)⁻¹ (`cayley` of -Q_i), Q_i = U_i - U_iᵀ, U_i strictly upper triangular
    holding row i of the trainable `oft_R` (r, b(b-1)/2), zeros: R = I, W' = W0 at init. block_share: one block for all
    r (b(b-1)/2 parameters). As PEFT with use_cayley_neumann=False (the exact inverse, no Neumann series), coft=False,
    module_dropout=0; r must divide in (PEFT adjusts it, with a warning). Seed: none (no random draws)."""

    method = "oft"
    peft = ("OFT", {"oft_R": "oft_R.weight"})

    def __init__(self, base, r=4, block_share=False):
        super().__init__(base)
        r = self.r = _check_int("r", r, high=self.in_features, what=f" (r blocks of in={self.in_features} features)")
        if self.in_features % r:
            raise ValueError(f"r={r} must divide in={self.in_features}: r blocks of in / r features")
        if not isinstance(block_share, bool):
            raise ValueError(f"block_share must be True or False, got {block_share!r}")
        self.block_share, b = block_share, self.in_features // r
        self.block_size = b
        self.oft_R = nn.Parameter(torch.zeros(1 if block_share else r, b * (b - 1) // 2, dtype=self.dtype, device=self.device))

    def rotation_blocks(self):
        """R's r diagonal blocks (r, b, b), each exactly orthogonal (shared: one block repeated)."""
        oft_R, = self._up(self.oft_R)  # (blocks, b(b-1)/2)
        rows, cols = torch.triu_indices(self.block_size, self.block_size, 1, device=oft_R.device)
        U = oft_R.new_zeros(len(oft_R), self.block_size, self.block_size)  # (blocks, b, b)
        U[:, rows, cols] = oft_R  # strictly upper triangular
        return cayley(U.mT - U).expand(self.r, -1, -1)  # (I - Q)(I + Q)⁻¹ with Q = U - Uᵀ, PEFT's sign

    @_exact
    def rotate(self, x):
        """x R (..., in) in the adapter's precision, returned in x's dtype: block i of the features times R_i."""
        blocks = x.reshape(*x.shape[:-1], self.r, self.block_size).to(self.dtype)  # (..., r, b)
        return torch.einsum("...ik,ikc->...ic", blocks, self.rotation_blocks()).reshape(x.shape).to(x.dtype)

    def forward(self, x):  # as PEFT: the frozen layer on the rotated input
        return _linear(self.rotate(x), self.base.weight, self.base.bias)

    @_exact
    def merged_weight(self):
        W0, = self._up(self.base.weight)  # (out, in), columns in r blocks of b
        blocks = W0.reshape(self.out_features, self.r, self.block_size)  # (out, r, b)
        return torch.einsum("oik,ick->oic", blocks, self.rotation_blocks()).reshape(W0.shape)  # W0 Rᵀ (out, in)

    def delta_weight(self):
        return self.merged_weight() - self.base.weight.to(self.dtype)  # W0 Rᵀ - W0

    def peft_fields(self):  # PEFT's OFTConfig with r blocks (oft_block_size 0: derived), the exact inverse
        return dict(r=self.r, oft_block_size=0, module_dropout=0.0, init_weights=True, coft=False, eps=6e-5,
                    block_share=self.block_share, use_cayley_neumann=False, num_cayley_neumann_terms=5)


class BitFit(Adapter):
    """BitFit (Ben Zaken et al. 2022, §3.1): only bias terms train. Here the layer's bias b (out,): a trainable copy of the
    base's (which stays frozen), y = x W0ᵀ + b, ΔW = 0; merge() gives W0 with the trained bias. The paper trains every
    bias of the network: every linear layer's (`default_targets`, BERT/RoBERTa and DeBERTa names) and every LayerNorm's,
    which are no linear layers: `also_trains` names them (parameter name suffixes inject leaves trainable); RoBERTa-base:
    82,944 + 18,432 + 768 (embeddings' LayerNorm) = 102,144, LoCA Table 1's 0.1M. A layer without bias is an error.
    Seed: none (no random draws)."""

    method = "bitfit"
    default_targets = ("query", "key", "value", "output.dense", "intermediate.dense",
                       "query_proj", "key_proj", "value_proj")
    also_trains = ("LayerNorm.bias",)

    def __init__(self, base):
        super().__init__(base)
        if base.bias is None:
            raise ValueError(f"bitfit trains biases: base nn.Linear({self.in_features}, {self.out_features}) has none")
        self.bias = nn.Parameter(base.bias.detach().clone())  # (out,)

    def delta_weight(self):
        return torch.zeros(self.out_features, self.in_features, dtype=self.dtype, device=self.device)  # (out, in)

    def forward(self, x):
        return _linear(x, self.base.weight, self.bias)

    @torch.no_grad()
    def merge(self):
        merged = super().merge()
        merged.bias.copy_(self.bias)
        return merged


# -----------------------------------------------------------------------------
# FoRA and DFoRA


class FoRA(Adapter):
    """FoRA ("LoRA Unleashed", eq. 3-4): ΔW = (alpha/r) · B̃ Ã, Ã (r, in), B̃ (out, r) each Re(IDFT2) of a spectrum zero but n
    trainable coefficients at fixed random indices, n capped at a matrix's entries as the paper counts (Table 10: ViT, r 8:
    6,144). Eq. 3-4 have no alpha, Table 8 has one (64 at r 32): alpha=None means r (scale 1). Tables 7/8's `dropout` acts
    on the adapter's input. Init (§3.3): spectrum_B = 0; spectrum_A rescaled to Var(Ã) = Var(A'), the expected variance
    (not one draw's) of a Kaiming- (nn.Linear's) or Xavier-uniform A' (r, in), `init`. Seed: indices from `seed` alone."""

    method = "fora"

    def __init__(self, base, n=500, r=32, alpha=None, seed=0, dropout=0.0, init="kaiming"):
        super().__init__(base)
        r, n = self.r, self.n = _check_int("r", r), _check_int("n", n)
        self.alpha = float(r) if alpha is None else _check_float("alpha", alpha)
        self.seed = _check_int("seed", seed, low=0)
        self.dropout = nn.Dropout(_check_dropout(dropout))
        if init not in ("kaiming", "xavier"):
            raise ValueError(f"init={init!r} is unknown: allowed 'kaiming', 'xavier'")
        i, o, self.init, generator = self.in_features, self.out_features, init, torch.Generator().manual_seed(self.seed)
        self.register_buffer("indices_A", random_locations(min(n, r * i), r, i, generator).to(self.device))  # (2, n_A)
        self.register_buffer("indices_B", random_locations(min(n, o * r), o, r, generator).to(self.device))  # (2, n_B)
        self.spectrum_B = nn.Parameter(torch.zeros(self.indices_B.shape[1], dtype=self.dtype, device=self.device))  # (n_B,)
        spectrum_A = _kaiming_uniform((self.indices_A.shape[1],), i, self.dtype, self.device)  # (n_A,)
        A = sparse_idft2_real(spectrum_A, self.indices_A, (r, self.in_features))  # (r, in)
        variance, target = A.var(unbiased=False), (1.0 / (3 * i) if init == "kaiming" else 2.0 / (i + r))  # Var(A')
        if variance > 1e-6 * A.pow(2).mean():  # a lone DC coefficient gives a constant Ã: nothing to match
            spectrum_A = spectrum_A * torch.sqrt(target / variance)
        self.spectrum_A = nn.Parameter(spectrum_A)

    @_exact
    def delta_weight(self):
        spectrum_A, spectrum_B = self._up(self.spectrum_A, self.spectrum_B)
        A = sparse_idft2_real(spectrum_A, self.indices_A, (self.r, self.in_features))  # Ã (r, in)
        B = sparse_idft2_real(spectrum_B, self.indices_B, (self.out_features, self.r))  # B̃ (out, r)
        return self.alpha / self.r * (B @ A)  # (out, r) @ (r, in)


class DFoRA(WeightDecomposition, FoRA):
    """DFoRA: DoRA's eq. 5 (`WeightDecomposition`) with FoRA's ΔW; the FoRA paper is silent on the norm's gradient."""

    method = "dfora"

    def __init__(self, base, n=500, r=32, alpha=None, seed=0, dropout=0.0, init="kaiming", detach_norm=True):
        super().__init__(base, n=n, r=r, alpha=alpha, seed=seed, dropout=dropout, init=init)
        self._decompose(detach_norm)


class MaskedLoRA(Adapter):
    """Random masking on LoRA, the FoRA paper's §4.5 baseline (Figure 3, Table 10): LoRA's ΔW = (alpha/r) · B A, A (r, in)
    and B (out, r) zero but n trainable entries each (`values_A`, `values_B`) at fixed random positions, the grid points
    FoRA draws for its spectra from the same `seed` (`random_locations`), n capped at a matrix's entries as FoRA's: at
    every r it trains FoRA's count, 2n a layer. Init as LoRA: A's kept entries Kaiming-uniform as nn.Linear, B's zero (ΔW
    = 0). alpha=None means r (scale 1, FoRA's); dropout on the adapter's input. Seed: positions from `seed` alone.
    Our choices (§4.5's own text was not at hand; the issue asks for a fixed random mask at FoRA's count): masked
    entries exactly 0 (not frozen draws), the kept ones at FoRA's positions, LoRA's init and FoRA's scale on them."""

    method = "masked_lora"

    def __init__(self, base, n=500, r=32, alpha=None, seed=0, dropout=0.0):
        super().__init__(base)
        r, n = self.r, self.n = _check_int("r", r), _check_int("n", n)
        self.alpha = float(r) if alpha is None else _check_float("alpha", alpha)
        self.seed, self.dropout = _check_int("seed", seed, low=0), nn.Dropout(_check_dropout(dropout))
        i, o, generator = self.in_features, self.out_features, torch.Generator().manual_seed(self.seed)
        self.register_buffer("indices_A", random_locations(min(n, r * i), r, i, generator).to(self.device))  # (2, n_A)
        self.register_buffer("indices_B", random_locations(min(n, o * r), o, r, generator).to(self.device))  # (2, n_B)
        self.values_A = nn.Parameter(_kaiming_uniform((self.indices_A.shape[1],), i, self.dtype, self.device))  # (n_A,)
        self.values_B = nn.Parameter(torch.zeros(self.indices_B.shape[1], dtype=self.dtype, device=self.device))  # (n_B,)

    @_exact
    def delta_weight(self):
        values_A, values_B = self._up(self.values_A, self.values_B)
        A = values_A.new_zeros(self.r, self.in_features).index_put(tuple(self.indices_A), values_A)  # (r, in)
        B = values_B.new_zeros(self.out_features, self.r).index_put(tuple(self.indices_B), values_B)  # (out, r)
        return self.alpha / self.r * (B @ A)  # (out, r) @ (r, in)


# -----------------------------------------------------------------------------
# LoCA


LOCA_DIFFERENCES = {"central": (1, 1, 2), "forward": (1, 0, 1), "backward": (0, 1, 1)}  # (ahead, behind, divisor)


class _LoCADelta(torch.autograd.Function):
    """ΔW = alpha · C_outᵀ S C_in (LoCA eq. 1), S (out, in) zero but coefficients s at the grid
    points (r, c) of the locations: a sum of n rank-1 products of DCT basis rows, S never formed.
    A custom Function: rounding to the grid has no gradient, so LoCA defines one (eq. 3-5). With D = C_out (∂L/∂ΔW) C_inᵀ,
    ∂L/∂s_k = alpha · D[r_k, c_k] and, columns alike, ∂L/∂row_k = clamp(alpha · s_k · (D[r_k+a, c_k] - D[r_k-b, c_k]) /
    (a + b), -1, 1) · (out - 1): (a, b) = (1, 1) central (eq. 3-5), (1, 0) forward, (0, 1) backward (Table 5's V4, V5);
    a neighbour off the grid is the point; · (out - 1) turns grid steps into location units."""

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
        ahead, behind, divisor = LOCA_DIFFERENCES[ctx.difference]
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
    """LoCA (Du et al., ICLR 2025, eq. 1): ΔW = alpha · iDCT2(S) = alpha · C_outᵀ S C_in, S (out, in) zero but n trainable
    `coefficients` (init 0) at trainable `locations` (2, n) (rows; cols) in [0, 1], rounded to the grid
    (`location_indices()`), with the gradient of _LoCADelta, from the `difference` "central" (eq. 3-5, the authors'
    code), "forward" or "backward" (Table 5's V4, V5). Train with `LoCASchedule`. `seed`: an int or a torch.Generator,
    the run's (SEED_FOLLOWS_RUN), as the authors draw from the run's generator. Against the paper (P) or the authors'
    code (A, their PEFT fork's tuners/loca): as A, not P, a location's step is clamped to [-1, 1] grid steps, and at
    the grid's edge the missing neighbour is the point; as A, every layer draws its own uniform locations (`inject`
    passes one generator; coinciding ones add); not as A, locations are clamped to [0, 1], not [0, 0.999], which
    leaves the last row and column out of reach above size 501 (round(0.999 · 767) = 766)."""

    method = "loca"
    own_group = ("locations", "lr_locations")
    settings = {"lr_locations": (float, 1e-4, "the locations' learning rate"), "B_a": (int, 10, "coefficient steps a cycle"),
                "B_l": (int, 20, "location steps a cycle"), "T_s": (int, None, "steps of location search (default: a tenth)"),
                "mode": (str, "alternating", "location search: alternating, or joint (Table 5's V3)")}
    seed_follows_run = True

    @classmethod
    def shared(cls, model, layers, chosen):  # one generator: each layer draws its locations from it in turn
        return {"seed": torch.Generator().manual_seed(_check_int("seed", chosen["seed"], low=0))}

    def __init__(self, base, n=1000, alpha=1.0, seed=0, difference="central"):
        super().__init__(base)
        self.n = _check_count("n", n, self.out_features, self.in_features, "weight matrix")
        self.alpha, self.difference = _check_float("alpha", alpha), difference
        if difference not in LOCA_DIFFERENCES:
            raise ValueError(f"difference={difference!r} is unknown: allowed {', '.join(LOCA_DIFFERENCES)}")
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
        C_in = C_in[:] if C_in is C_out else C_in  # square: one cached matrix, which dynamo won't pass a Function twice
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

    T_s=None in `settings` means LoCA's rule of thumb (§4.4), a tenth of the run: `decide` fills it in.
    """

    MODES = ("alternating", "joint")

    @staticmethod
    def decide(settings, total_steps):
        """The schedule's settings for a run of `total_steps`: T_s None -> round(0.1 * total_steps), at least 1; a T_s
        past the run's end -> the run's end (Table 5's V2 searches the whole run)."""
        T_s = max(1, round(0.1 * total_steps)) if settings["T_s"] is None else min(settings["T_s"], total_steps)
        return dict(settings, T_s=T_s)

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


LoCA.schedule = LoCASchedule  # what train.py steps after each optimizer step (declared here: it needs LoCA first)


# -----------------------------------------------------------------------------
# FouRA


class TokenMask:
    """The padding mask (..., T) a model's forward sets once for its FouRA layers: 1 = real token, None = all."""
    mask = None


class FouRA(Adapter):
    """FouRA (Borse et al. 2024, eq. 4-6): y = x W0ᵀ + b + F_out⁻¹(B (alpha/r · g ⊙ A F_in(x))), LoRA on the activations'
    spectrum, F "dct" or "dft" (`real_dft`) per token; foura_A Kaiming-uniform, foura_B zeros (ΔW = 0 at init; the community
    code starts B at nn.Linear's default). gate: g_i = sigmoid(a_i (H_i - b_i)), H_i the entropy of softmax of z[..., i] over
    the real tokens (`token_mask.mask`, set by the model's forward), z = A F_in(x) (..., T, r), a = `gate_scale` (init 1), b =
    `gate_shift` (init 0), raw H as the community code. Seed: foura_A follows the run's (torch's global generator, as theirs)."""

    method = "foura"

    shared = classmethod(lambda cls, model, layers, chosen: {"token_mask": getattr(model, "token_mask", None) or TokenMask()})

    unmergeable = {"gate": True}  # with its gate, ΔW depends on the input: nothing fixed to merge

    def __init__(self, base, r=16, alpha=32.0, transform="dct", gate=True, token_mask=None):
        super().__init__(base)
        self.r = _check_int("r", r, high=min(self.in_features, self.out_features), what=" (r <= min(in, out))")
        self.alpha = _check_float("alpha", alpha)
        if transform not in ("dct", "dft") or not isinstance(gate, bool) or not isinstance(token_mask, (TokenMask, type(None))):
            raise ValueError(f"transform must be 'dct' or 'dft', gate True or False, token_mask a TokenMask or None: got "
                             f"{transform!r}, {gate!r}, {token_mask!r}")
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
            raise ValueError(f"FouRA's gate needs x (..., T, in) and token_mask (..., T); got x {tuple(z.shape[:-1])} + "
                             f"(in,), token_mask {None if token_mask is None else tuple(token_mask.shape)}")
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
        return _add_linear(y, z, self.scaling * up)  # (..., T, out)

    def delta_weight(self):
        if self.gate:
            raise ValueError("FouRA with gate=True depends on its input: no fixed ΔW, it cannot merge; use gate=False")
        down, up = self.factors()
        with torch.autocast(up.device.type, enabled=False):
            return self.scaling * up @ down  # (out, in)


# -----------------------------------------------------------------------------
# Spectral Adapter


def singular_triplets(weight, r, first=0):
    """Thin SVD of weight (out, in) in float64 -> (U1 (out, r), S1 (r,), V1 (in, r)): the singular triplets
    first ... first + r - 1, counted from the largest singular value (first=0: the top r)."""
    U, S, Vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
    return U[:, first:first + r], S[first:first + r], Vh[first:first + r].T


def cayley(P):
    """Cayley map R = (I + Q)(I - Q)⁻¹ with Q = (P - Pᵀ)/2: exactly orthogonal, R(0) = I.
    P (..., r, r): a batch of matrices maps in one call."""
    Q = (P - P.mT) / 2  # skew-symmetric
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    # I - Q is never singular for skew Q: inv_ex skips the error check (a GPU synchronisation).
    return (eye + Q) @ torch.linalg.inv_ex(eye - Q)[0]


def _tuned_block(columns, r, limit):
    """`columns` -> (its normal form, the first tuned singular vector): "top" 0, "bottom" limit - r, a block
    index b >= 0 (an int, or its digits from a command line) b·r, the paper's §4.2 concept i = b + 1, whose
    columns (i-1)r+1 ... ir (1-based) are b·r ... b·r + r - 1 here."""
    if columns in ("top", "bottom"):
        return columns, 0 if columns == "top" else limit - r
    try:
        block = None if isinstance(columns, bool) else operator.index(int(columns) if str(columns).isdigit() else columns)
    except TypeError:
        block = None
    if block is None:
        raise ValueError(f"columns must be 'top', 'bottom' or a block index >= 0, got {columns!r}")
    block = _check_int("columns", block, low=0, high=limit // r - 1,
                       what=f" (block b tunes singular vectors b·r ... b·r + r - 1 of min(in, out) = {limit}; r={r})")
    return block, block * r


class _SpectralAdapter(Adapter):
    """Shared by Spectral Adapter A and R: r singular triplets of W0 as frozen buffers, chosen by `columns`:
    "top" (the paper's method), "bottom" (its Appendix F.3/F.5.1 ablation; the authors' top=False, the last r of
    the thin SVD) or a block index b >= 0, the singular vectors b·r ... b·r + r - 1 (§4.2's fusion, each concept
    its own block; the authors' 0-based `idx`; block 0 is "top").

    The rest, W0 - U1 S1 V1ᵀ, stays merged inside the frozen base, so ΔW is written only in
    terms of U1, S1, V1 and the trainable tensors. Seed: none needed; no random draws (an SVD, zeros).
    """

    def __init__(self, base, r, columns):
        super().__init__(base)
        limit = min(self.in_features, self.out_features)
        r = self.r = _check_int("r", r, high=limit, what=f" (r <= min(in, out) = {limit} singular vectors)")
        self.columns, self.first = _tuned_block(columns, r, limit)  # tuned: singular vectors first ... first + r - 1
        U1, S1, V1 = singular_triplets(base.weight, r, self.first)
        self.register_buffer("U1", U1.to(self.dtype), persistent=False)  # (out, r)
        self.register_buffer("S1", S1.to(self.dtype), persistent=False)  # (r,)
        self.register_buffer("V1", V1.to(self.dtype), persistent=False)  # (in, r)


class SpectralAdapterA(_SpectralAdapter):
    """Spectral Adapter A, additive (Zhang & Pilanci 2024, eq. 2):

        W' = W0 - U1 S1 V1ᵀ + (U1 + A_U) S1 (V1 + A_V)ᵀ,   A_U (out, r), A_V (in, r) zeros

    The same parameter count as LoRA of rank r, but ΔW can reach rank 2r (Lemma 3.1): it is the
    product of two rank-2r `factors`, applied on the activations as LoRA's are.
    U1, S1, V1: the top r singular triplets, or those `columns` names (_SpectralAdapter); `fuse_spectral` combines
    adapters tuned on disjoint blocks. Differs from the authors' code: W0 stays whole in the base and ΔW = W' - W0
    is added (the same W'), where they store the residual W0 - U1 S1 V1ᵀ and the new top part.
    """

    method = "spectral_a"

    def __init__(self, base, r=8, columns="top"):
        super().__init__(base, r, columns)
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
        return _add_linear(_linear(x, self.base.weight, self.base.bias), _linear(x, down), up)


class SpectralAdapterR(_SpectralAdapter):
    """Spectral Adapter R, rotational (Zhang & Pilanci 2024, eq. 3):

        W' = W0 - U1 S1 V1ᵀ + (U1 R_U) S1 (V1 R_V)ᵀ,   R = cayley(P), P (r, r) zeros -> R = I

    R_U, R_V are exactly orthogonal, so W' keeps the singular values of W0 (Lemma 4.1).
    Trainable: P_U, P_V, 2r² parameters. Differs from the authors' code as Spectral Adapter A.
    """

    method = "spectral_r"

    def __init__(self, base, r=8, columns="top"):
        super().__init__(base, r, columns)
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


def fuse_spectral(adapters, weights=None):
    """Spectral Adapter A's multi-adapter fusion (Zhang & Pilanci 2024, §4.2): adapters tuned on one W0 = U0 S0 V0ᵀ
    (thin SVD, k = min(out, in) triplets), each on its own block of `columns`, combine as

        θ = (U0 + Σ_i λ_i U_i) S0 (V0 + Σ_i λ_i V_i)ᵀ,   λ_i = weights[i], default 1/n (the paper's)

    U_i (out, k), V_i (in, k): adapter i's A_U, A_V at its columns, zero elsewhere. S0 is diagonal, so disjoint
    blocks never meet in the product: with every λ_i = 1 (the authors' fusion script), θ = W0 + Σ_i ΔW_i exactly.
    Returns a new nn.Linear like the adapters' base (dtype, device, bias) holding θ."""
    adapters = list(adapters)
    if not adapters or not all(isinstance(a, SpectralAdapterA) for a in adapters):
        raise ValueError("fuse_spectral fuses SpectralAdapterA layers (the additive adapter): give at least one")
    base = adapters[0].base
    if any(a.base.weight.shape != base.weight.shape or not torch.equal(a.base.weight, base.weight) for a in adapters):
        raise ValueError("the adapters to fuse must wrap the same base weight W0 (one layer of one pretrained model)")
    weights = [1.0 / len(adapters)] * len(adapters) if weights is None else list(weights)
    if len(weights) != len(adapters):
        raise ValueError(f"weights has {len(weights)} entries for {len(adapters)} adapters: give one λ per adapter")
    U, S, V = singular_triplets(base.weight, min(base.weight.shape))  # U0 (out, k), S0 (k,), V0 (in, k)
    for adapter, weight in zip(adapters, weights):
        block, weight = slice(adapter.first, adapter.first + adapter.r), _check_float("weights", weight)
        U[:, block] += weight * adapter.A_U.detach().to(U)  # U0 + λ_i U_i
        V[:, block] += weight * adapter.A_V.detach().to(V)  # V0 + λ_i V_i
    fused = copy.deepcopy(base)
    with torch.no_grad():
        fused.weight.copy_((U * S) @ V.T)  # (out, k) diag(S0) (k, in)
    return fused


# -----------------------------------------------------------------------------
# Working with whole models

METHODS = {
    "lora": LoRA,
    "dora": DoRA,
    "vera": VeRA,
    "fourierft": FourierFT,
    "oft": OFT,
    "bitfit": BitFit,
    "fora": FoRA,
    "dfora": DFoRA,
    "masked_lora": MaskedLoRA,
    "loca": LoCA,
    "foura": FouRA,
    "spectral_a": SpectralAdapterA,
    "spectral_r": SpectralAdapterR,
}

# BERT/RoBERTa name their attention projections query/value, DeBERTa-v2/v3 query_proj/value_proj.
DEFAULT_TARGETS = ("query", "value", "query_proj", "value_proj")

# What a method asks of a training loop, declared on its class where it differs from these defaults. train.py and its
# modules read them through `declared` and never name a method:
#   default_targets   what `inject` adapts unless told (q and v; BitFit: every linear layer)
#   also_trains       suffixes of parameters outside the adapters that train too (BitFit: the LayerNorm biases)
#   own_group         (tensor, rate setting): a tensor in an optimizer group of its own, at that setting's learning rate,
#                     without weight decay, not counted as the method's parameters (LoCA's locations)
#   schedule          a class, schedule(model, **its settings): .step() after each optimizer step, state_dict()
#   settings          {setting: (type, default, help)}: the training settings it adds (own_group's rate, schedule's)
#   seed_follows_run  its `seed` defaults to the run's seed, as its authors draw from the run's generator
#   shared(model, layers, chosen) -> {keyword: value} every layer's adapter gets, built once per model (chosen: every
#                     hyperparameter, defaults filled in)
#   unmergeable       {hyperparameter: value} with which the adapter has no fixed ΔW to merge (FouRA's gate)
#   peft              (PEFT's peft_type, {our tensor: PEFT's key after the layer's name}); None: PEFT has no such tuner
#   peft_fields() -> adapter_config.json's fields; peft_shared() -> {key: tensor} PEFT saves once (VeRA's pair);
#   peft_problem() -> why PEFT would rebuild this adapter otherwise, or None
DECLARED = dict(default_targets=DEFAULT_TARGETS, also_trains=(), own_group=None, schedule=None, settings={},
                seed_follows_run=False, shared=lambda model, layers, chosen: {},
                unmergeable={}, peft=None, peft_shared=lambda: {}, peft_problem=lambda: None)


def declared(method, name):
    """What a method (its name, class or adapter) declares for `name`, else DECLARED's default."""
    return getattr(METHODS[method] if isinstance(method, str) else method, name, DECLARED[name])

# Seeds as the authors use them. A method's `seed` hyperparameter drives its random locations or frozen matrices.
# The methods named here draw those, in their authors' code, from the run's own generator: their `seed` should
# default to the run's seed (train.py's --seed; --adapter-seed still pins it). LoCA: its layer calls uniform_ on the
# global generator, which the run seeds. The others keep a fixed reference seed whatever the run's: VeRA 0 (PEFT's
# projection_prng_key), FourierFT 777 (PEFT's random_loc_seed; the authors' GLUE scripts fix theirs too), FoRA and
# DFoRA 0 (no public code; as FourierFT). Draws without `seed` (LoRA's, FouRA's A, FoRA's spectrum_A, FourierFT's
# spectrum) come from torch's global generator, which the run seeds: they follow the run's seed in every method.
SEED_FOLLOWS_RUN = frozenset(method for method in METHODS if declared(method, "seed_follows_run"))
SHARED_KEYWORDS = ("projections", "token_mask")  # what `shared` gives the layers: not hyperparameters


def hyperparameters_of(cls):
    """{name: default} of an adapter class's hyperparameters (its keywords after `base`)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]
    return {p.name: p.default for p in parameters if p.name not in SHARED_KEYWORDS}


def hyperparameters(method):
    """{name: default} of a method's hyperparameters, e.g. hyperparameters('loca')."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: allowed {', '.join(METHODS)}")
    return hyperparameters_of(METHODS[method])


def adapters(model):
    """(qualified name, adapter) for every adapter in the model."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, Adapter)]


def _replace(model, name, module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _matches(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def also_trained(model):
    """(name, parameter) of the tensors outside the adapters that the model's methods also train: those whose names end
    with a suffix of an adapter class's `also_trains` (BitFit's LayerNorm biases)."""
    suffixes = tuple({s for _, adapter in adapters(model) for s in getattr(adapter, "also_trains", ())})
    return [(name, p) for name, p in model.named_parameters() if suffixes and _matches(name, suffixes)]


def inject(model, method, targets=None, **hyperparameters_):
    """Wrap every nn.Linear whose qualified name ends with a target in `method`'s adapter.

    A target matches whole dotted components: "query" matches "attention.self.query", not
    "query_proj". The default reaches BERT/RoBERTa's query and value and DeBERTa's query_proj
    and value_proj. Freezes every other parameter of the model, leaving only the adapters'
    tensors trainable (and those a method's `also_trains` names). Returns the replaced names.
    Hyperparameters are the method's keywords (see `hyperparameters(method)`); the defaults are the papers' RoBERTa-base GLUE settings.
    FouRA: its layers share one `TokenMask`, set as `model.token_mask`; the model's forward must set
    `model.token_mask.mask` to the batch's padding mask (model.py's classifiers do), e.g. with a hook.
    """
    allowed = hyperparameters(method)
    targets = declared(method, "default_targets") if targets is None else targets
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
    shared = declared(cls, "shared")(model, [linears[n] for n in names], {**allowed, **hyperparameters_})
    keywords = {**hyperparameters_, **shared}
    trainable, built = [p for p in model.parameters() if p.requires_grad], {}
    for name in names:  # every layer is built before the model changes
        try:
            built[name] = cls(linears[name], **keywords)
        except ValueError as error:
            for p in trainable:  # (the adapters built so far froze their base)
                p.requires_grad_(True)
            raise ValueError(f"layer {name!r}: {error}") from None
    model.requires_grad_(False)
    for name in names:
        _replace(model, name, built[name])
    for _, p in also_trained(model):  # BitFit: the LayerNorm biases train too
        p.requires_grad_(True)
    if isinstance(keywords.get("token_mask"), TokenMask):  # the model's forward sets the batch's padding mask in it
        model.token_mask = keywords["token_mask"]
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
    matrices, the Spectral Adapter's singular vectors). Keys: '<layer>.<tensor>'; plus the model's
    own tensors a method also trains (`also_trained`: BitFit's LayerNorm biases), by their names.
    """
    state = {}
    for name, adapter in adapters(model):
        for key, tensor in adapter.state_dict().items():
            if not key.startswith("base."):
                state[f"{name}.{key}"] = tensor
    return {**state, **{name: p.detach() for name, p in also_trained(model)}}


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
