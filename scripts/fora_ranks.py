"""
FoRA's §4.5 comparison ("LoRA Unleashed", Figure 3 / Table 10) as real runs over ranks: at every rank r, FoRA and
random masking on LoRA (masked_lora) with the same n, so the same trainable count (2n a matrix while n <= r·d;
tests/test_baselines.py), and LoRA and VeRA at that r, on one GLUE task (default SST-2) with all-MiniLM-L6-v2
(6 layers, hidden 384: q and v are 384 x 384, 12 matrices). Then one table: a row per method, a column per r, each
cell "count · best dev metric mean ± std (seeds)", the count being results.json's trainable_parameters.adapter:
every adapted matrix together, head excluded (FoRA at n = 500 on MiniLM: 12,000, REPRODUCE §4b).

    python scripts/fora_ranks.py MODEL_DIR GLUE_TASK_DIR OUT_DIR [PARALLEL]    (train.py runs, then the table)
    python scripts/fora_ranks.py --table OUT_DIR                               (the table of the runs in OUT_DIR)

Ranks: §4.5's own ranks (Figure 3, Table 10) are not transcribed in the references at hand, so the default is Table
6's ranks, as scripts/fora_rank.py: 8 32 64 256. n = 500 (FoRA's Table 6 count, spectral_ft.FoRA's default) fits
every one of them on a 384-wide matrix (r·384 >= 3,072 > 500); a larger n is capped at r·d by FoRA and masked_lora
alike. Settings: a MiniLM checkpoint has no paper row, so run/paper_rows.py's GENERIC row applies to all four
methods: adapter lr lora 5e-4, masked_lora 3e-2, vera 4e-3, fora 3e-2 (GENERIC_LR), head lr 5e-3, weight decay 0,
warmup 0.06; each method's own defaults otherwise (lora alpha 8 at every r, LoRA's alpha/r convention; fora and
masked_lora alpha = r, scale 1; vera d_initial 0.1). Budget (this script's, not a paper's): batch 32, max length
128 (scripts/sst2_minilm.sh's), --max-steps 600 (of SST-2's 2,105 steps an epoch; dev every 200 steps), seeds 6,
66, 666: 48 runs, chosen for the whole sweep to fit one 600-second call on one H100 with 8 runs at a time
(REPRODUCE §4b, §4c: 2,105-step runs took 47-80 s each with 8 to 12 sharing an H100). A run whose results.json
exists is not run again, and one stopped with a checkpoint.pt is resumed: a sweep cut short finishes in the next call.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = ("fora", "masked_lora", "lora", "vera")


def commands(args):
    """{run folder name: train.py flags} of the sweep, seed by seed, rank by rank."""
    budget = [f"--{flag}={value}" for flag, value in (("epochs", args.epochs), ("max-steps", args.max_steps))
              if value is not None]
    common = ["--model", args.model, "--task", args.task, "--data-dir", args.data_dir, "--batch-size",
              str(args.batch_size), "--max-length", str(args.max_length), "--eval-every", str(args.eval_every), *budget]
    runs = {}
    for seed in args.seeds:
        for r in args.ranks:
            for method in METHODS:
                n = ["--n", str(args.n)] if method in ("fora", "masked_lora") else []
                runs[f"{method}-r{r}-{seed}"] = ["--method", method, "--r", str(r), *n, "--seed", str(seed), *common]
    return runs


def run(out, name, flags):
    """One train.py run into out/name (resumed from its checkpoint.pt if it has one), its output in out/name.log;
    True if it finished."""
    folder = out / name
    if (folder / "results.json").exists():
        return True
    flags = ["--resume", str(folder)] if (folder / "checkpoint.pt").exists() else [*flags, "--out", str(folder)]
    with open(out / f"{name}.log", "a") as log:
        code = subprocess.call([sys.executable, str(REPO / "train.py"), *flags], stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    if code:
        print(f"FAILED {name} (see {out / name}.log)", file=sys.stderr)
    return code == 0


def table(out):
    """The markdown table of out/<method>-r<r>-<seed>/results.json: a row per method, a column per rank."""
    cells, metrics = {}, set()
    for path in sorted(Path(out).glob("*/results.json")):
        results = json.loads(path.read_text())
        config = results["config"]
        key = (config["method"], config["hyperparameters"]["r"])
        cells.setdefault(key, []).append((results["trainable_parameters"]["adapter"], 100 * results["best"]["value"]))
        metrics.add(results["main_metric"])
    if not cells:
        return f"no run in {out} has a results.json"
    ranks = sorted({r for _, r in cells})
    methods = [m for m in METHODS if any(m == method for method, _ in cells)]
    lines = [f"count (trainable adapter parameters, head excluded) · best dev {' / '.join(sorted(metrics))} × 100, "
             "mean ± std (seeds)", "", "| method | " + " | ".join(f"r = {r}" for r in ranks) + " |",
             "|---" * (len(ranks) + 1) + "|"]
    for method in methods:
        row = []
        for r in ranks:
            runs = cells.get((method, r), [])
            counts, values = {c for c, _ in runs}, [v for _, v in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            row.append(f"{', '.join(f'{c:,}' for c in sorted(counts))} · {statistics.mean(values):.2f} ± {std:.2f} "
                       f"({len(values)})" if runs else "–")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("model", nargs="?", help="checkpoint folder (or hub id) of all-MiniLM-L6-v2")
    parser.add_argument("data_dir", nargs="?", help="the GLUE task's folder of TSVs")
    parser.add_argument("out", nargs="?", help="the sweep's folder: OUT/<method>-r<r>-<seed>/, logs, table.md")
    parser.add_argument("parallel", nargs="?", type=int, default=8, help="runs at a time (default 8)")
    parser.add_argument("--table", metavar="OUT_DIR", help="print the table of the runs in OUT_DIR and exit")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 64, 256])
    parser.add_argument("--seeds", type=int, nargs="+", default=[6, 66, 666])
    parser.add_argument("--n", type=int, default=500, help="fora's and masked_lora's coefficients a matrix")
    parser.add_argument("--max-steps", type=int, help="steps a run (default 600 unless --epochs is given)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    if not args.out:
        parser.error("MODEL_DIR, GLUE_TASK_DIR and OUT_DIR are needed (or --table OUT_DIR)")
    if args.max_steps is None and args.epochs is None:
        args.max_steps = 600
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        finished = list(pool.map(lambda item: run(out, *item), commands(args).items()))
    text = table(out)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0 if all(finished) else 1


if __name__ == "__main__":
    sys.exit(main())
