"""The transforms the methods use keep energy as Parseval's theorem says, and agree with each other."""

import math

import torch
from hypothesis import given, settings, strategies as st

import spectral_ft as sf

sizes = st.integers(1, 40)
seeds = st.integers(0, 2**16)


def randn(*shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def dct_via_fft(x):
    """Orthonormal DCT-II along the last axis through one FFT of length 2N (mirror extension)."""
    N = x.shape[-1]
    mirrored = torch.cat([x, x.flip(-1)], dim=-1)  # (..., 2N)
    X = torch.fft.fft(mirrored)[..., :N]
    k = torch.arange(N, dtype=x.dtype)
    y = (X * torch.exp(-1j * math.pi * k / (2 * N))).real / 2  # Σ x_i cos(π(2i+1)k / 2N)
    scale = torch.full((N,), math.sqrt(2.0 / N), dtype=x.dtype)
    scale[0] = math.sqrt(1.0 / N)
    return y * scale


@settings(max_examples=40, deadline=None)
@given(rows=sizes, cols=sizes, seed=seeds)
def test_dft2_parseval_with_its_normalisation(rows, cols, seed):
    """fft2 ('backward'): ‖X‖² = rows·cols·‖x‖²; ifft2 divides by rows·cols; 'ortho' keeps energy."""
    x = randn(rows, cols, seed=seed)
    energy = (x ** 2).sum()
    assert torch.allclose((torch.fft.fft2(x).abs() ** 2).sum(), rows * cols * energy, rtol=1e-10)
    assert torch.allclose((torch.fft.ifft2(x).abs() ** 2).sum(), energy / (rows * cols), rtol=1e-10)
    assert torch.allclose((torch.fft.fft2(x, norm="ortho").abs() ** 2).sum(), energy, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(n=sizes, seed=seeds)
def test_dct_matrix_is_orthonormal_and_keeps_energy(n, seed):
    C = sf.dct_matrix(n, torch.float64)
    assert torch.allclose(C @ C.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    x = randn(3, n, seed=seed)
    assert torch.allclose((sf.dct(x) ** 2).sum(-1), (x ** 2).sum(-1), rtol=1e-10)
    assert torch.allclose(sf.idct(sf.dct(x)), x, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=sizes, seed=seeds)
def test_dct_via_matrix_equals_dct_via_fft(n, seed):
    x = randn(4, n, seed=seed)
    assert torch.allclose(sf.dct(x), dct_via_fft(x), atol=1e-11)


def test_dct_matrix_entries_follow_the_dct_ii_formula():
    n = 5
    C = sf.dct_matrix(n, torch.float64)
    for k in range(n):
        for i in range(n):
            scale = math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n)
            assert math.isclose(C[k, i].item(), scale * math.cos(math.pi * (2 * i + 1) * k / (2 * n)), abs_tol=1e-14)


def test_dct_matrix_is_cached_per_size_dtype_and_device():
    assert sf.dct_matrix(17) is sf.dct_matrix(17, torch.float32, "cpu")
    assert sf.dct_matrix(17, torch.float64) is not sf.dct_matrix(17)


@settings(max_examples=40, deadline=None)
@given(n=sizes, seed=seeds)
def test_real_dft_is_orthonormal_and_invertible(n, seed):
    """real_dft packs rfft's N//2+1 complex values into N reals keeping energy (Parseval)."""
    x = randn(3, n, seed=seed)
    f = sf.real_dft(x)
    assert f.shape == x.shape
    assert torch.allclose((f ** 2).sum(-1), (x ** 2).sum(-1), rtol=1e-10)
    assert torch.allclose(sf.inverse_real_dft(f), x, atol=1e-12)
    # As a matrix it is orthogonal, so the inverse is also the transpose.
    T = sf.real_dft(torch.eye(n, dtype=torch.float64)).T  # (n, n): f = T x
    assert torch.allclose(T @ T.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), seed=seeds, data=st.data())
def test_sparse_idft2_real_equals_the_cosine_sum(rows, cols, seed, data):
    """Re(IDFT2(F))[p, q] = 1/(rows·cols) Σ_k s_k cos(2π(r_k p / rows + c_k q / cols))."""
    n = data.draw(st.integers(1, rows * cols))
    indices = sf.random_locations(n, rows, cols, torch.Generator().manual_seed(seed))
    values = randn(n, seed=seed)
    result = sf.sparse_idft2_real(values, indices, (rows, cols))
    p = torch.arange(rows, dtype=torch.float64).view(rows, 1, 1)
    q = torch.arange(cols, dtype=torch.float64).view(1, cols, 1)
    phase = 2 * math.pi * (indices[0] * p / rows + indices[1] * q / cols)  # (rows, cols, n)
    expected = (values * torch.cos(phase)).sum(-1) / (rows * cols)
    assert torch.allclose(result, expected, atol=1e-12)


def test_compiled_code_reads_the_cached_dct_matrix_instead_of_rebuilding_it():
    """dct_matrix is torch.compiler.disable'd inside spectral_ft (nothing outside patches it): dynamo calls it
    rather than tracing through its cache, which would rebuild C (arange, cos) at every pass of every graph."""
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    x = randn(3, 9, seed=0)
    compiled = torch.compile(lambda t: sf.idct(2 * sf.dct(t)), backend=recording_backend)
    assert torch.equal(compiled(x), sf.idct(2 * sf.dct(x)))
    called = {node.target for graph in graphs for node in graph.graph.nodes if node.op == "call_function"}
    assert graphs and not called & {torch.cos, torch.arange}
