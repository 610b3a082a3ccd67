"""
Spectral Adapter's multi-adapter fusion (Zhang & Pilanci 2024, §4.2) on text: two GLUE tasks trained on disjoint
blocks of singular vectors, fused into one backbone, each task judged with its own head on it; against the same two
tasks trained with LoRA and fused by adding their ΔW. The paper shows fusion on diffusion images only.

    python scripts/spectral_fusion.py MODEL_DIR [--out runs/fusion] [--r 8] [--seed 0] [--glue-dir DIR] \\
        [--device cuda] [any train.py flag, e.g. --epochs 3 --lr 1e-3]

MODEL_DIR: a pretrained checkpoint folder (e.g. all-MiniLM-L6-v2 from ../shared/get_minilm.sh); both tasks must
start from the same weights, so --model tiny (a new random model per run) does not fit. The four runs go through
train.py as subprocesses (SST-2 on block 0, RTE on block 1 of the singular vectors; LoRA on both), into
OUT/<method>-<task>; a folder that already holds results.json is reused. Spectral A's block needs train.py's
--columns flag (the hyperparameter `columns` of spectral_ft.SpectralAdapterA): where train.py lacks it, this
script says so and stops (exit 2). Then, on the CPU in float32 (one evaluation of each dev set per row):

    alone     each task's own adapter and head (the runs' final weights)
    base      the head on the untouched backbone W0 (what the adapter adds)
    fused     spectral_ft.fuse_spectral with λ = 1/2 (the paper's 1/n) and λ = 1 (the authors' fusion script);
              LoRA: W0 + λ (ΔW_sst2 + ΔW_rte), λ = 1 (the usual sum of LoRAs) and 1/2

The table (dev accuracy) is printed and saved to OUT/fusion.json.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import export  # noqa: E402
import spectral_ft  # noqa: E402
from data import TASKS, load_task, main_metric, tokenize  # noqa: E402
from encoder.tokenization import load_tokenizer  # noqa: E402
from train import evaluate  # noqa: E402

TASK_BLOCKS = {"sst2": 0, "rte": 1}  # each task its own block of singular vectors: columns b·r ... b·r + r - 1
METHODS = ("spectral_a", "lora")
WEIGHTS = {"spectral_a": (0.5, 1.0), "lora": (1.0, 0.5)}  # λ per adapter; the first is each method's usual one


def train_flags(method, task, args, passthrough):
    flags = ["--method", method, "--model", str(args.model), "--task", task, "--r", str(args.r),
             "--seed", str(args.seed), "--out", str(args.out / f"{method}-{task}"), *passthrough]
    return flags + (["--columns", str(TASK_BLOCKS[task])] if method == "spectral_a" else [])


def run_train(flags, env, check_columns=None):
    """train.py with `flags` in a subprocess; check_columns: only --print-config, and the block it resolved to."""
    print_config = ["--print-config"] if check_columns is not None else []
    command = [sys.executable, str(ROOT / "train.py"), *flags, *print_config]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=check_columns is not None, text=True)
    if check_columns is None:
        if done.returncode:
            sys.exit(f"train.py {' '.join(flags)} failed (exit {done.returncode})")
        return
    if done.returncode:
        if "--columns" in done.stderr + done.stdout:
            print("train.py has no --columns flag yet: Spectral A cannot be trained on a chosen block of singular "
                  "vectors (add spectral_ft's hyperparameter 'columns' to config.py's hyperparameter flags)",
                  file=sys.stderr)
            sys.exit(2)
        sys.exit(f"train.py {' '.join(flags)} --print-config failed: {done.stderr.strip().splitlines()[-1:]}")
    resolved = json.loads(done.stdout)["hyperparameters"].get("columns")
    if str(resolved) != str(check_columns):
        sys.exit(f"train.py resolved columns={resolved!r}, not the block {check_columns}")


def load_run(folder, model_dir):
    """(model, tokenizer, config) of one run: the pretrained backbone, its adapters and head at their final weights,
    rebuilt as export.py rebuilds a run (float32, eval mode)."""
    config, _ = export.read_run(folder, "final")
    state, _ = export.read_trained(folder / export.ADAPTER_FILES["final"], config["method"])
    return export.adapted_model(config, model_dir, state, str(folder)), load_tokenizer(model_dir), config


def replaced(model, layers):
    """A copy of `model` whose adapted layers are the nn.Linear modules of `layers` ({name: module})."""
    model = copy.deepcopy(model)
    for name, module in layers.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, copy.deepcopy(module))
    return model


@torch.no_grad()
def fused_layers(method, adapters_by_task, weight):
    """{layer name: nn.Linear} of the tasks' adapters fused, layer by layer."""
    names = [name for name, _ in adapters_by_task[0]]
    fused = {}
    for name in names:
        adapters = [dict(a)[name] for a in adapters_by_task]
        if method == "spectral_a":
            fused[name] = spectral_ft.fuse_spectral(adapters, [weight] * len(adapters))
        else:  # LoRA: W0 + λ Σ ΔW_i
            linear = copy.deepcopy(adapters[0].base)
            linear.weight += weight * sum(a.delta_weight().to(linear.weight) for a in adapters)
            fused[name] = linear
    return fused


