"""LoCA: the finite-difference location gradient, the alternating schedule, the toy of Appendix M."""

import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

import spectral_ft as sf


def make_loca(out_features, in_features, n, seed, alpha=1.0):
    torch.manual_seed(seed)
    base = nn.Linear(in_features, out_features).double()
    adapter = sf.LoCA(base, n=n, alpha=alpha, seed=seed)
    with torch.no_grad():
        adapter.coefficients.normal_()
    return adapter


def linear_loss(adapter, x, weights):
    """A loss linear in ΔW, so finite differences of it are exact."""
    return (adapter(x) * weights).sum()


def move(adapter, k, axis, new_index):
    """Put location k on grid index `new_index` along `axis` (rows 0, cols 1)."""
    size = adapter.out_features if axis == 0 else adapter.in_features
    with torch.no_grad():
        adapter.locations[axis, k] = new_index / (size - 1)


shapes = st.tuples(st.integers(2, 12), st.integers(2, 12))


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), alpha=st.floats(0.1, 3.0), data=st.data())
def test_loca_location_grad_matches_central_difference(shape, seed, alpha, data):
    """∂L/∂location equals the central difference of L from moving the location one grid
    step either way (one-sided at the edges), in grid units times (size - 1)."""
    out_features, in_features = shape
    n = data.draw(st.integers(1, min(6, out_features * in_features)))
    adapter = make_loca(out_features, in_features, n, seed, alpha)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(5, in_features, dtype=torch.float64, generator=generator)
    weights = torch.randn(5, out_features, dtype=torch.float64, generator=generator)

    linear_loss(adapter, x, weights).backward()
    grad = adapter.locations.grad.clone()  # (2, n)

    start = adapter.locations.detach().clone()
    indices = adapter.location_indices()
    for k in range(n):
        for axis, size in ((0, out_features), (1, in_features)):
            i = int(indices[axis, k])
            after, before = min(i + 1, size - 1), max(i - 1, 0)
            losses = []
            for j in (after, before):
                move(adapter, k, axis, j)
                with torch.no_grad():
                    losses.append(linear_loss(adapter, x, weights).item())
                adapter.locations.data.copy_(start)
            difference = (losses[0] - losses[1]) / (after - before)
            assert grad[axis, k].item() == pytest.approx(difference * (size - 1), rel=1e-9, abs=1e-9)


