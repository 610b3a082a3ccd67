"""
FoRA's rank flexibility ("LoRA Unleashed"): at a fixed count n of spectral coefficients per matrix, which rank do
Ã (r, d) and ΔW = B̃ Ã reach, for the ranks of the paper's Table 6 (8, 32, 64, 256) on RoBERTa's q/v (d = 768 base,
1024 large)? Ã = Re(IDFT2) of its n coefficients as spectral_ft.FoRA draws them (seeds 0 ... S-1 for the locations
and spectrum_A; B̃'s spectrum drawn standard normal, as a trained one); ranks count singular values above
1e-9·σ_max (float64). `bound` is the dimension of the row frequencies Ã's locations touch (p and r - p share cos
and sin): Ã's columns lie in their span, so rank(Ã) <= bound whatever the coefficients. LoRA at FoRA's count 2n
(2·250 or 2·500 parameters) reaches no rank at all: rank 1 costs d + d = 1536 (2048).

    python scripts/fora_rank.py [--seeds 20]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from spectral_ft import FoRA, sparse_idft2_real  # noqa: E402


def rank(M):
    sv = np.linalg.svd(M, compute_uv=False)
    return int((sv > 1e-9 * sv.max(initial=0.0)).sum())


def row_frequency_bound(rows, r):
    classes = {min(p, (r - p) % r) for p in rows.tolist()}
    return sum(1 if p == 0 or 2 * p == r else 2 for p in classes)


@torch.no_grad()
def ranks(d, n, r, seed):
    """(rank Ã, rank ΔW, bound) of one FoRA layer on a (d, d) weight."""
    torch.manual_seed(seed)
    fora = FoRA(torch.nn.Linear(d, d, dtype=torch.float64), n=n, r=r, seed=seed)
    fora.spectrum_B.normal_(generator=torch.Generator().manual_seed(seed))
    A = sparse_idft2_real(fora.spectrum_A, fora.indices_A, (r, d))  # (r, d)
    B = sparse_idft2_real(fora.spectrum_B, fora.indices_B, (d, r))  # (d, r)
    R_B, R_A = torch.linalg.qr(B)[1], torch.linalg.qr(A.T)[1]  # B = Q_B R_B, Aᵀ = Q_A R_A: rank(B A) = rank(R_B R_Aᵀ)
    return rank(A.numpy()), rank((R_B @ R_A.T).numpy()), row_frequency_bound(fora.indices_A[0], r)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args(argv)
    print("| d | n | r | rank Ã (min / median / max) | Ã at rank r | rank ΔW (min / median / max) | bound (min / max) |")
    print("|---|---|---|---|---|---|---|")
    for d in (768, 1024):
        for n in (250, 500):
            for r in (8, 32, 64, 256):
                got = np.array([ranks(d, n, r, seed) for seed in range(args.seeds)])  # (seeds, 3)
                a, dw, bound = got.T
                print(f"| {d} | {n} | {r} | {a.min()} / {int(np.median(a))} / {a.max()} | {(a == r).sum()}/{len(a)} | "
                      f"{dw.min()} / {int(np.median(dw))} / {dw.max()} | {bound.min()} / {bound.max()} |")
                assert (a <= np.minimum(bound, r)).all()


if __name__ == "__main__":
    main()