def accuracy(model, config, dev, tokenizer):
    encoded, labels = dev
    metrics = evaluate(model, config["task"], config["batch_size"], encoded, labels, tokenizer.pad_token_id)
    return metrics[main_metric(TASKS[config["task"]].name)]


def evaluate_fusion(method, args):
    """{row: {task: accuracy}} for one method: alone, base, and fused at each λ."""
    runs = {task: load_run(args.out / f"{method}-{task}", args.model) for task in TASK_BLOCKS}
    devs = {}
    for task, (model, tokenizer, config) in runs.items():
        dev = load_task(task, config["data_dir"])[1]["dev"]
        devs[task] = tokenize(tokenizer, dev, config["max_length"], 0)
    adapters = [spectral_ft.adapters(runs[task][0]) for task in TASK_BLOCKS]
    rows = {"alone": {t: accuracy(m, c, devs[t], tok) for t, (m, tok, c) in runs.items()},
            "base": {t: accuracy(replaced(m, {n: a.base for n, a in spectral_ft.adapters(m)}), c, devs[t], tok)
                     for t, (m, tok, c) in runs.items()}}
    for weight in WEIGHTS[method]:
        layers = fused_layers(method, adapters, weight)
        rows[f"fused λ={weight:g}"] = {t: accuracy(replaced(m, layers), c, devs[t], tok)
                                      for t, (m, tok, c) in runs.items()}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("model", type=Path, help="pretrained checkpoint folder shared by both tasks")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "fusion")
    parser.add_argument("--r", type=int, default=8, help="rank of every adapter (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glue-dir", type=Path, help="folder holding RTE/ and SST-2/ (sets $GLUE_DIR)")
    args, passthrough = parser.parse_known_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"model: {args.model} is not a checkpoint folder (no config.json): give the pretrained model's folder",
              file=sys.stderr)
        sys.exit(2)
    args.model, args.out = args.model.resolve(), args.out.resolve()
    env = dict(os.environ, **({"GLUE_DIR": str(args.glue_dir.resolve())} if args.glue_dir else {}))
    if args.glue_dir:
        os.environ["GLUE_DIR"] = env["GLUE_DIR"]
    for method in METHODS:
        for task in TASK_BLOCKS:
            flags = train_flags(method, task, args, passthrough)
            if method == "spectral_a":
                run_train(flags, env, check_columns=TASK_BLOCKS[task])
            if not (args.out / f"{method}-{task}" / "results.json").exists():
                run_train(flags, env)
    table = {method: evaluate_fusion(method, args) for method in METHODS}
    (args.out / "fusion.json").write_text(json.dumps(table, indent=2) + "\n")
    print(f"\n| method | backbone | {' | '.join(TASK_BLOCKS)} |\n|---|---|" + "---|" * len(TASK_BLOCKS))
    for method, rows in table.items():
        for row, scores in rows.items():
            print(f"| {method} | {row} | " + " | ".join(f"{scores[t]:.4f}" for t in TASK_BLOCKS) + " |")
    print(f"(dev {', '.join(main_metric(TASKS[t].name) for t in TASK_BLOCKS)}; saved {args.out / 'fusion.json'})")


if __name__ == "__main__":
    main()
