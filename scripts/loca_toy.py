"""
loca_toy.py: LoCA's Appendix M toy over many seeds: how often do the learnt locations reach the true ones?

The paper's setting (Du et al., ICLR 2025, Appendix M, as this project reads it): 5,000 samples x ~ N(0, I_6);
a three-layer network of 6 x 6 matrices, y = W3 σ(M σ(W1 x)), whose middle matrix M = iDCT2(S) has 3
nonzero DCT coefficients (a spectral_ft.LoCA layer on a zero base, n = 3, alpha = 1). The ground truth is a
random draw (W1, W3 as nn.Linear draws them, 3 distinct uniform locations, N(0, 1) coefficients); the
student keeps W1 and W3 (frozen), re-draws its 3 locations uniformly and zeroes its coefficients, and
learns them by SGD on the mean squared error over the 5,000 samples (full batch), coefficients at lr 0.02,
locations at lr 0.05 (on the [0, 1] location parameter, as the authors' layer holds it), alternating
every 10 steps (LoCASchedule B_a = B_l = 10, locations never frozen: T_s = --steps).

Per seed: "located" when the learnt grid points are the true ones (as a set: the three coefficients are
interchangeable), "fitted" when the final loss is below --fit (default 1e-2) times the loss at the start
(zero coefficients). What the paper leaves open, the flags vary, one at a time:

    --activation none|relu|tanh   σ (default none)    --layers 1|3   1: W1 = W3 = I, M alone (default 3)
    --difference central|forward|backward (Table 5)   --mode alternating|joint (Table 5's V3)
    --units unit|grid   lr per [0, 1] location (default, the authors' parametrisation) or per grid step
    --no-clamp          the location step unclamped (the authors clamp it to one grid step)
    --start uniform|adjacent   re-drawn locations: uniform (the paper) or one grid step off the truth
    --coefficients zero|true   the student's coefficients start at 0 (the paper) or at the true values
    --steps (default 1000)  --seeds (default 100)  --first-seed  --batch (default 5000: full batch)

    python scripts/loca_toy.py                       # the paper's setting, 100 seeds
    python scripts/loca_toy.py --layers 1 --activation none --start adjacent

CPU only, one thread; about 1 s a seed at the defaults.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import spectral_ft  # noqa: E402

N, K = 6, 3  # matrix size, nonzero coefficients
ACTIVATIONS = {"none": nn.Identity(), "relu": nn.ReLU(), "tanh": nn.Tanh()}


class UnclampedDelta(spectral_ft._LoCADelta):
    """spectral_ft's LoCA Function with the location step left unclamped (the --no-clamp variant)."""

    @staticmethod
    def backward(ctx, grad):
        coefficients, rows, cols, C_out, C_in = ctx.saved_tensors
        D = C_out @ grad @ C_in.T  # (out, in)
        ahead, behind, divisor = spectral_ft.LOCA_DIFFERENCES[ctx.difference]
        last_row, last_col, scale = len(C_out) - 1, len(C_in) - 1, ctx.alpha / divisor * coefficients
        d_row = D[(rows + ahead).clamp(max=last_row), cols] - D[(rows - behind).clamp(min=0), cols]
        d_col = D[rows, (cols + ahead).clamp(max=last_col)] - D[rows, (cols - behind).clamp(min=0)]
        grad_locations = torch.stack([d_row * scale * last_row, d_col * scale * last_col])
        return ctx.alpha * D[rows, cols], grad_locations, None, None, None, None


class UnclampedLoCA(spectral_ft.LoCA):
    def delta_weight(self):
        C = spectral_ft.dct_matrix(N, self.coefficients.dtype)
        return UnclampedDelta.apply(self.coefficients, self.locations, C, C, self.alpha, self.difference)