def test_loca_location_grad_is_zero_on_a_single_row_grid():
    adapter = make_loca(1, 7, 3, seed=0)
    adapter(torch.randn(4, 7, dtype=torch.float64)).sum().backward()
    assert torch.all(adapter.locations.grad[0] == 0)
    assert torch.any(adapter.locations.grad[1] != 0)


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_loca_coefficient_grad_passes_gradcheck(shape, seed):
    adapter = make_loca(*shape, n=min(5, shape[0] * shape[1]), seed=seed)

    def output(coefficients):  # functional form through the autograd.Function itself
        C_out = sf.dct_matrix(shape[0], torch.float64)
        C_in = sf.dct_matrix(shape[1], torch.float64)
        return sf._LoCADelta.apply(coefficients, adapter.locations, C_out, C_in, adapter.alpha)

    coefficients = adapter.coefficients.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(output, (coefficients,))


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_loca_location_indices_round_to_nearest_grid_point(shape, seed):
    adapter = make_loca(*shape, n=min(4, shape[0] * shape[1]), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        adapter.locations.copy_(torch.rand(2, adapter.n, dtype=torch.float64, generator=generator) * 1.4 - 0.2)
    sizes = torch.tensor([[shape[0] - 1], [shape[1] - 1]], dtype=torch.float64)
    expected = torch.round(adapter.locations.detach() * sizes).clamp(torch.zeros_like(sizes), sizes).long()
    assert torch.equal(adapter.location_indices(), expected)
    assert adapter.location_indices().dtype == torch.long


def test_loca_initial_locations_are_distinct_grid_points():
    adapter = make_loca(9, 7, 40, seed=3)
    flat = adapter.location_indices()[0] * 7 + adapter.location_indices()[1]
    assert flat.unique().numel() == 40
    assert torch.all((adapter.locations >= 0) & (adapter.locations <= 1))


# ----------------------------------------------------------------------------- schedule


def loca_stack():
    torch.manual_seed(0)
    model = nn.ModuleDict({"query": nn.Linear(8, 8), "value": nn.Linear(8, 8), "other": nn.Linear(8, 8)})
    sf.inject(model, "loca", n=10)
    return model


def test_loca_schedule_alternates_then_freezes_locations():
    model = loca_stack()
    schedule = sf.LoCASchedule(model, B_a=2, B_l=3, T_s=12)
    phases = []
    for _ in range(15):
        phases.append(schedule.phase)
        adapter = model["query"]
        assert adapter.coefficients.requires_grad == (schedule.phase != "locations")
        assert adapter.locations.requires_grad == (schedule.phase == "locations")
        schedule.step()
    c, l, f = "coefficients", "locations", "frozen"
    assert phases == [c, c, l, l, l, c, c, l, l, l, c, c, f, f, f]
    # after T_s the locations no longer count as trainable: coefficients only
    assert sf.count_trainable(model) == 2 * 10


def test_loca_schedule_only_moves_the_phase_tensors_and_clamps_locations():
    model = loca_stack()
    schedule = sf.LoCASchedule(model, B_a=1, B_l=1, T_s=100)
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if "base" not in n], lr=0.5, weight_decay=0.1)
    x = torch.randn(16, 8)
    for step in range(4):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        phase = schedule.phase
        (model["query"](x) ** 2 + model["value"](x) ** 2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
        for name, p in model.named_parameters():
            changed = not torch.equal(before[name], p)
            if name.endswith("locations"):
                assert changed == (phase == "locations")
                assert torch.all((p >= 0) & (p <= 1))
            if name.endswith("coefficients"):
                assert changed == (phase == "coefficients")
            if "base" in name:
                assert not changed


def test_loca_schedule_state_round_trip():
    model = loca_stack()
    schedule = sf.LoCASchedule(model, B_a=2, B_l=3, T_s=20)
    for _ in range(7):
        schedule.step()
    resumed = sf.LoCASchedule(loca_stack(), B_a=2, B_l=3, T_s=20)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.phase == schedule.phase == "locations"


def test_loca_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="LoCA adapters"):
        sf.LoCASchedule(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="B_a"):
        sf.LoCASchedule(loca_stack(), B_a=-1)
    with pytest.raises(ValueError, match="B_a \\+ B_l"):
        sf.LoCASchedule(loca_stack(), B_a=0, B_l=0)


# ----------------------------------------------------------------------------- Appendix M toy


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_loca_toy_recovers_true_locations(seed):
    """LoCA Appendix M: a 6x6 layer whose target is a sparse DCT with 3 coefficients.
    Locations re-initialised one grid step off (along a random axis and direction) return
    to the true ones under the alternating schedule (SGD, lr 0.02 coefficients / 0.05 per
    grid step for locations, i.e. 0.05 / 5² in [0, 1] units; period 10)."""
    N = 6
    generator = torch.Generator().manual_seed(seed)
    true = torch.tensor([[1, 1, 4], [1, 4, 2]])  # (rows; cols), interior and apart
    signs = torch.where(torch.rand(3, generator=generator) < 0.5, -1.0, 1.0).double()
    coefficients = (torch.rand(3, generator=generator, dtype=torch.float64) + 1.0) * signs
    S = torch.zeros(N, N, dtype=torch.float64)
    S[true[0], true[1]] = coefficients
    C = sf.dct_matrix(N, torch.float64)
    W_true = C.T @ S @ C  # iDCT2

    base = nn.Linear(N, N, bias=False).double()
    nn.init.zeros_(base.weight)
    model = nn.ModuleList([sf.LoCA(base, n=3)])
    adapter = model[0]
    start = true.clone()
    axis = torch.randint(2, (3,), generator=generator)
    start[axis, torch.arange(3)] += torch.randint(2, (3,), generator=generator) * 2 - 1
    with torch.no_grad():
        adapter.locations.copy_(start / (N - 1))
        adapter.coefficients.copy_(coefficients)
    assert not torch.equal(adapter.location_indices(), true)

    optimizer = torch.optim.SGD([{"params": [adapter.coefficients], "lr": 0.02},
                                 {"params": [adapter.locations], "lr": 0.05 / (N - 1) ** 2}])
    schedule = sf.LoCASchedule(model, B_a=10, B_l=10, T_s=200)
    losses = []
    for _ in range(200):
        x = torch.randn(64, N, dtype=torch.float64, generator=generator)
        loss = ((adapter(x) - x @ W_true.T) ** 2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert torch.equal(adapter.location_indices(), true)
    assert sum(losses[-10:]) < sum(losses[:10]) / 100
