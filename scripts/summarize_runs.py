"""Markdown table of a sweep's runs: one row per method (or variant: the run folder's name without its seed), mean ±
std over seeds of the best and final dev metric (×100), trainable parameters outside the head, and wall seconds per run.
    python scripts/summarize_runs.py OUT_DIR [OUT_DIR ...]     (OUT_DIR/<method or variant>-<seed>/results.json)
"""
import json
import statistics
import sys
from pathlib import Path

rows = {}
for folder in sys.argv[1:]:
    for path in sorted(Path(folder).glob("*/results.json")):
        r = json.loads(path.read_text())
        method = path.parent.name.rsplit("-", 1)[0]  # sst2_minilm.sh's <method>, sst2_variants.sh's <variant>
        metric = r["main_metric"]
        rows.setdefault((folder, method), []).append((100 * r["best"]["value"], 100 * r["final"]["metrics"]["dev"][metric],
                                                      r["trainable_parameters"]["adapter"], r["wall_time_s"]))


def mean_std(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


print("| sweep | method | runs | best dev (mean ± std) | final dev | trainable (adapter) | wall s/run |")
print("|---|---|---|---|---|---|---|")
for (folder, method), runs in rows.items():
    best, final, trainable, wall = zip(*runs)
    print(f"| {folder} | {method} | {len(runs)} | {mean_std(best)} | {mean_std(final)} | {trainable[0]:,} | "
          f"{statistics.mean(wall):.1f} |")
