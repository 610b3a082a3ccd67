"""LoCA's theoretical claims (Du et al., ICLR 2025, §3), checked numerically in float64.

Theorem 1: for an update ΔW whose entries are (asymptotically) iid Gaussian, the expected
reconstruction error at an equal parameter budget orders the families: frequency components at
random locations reconstruct worst, and, below a budget, individually selected real/imaginary DFT
components and the top-|c| DCT components reconstruct better than the best low-rank update.
Theorem 2: top-k DCT selection has the expressivity of individually selected DFT real/imaginary
components (the same reconstruction error distribution).

Parameter accounting (B for a p x q matrix): rank r costs r(p + q) (LoRA's B and A); components at
random locations cost their n values (the locations come from a seed): n = B; a selected component
costs its value and its location, stored as a row and a column index: n = ⌊B/3⌋. Counting a location
as one flat index (n = ⌊B/2⌋) keeps more components, so every ordering that holds at ⌊B/3⌋ holds there
too. docs/figures/locations.svg (scripts/figures.py) uses the same 3-per-component accounting for its
solid LoCA curve and draws n = B dotted.

Errors are exact: DCT-II and scaled real DFT (spectral_ft.real_dft) are orthonormal, so the best n-term
fit in either basis keeps the n largest squared coefficients and its error² is the energy of the rest
(Parseval); the rank-r error² is the energy past the r-th singular value (Eckart-Young).
"""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import spectral_ft as sf

F64 = torch.float64


def dct2(W):
    """Orthonormal 2-D DCT-II of W (p, q)."""
    return sf.dct(sf.dct(W).transpose(-1, -2)).transpose(-1, -2)


def real_dft2(W):
    """W's 2-D DFT as p·q real numbers, each a real or an imaginary part (scaled, orthonormal): the
    real DFT along rows, then along columns."""
    return sf.real_dft(sf.real_dft(W).transpose(-1, -2)).transpose(-1, -2)


def inverse_real_dft2(F):
    return sf.inverse_real_dft(sf.inverse_real_dft(F.transpose(-1, -2)).transpose(-1, -2))


def idct2(S):
    return sf.idct(sf.idct(S.transpose(-1, -2)).transpose(-1, -2))


def keep_top(coefficients, n):
    """The n largest-|c| coefficients kept, the rest zeroed (per matrix of a batch (..., p, q))."""
    flat = coefficients.flatten(-2)
    kept = torch.zeros_like(flat).scatter(-1, flat.abs().topk(n, dim=-1).indices, flat.gather(
        -1, flat.abs().topk(n, dim=-1).indices))
    return kept.view_as(coefficients)


def relative_errors(W, budget, generator):
    """{family: relative error ‖W − Ŵ‖_F / ‖W‖_F (batch,)} at parameter budget `budget`, each
    Ŵ built and subtracted (not inferred from the coefficients), so a basis that is not orthonormal
    shows."""
    p, q = W.shape[-2:]
    norm = torch.linalg.matrix_norm(W)
    error = lambda approx: torch.linalg.matrix_norm(W - approx) / norm
    r, selected = budget // (p + q), budget // 3
    U, S, Vh = torch.linalg.svd(W)
    low_rank = U[..., :, :r] @ torch.diag_embed(S[..., :r]) @ Vh[..., :r, :]
    mask = torch.zeros(p * q, dtype=F64)
    mask[torch.randperm(p * q, generator=generator)[:budget]] = 1  # the seed's locations, reused per matrix
    random_dft = inverse_real_dft2(real_dft2(W) * mask.view(p, q))
    return {"low rank": error(low_rank),
            "random DFT": error(random_dft),
            "selected DFT re/im": error(inverse_real_dft2(keep_top(real_dft2(W), selected))),
            "top DCT": error(idct2(keep_top(dct2(W), selected)))}


def clearly_below(smaller, larger, draws):
    """The paired mean difference larger − smaller exceeds 4 standard errors (a one-sided z-test that a
    correct ordering fails with probability below 1e-4; the draws are seeded, so the outcome is fixed)."""
    difference = larger - smaller  # (draws,)
    return difference.mean().item() > 4 * difference.std().item() / math.sqrt(draws)


