"""
GLUE metrics in plain numpy: accuracy, binary F1, Matthews correlation, Pearson and
Spearman correlation, and `compute_metrics(task, preds, labels)` that picks the ones
each GLUE task reports.

Conventions follow the reference libraries so that numbers are comparable:
- `f1` is binary F1 of the positive class 1, 0.0 when there is no true positive
  (sklearn's `f1_score` with `zero_division=0`).
- `matthews_corrcoef` is the multiclass form of sklearn's, 0.0 when undefined
  (a constant prediction or a constant label vector).
- `pearson` / `spearman` match scipy.stats; `spearman` ranks ties by their average rank.
  Both are nan when an input is constant (the correlation is undefined), as in scipy.

Every function computes in float64 and returns a Python float.
"""

import math

import numpy as np


def _as_pair(preds, labels, name_a="preds", name_b="labels"):
    a = np.asarray(preds)
    b = np.asarray(labels)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"{name_a} and {name_b} must be 1-D, got shapes {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} entries but {name_b} has {len(b)}: they must pair up")
    if len(a) == 0:
        raise ValueError(f"{name_a} and {name_b} are empty: a metric needs at least one example")
    return a, b


def accuracy(preds, labels) -> float:
    """Fraction of positions where preds == labels."""
    p, y = _as_pair(preds, labels)
    return float(np.mean(p == y))


def f1(preds, labels) -> float:
    """Binary F1 of class 1: 2·tp / (2·tp + fp + fn); 0.0 when tp = 0."""
    p, y = _as_pair(preds, labels)
    p, y = (p == 1), (y == 1)
    tp = int(np.sum(p & y))
    fp = int(np.sum(p & ~y))
    fn = int(np.sum(~p & y))
    return 0.0 if tp == 0 else 2.0 * tp / (2.0 * tp + fp + fn)


def matthews_corrcoef(preds, labels) -> float:
    """
    Matthews correlation coefficient (multiclass form, as sklearn):
        MCC = (c·s − Σ_k p_k·t_k) / sqrt((s² − Σ_k p_k²)(s² − Σ_k t_k²))
    with s samples, c correct, p_k / t_k how often class k is predicted / true.
    0.0 when the denominator is 0 (one side constant).
    """
    p, y = _as_pair(preds, labels)
    classes = np.union1d(p, y)
    p_k = np.array([np.sum(p == k) for k in classes], dtype=np.float64)  # (K,)
    t_k = np.array([np.sum(y == k) for k in classes], dtype=np.float64)  # (K,)
    s = float(len(y))
    c = float(np.sum(p == y))
    cov_py = c * s - p_k @ t_k
    cov_pp = s * s - p_k @ p_k
    cov_yy = s * s - t_k @ t_k
    if cov_pp * cov_yy == 0:
        return 0.0
    return float(cov_py / math.sqrt(cov_pp * cov_yy))


def pearson(x, y) -> float:
    """Pearson correlation r = Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²); nan if x or y is constant."""
    x, y = _as_pair(x, y, "x", "y")
    x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
    y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
    # Normalise first: the products of raw sums can overflow or lose precision.
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return float("nan")
    r = float((x / nx) @ (y / ny))
    return max(-1.0, min(1.0, r))  # rounding can step just past ±1


def rankdata(x) -> np.ndarray:
    """Ranks 1..n of a 1-D array; tied values share the average of their ranks (scipy's 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # (runs,)
    ends = np.r_[starts[1:], len(xs)]  # (runs,) exclusive
    avg = (starts + 1 + ends) / 2.0  # mean of the ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation: the Pearson correlation of the average ranks."""
    x, y = _as_pair(x, y, "x", "y")
    return pearson(rankdata(x), rankdata(y))


# metric name -> function(preds, labels)
METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(task: str, preds, labels) -> dict:
    """
    The metrics GLUE reports for `task`, e.g. rte -> {"accuracy": ...},
    mrpc -> {"f1", "accuracy", "combined"}, stsb -> {"pearson", "spearman", "combined"},
    cola -> {"mcc"}. "combined" is the mean of the task's metrics when it has several.
    The headline number is `TASKS[task].main_metric` (see `main_metric`).
    For classification pass class indices; for stsb pass float scores.
    """
    from data.glue_tasks import get_task  # late import: metrics stay usable on their own

    t = get_task(task)
    out = {name: METRICS[name](preds, labels) for name in t.metrics}
    if len(out) > 1:
        out["combined"] = float(np.mean(list(out.values())))
    return out


def main_metric(task: str) -> str:
    """Name of the task's headline metric, a key of compute_metrics' dict (e.g. 'mcc' for cola)."""
    from data.glue_tasks import get_task

    return get_task(task).main_metric