def distinct_grid_points(generator):
    """K distinct points of the N x N grid, as [0, 1] locations (2, K) drawn uniformly."""
    flat = torch.randperm(N * N, generator=generator)[:K]
    return torch.stack([flat // N, flat % N]).double() / (N - 1)


def start_locations(true, how, generator):
    """Uniform re-draw (the paper), or each true point moved one grid step along a random axis, inward."""
    if how == "uniform":
        return torch.rand(2, K, generator=generator, dtype=torch.float64)
    grid = (true * (N - 1)).round()
    axis = torch.randint(2, (K,), generator=generator)
    step = torch.randint(2, (K,), generator=generator) * 2 - 1
    moved = grid[axis, torch.arange(K)] + step
    step = torch.where((moved < 0) | (moved > N - 1), -step, step)  # stay on the grid
    grid[axis, torch.arange(K)] += step
    return grid / (N - 1)


def run(seed, args):
    """(located, fitted, final loss / initial loss, true points held at the end, at the start) for one seed."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    linear = lambda: nn.Linear(N, N, bias=False).double().weight.detach()  # (N, N), nn.Linear's draw
    W1, W3 = (linear(), linear()) if args.layers == 3 else (torch.eye(N, dtype=torch.float64),) * 2
    sigma = ACTIVATIONS[args.activation]
    layer = UnclampedLoCA if args.no_clamp else spectral_ft.LoCA
    zero = nn.Linear(N, N, bias=False).double().requires_grad_(False)
    nn.init.zeros_(zero.weight)
    teacher = spectral_ft.LoCA(zero, n=K, seed=generator)
    student = layer(zero, n=K, seed=generator, difference=args.difference)
    true = distinct_grid_points(generator)
    with torch.no_grad():
        teacher.locations.copy_(true)
        teacher.coefficients.normal_(generator=generator)
        student.locations.copy_(start_locations(true, args.start, generator))
        if args.coefficients == "true":  # the diagnostic: the true values, at the student's locations
            student.coefficients.copy_(teacher.coefficients)
        target = teacher.delta_weight()  # (N, N), M*
    x = torch.randn(5000, N, dtype=torch.float64, generator=generator)
    network = lambda middle, inputs: sigma(middle(sigma(inputs @ W1.T))) @ W3.T  # (rows, N)
    with torch.no_grad():
        y = network(teacher, x)
    covariance = x.T @ x / len(x)  # (N, N): with σ = identity the full-batch loss needs only this

    def loss(rows):
        if args.activation == "none" and rows == slice(None):  # mean ‖W3 (M − M*) W1 x‖², exactly, from x's covariance
            error = W3 @ (student.delta_weight() - target) @ W1  # (N, N)
            return torch.einsum("ij,jk,ik->", error, covariance, error)
        return ((network(student, x[rows]) - y[rows]) ** 2).sum(1).mean()

    location_lr = args.lr_locations / (N - 1) ** 2 if args.units == "grid" else args.lr_locations
    optimizer = torch.optim.SGD([{"params": [student.coefficients], "lr": args.lr_coefficients},
                                 {"params": [student.locations], "lr": location_lr}])
    schedule = spectral_ft.LoCASchedule(nn.ModuleList([student]), B_a=10, B_l=10, T_s=args.steps, mode=args.mode)
    truth = {tuple(p) for p in teacher.location_indices().T.tolist()}
    held_at_start = len(truth & {tuple(p) for p in student.location_indices().T.tolist()})
    with torch.no_grad():
        start = loss(slice(None)).item()
    for step in range(args.steps):
        rows = slice(None) if args.batch >= len(x) else torch.randint(len(x), (args.batch,), generator=generator)
        optimizer.zero_grad()
        loss(rows).backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        final = loss(slice(None)).item()
    learnt = {tuple(p) for p in student.location_indices().T.tolist()}
    return learnt == truth, final <= args.fit * start, final / start if start > 0 else 0.0, len(learnt & truth), \
        held_at_start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--seeds", type=int, default=100), a("--first-seed", type=int, default=0), a("--steps", type=int, default=1000)
    a("--batch", type=int, default=5000), a("--layers", type=int, choices=(1, 3), default=3)
    a("--activation", choices=sorted(ACTIVATIONS), default="none")
    a("--difference", choices=("central", "forward", "backward"), default="central")
    a("--mode", choices=spectral_ft.LoCASchedule.MODES, default="alternating")
    a("--units", choices=("unit", "grid"), default="unit"), a("--no-clamp", action="store_true")
    a("--start", choices=("uniform", "adjacent"), default="uniform")
    a("--coefficients", choices=("zero", "true"), default="zero")
    a("--lr-coefficients", type=float, default=0.02), a("--lr-locations", type=float, default=0.05)
    a("--fit", type=float, default=1e-2, help="fitted: final loss below this fraction of the initial loss")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.batch < 1:
        p.exit(2, "loca_toy.py: --seeds, --steps and --batch must be >= 1\n")
    torch.set_num_threads(1)
    began, cpu = time.perf_counter(), time.process_time()
    results = [run(seed, args) for seed in range(args.first_seed, args.first_seed + args.seeds)]
    located = sum(r[0] for r in results)
    fitted = sum(r[1] for r in results)
    both = sum(r[0] and r[1] for r in results)
    ratios = sorted(r[2] for r in results)
    points, points_at_start = sum(r[3] for r in results), sum(r[4] for r in results)
    setting = " ".join(f"{k}={v}" for k, v in vars(args).items())
    print(f"LoCA Appendix M toy, {args.seeds} seeds ({setting})")
    print(f"located (learnt grid points = true ones): {located}/{args.seeds} = {located / args.seeds:.0%}; "
          f"true points held at the end: {points}/{K * args.seeds} = {points / (K * args.seeds):.0%} "
          f"(at the start: {points_at_start})")
    print(f"fitted (final loss < {args.fit:g} x initial): {fitted}/{args.seeds} = {fitted / args.seeds:.0%}; "
          f"both {both}; fitted without the true locations {fitted - both}")
    print(f"final/initial loss: median {ratios[len(ratios) // 2]:.3g}, best {ratios[0]:.3g}, worst {ratios[-1]:.3g}")
    print(f"time: {time.perf_counter() - began:.1f} s wall, {time.process_time() - cpu:.1f} s CPU (one thread)")


if __name__ == "__main__":
    main()