@pytest.mark.parametrize("shape", [(32, 32), (40, 24)])
def test_theorem_1_random_locations_worst_selected_components_beat_low_rank_below_a_budget(shape):
    """LoCA Theorem 1 on iid N(0, 1) matrices (the theorem's distribution), 200 draws: at every rank
    r ≤ min(p, q)/8 (budget B = r(p + q)) random DFT locations (n = B) are worse than the best rank r,
    and both selected families (n = ⌊B/3⌋, value + row + column) are better. 'Below a budget' is a
    real bound: at r = min(p, q)/2 low rank beats both selected families (with this accounting the
    crossing is near r = min(p, q)/6)."""
    draws, generator = 200, torch.Generator().manual_seed(0)
    W = torch.randn(draws, *shape, dtype=F64, generator=generator)
    small = min(shape)
    for r in range(1, small // 8 + 1):
        errors = relative_errors(W, r * sum(shape), generator)
        assert clearly_below(errors["low rank"], errors["random DFT"], draws), r
        assert clearly_below(errors["selected DFT re/im"], errors["low rank"], draws), r
        assert clearly_below(errors["top DCT"], errors["low rank"], draws), r
    errors = relative_errors(W, small // 2 * sum(shape), generator)
    assert clearly_below(errors["low rank"], errors["selected DFT re/im"], draws)
    assert clearly_below(errors["low rank"], errors["top DCT"], draws)


@settings(max_examples=30, deadline=None)
@given(p=st.integers(1, 9), q=st.integers(1, 9), seed=st.integers(0, 2**16), data=st.data())
def test_theorem_2_top_dct_has_the_expressivity_of_selected_dft_real_and_imaginary_parts(p, q, seed, data):
    """LoCA Theorem 2, exactly, on small matrices of every shape (odd and even sides). The map
    T(W) = inverse_real_dft2(dct2(W)) gives the matrix whose DFT real/imaginary components are W's DCT
    coefficients. T is orthogonal (both transforms are orthonormal), so it carries an iid Gaussian matrix
    to an iid Gaussian matrix; and for every W and k the top-k DCT error of W equals the top-k DFT re/im
    error of T(W). Hence the two selections have one error distribution at every k. Float64: to 1e-12."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.eye(p * q, dtype=F64).view(p * q, p, q)  # every unit matrix of R^(p x q)
    T = inverse_real_dft2(dct2(basis)).reshape(p * q, p * q)  # row i: T of the i-th unit matrix
    torch.testing.assert_close(T @ T.T, torch.eye(p * q, dtype=F64), rtol=0, atol=1e-12)
    W = torch.randn(p, q, dtype=F64, generator=generator)
    k = data.draw(st.integers(0, p * q))
    V = inverse_real_dft2(dct2(W))  # T(W)
    error_dct = torch.linalg.matrix_norm(W - idct2(keep_top(dct2(W), k)))
    error_dft = torch.linalg.matrix_norm(V - inverse_real_dft2(keep_top(real_dft2(V), k)))
    assert error_dct.item() == pytest.approx(error_dft.item(), rel=1e-12, abs=1e-12)
    assert torch.linalg.matrix_norm(V).item() == pytest.approx(torch.linalg.matrix_norm(W).item(), rel=1e-12)


# -----------------------------------------------------------------------------
# Table 5's variants as real runs: scripts/sst2_variants.sh (REPRODUCE §4e)


def test_the_variants_sweep_runs_each_variant_with_its_flags_and_refuses_an_unknown_one(tmp_path):
    """Two variants through the script on the tiny random BERT and a 40-example SST-2 (one epoch: 2 steps of 32):
    every seed's run records the variant's setting (V2's T_s capped at the run's 2 steps); an unknown variant is
    named on one line, exit status 2, before any run starts."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    data = tmp_path / "sst2"
    data.mkdir()
    words = "good bad great awful fine poor nice dull".split()
    for name, n in (("train.tsv", 40), ("dev.tsv", 8)):
        lines = [f"{words[i % 8]} {words[(3 * i) % 8]} film\t{i % 2}" for i in range(n)]
        (data / name).write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    script = ["bash", str(repo / "scripts" / "sst2_variants.sh"), "tiny", str(data), str(tmp_path / "out"), "3"]
    refused = subprocess.run([*script, "loca-v9"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "unknown variant loca-v9" in refused.stderr
    assert not (tmp_path / "out").exists()
    done = subprocess.run([*script, "loca-v2", "spectral_a-bottom"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "FAILED" not in done.stderr, done.stderr
    for seed in (6, 66, 666):
        v2 = json.loads((tmp_path / "out" / f"loca-v2-{seed}" / "results.json").read_text())["config"]
        bottom = json.loads((tmp_path / "out" / f"spectral_a-bottom-{seed}" / "results.json").read_text())["config"]
        assert (v2["method"], v2["seed"], v2["method_settings"]["T_s"]) == ("loca", seed, 2)
        assert (bottom["method"], bottom["hyperparameters"]["columns"]) == ("spectral_a", "bottom")
