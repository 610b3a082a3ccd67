"""
train.py with its CUDA-graph step (after torch.compile, --compile) against the same runs with --eager, on a real checkpoint and task: the
same training losses and dev metrics (to float tolerance), and the wall time of each. Dropout is switched
off in a copy of the checkpoint's config (graphs draw other dropout masks than eager steps).

    python scripts/graph_vs_eager.py --model ../minilm --data-dir ../glue/SST-2 --task sst2 --out /tmp/gve
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TRAIN = Path(__file__).resolve().parent.parent / "train.py"

RUNS = {"lora": [], "fourierft": [], "loca": ["--B-a", "10", "--B-l", "20", "--T-s", "120"],  # both phases, then frozen
        "foura": [], "foura-nogate": ["--no-gate"], "spectral_a": [], "spectral_r": [],
        "lora-model": ["--compile", "model"], "lora-graphs": ["--compile", "none"]}  # these short graph runs compile adapters by default

p = argparse.ArgumentParser()
p.add_argument("--model", required=True), p.add_argument("--data-dir", required=True), p.add_argument("--task", default="sst2")
p.add_argument("--runs", default=",".join(RUNS)), p.add_argument("--steps", type=int, default=200)
p.add_argument("--train-examples", type=int, default=6400), p.add_argument("--eval-every", type=int, default=25)
p.add_argument("--precision", default="bf16"), p.add_argument("--out", required=True), p.add_argument("--json")
args = p.parse_args()
out = Path(args.out)
model = out / "model"  # the checkpoint without dropout
model.mkdir(parents=True, exist_ok=True)
for f in Path(args.model).iterdir():
    if f.name != "config.json" and not (model / f.name).exists():
        (model / f.name).symlink_to(f.resolve())
config = json.loads((Path(args.model) / "config.json").read_text())
config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
(model / "config.json").write_text(json.dumps(config))
data = out / "data"  # the first --train-examples training examples, the whole dev set
data.mkdir(exist_ok=True)
for name in ("train.tsv", "dev.tsv"):
    lines = (Path(args.data_dir) / name).read_text().splitlines(keepends=True)
    (data / name).write_text("".join(lines[:args.train_examples + 1] if name == "train.tsv" else lines))

report = {}
for run in args.runs.split(","):
    method = run.split("-")[0]
    logs = {}
    for mode in ("graph", "eager"):
        flags = ["--model", str(model), "--data-dir", str(data), "--task", args.task, "--method", method,
                 "--max-steps", str(args.steps), "--eval-every", str(args.eval_every), "--batch-size", "32",
                 "--max-length", "128", "--precision", args.precision, "--out", str(out / f"{run}-{mode}"), *RUNS[run]]
        t0 = time.time()
        subprocess.run([sys.executable, str(TRAIN), *flags, *(["--eager"] if mode == "eager" else [])], check=True)
        lines = [json.loads(line) for line in (out / f"{run}-{mode}" / "log.jsonl").read_text().splitlines()]
        logs[mode] = dict(wall_s=time.time() - t0, losses=[line["loss"] for line in lines],
                          metrics=[line["metrics"]["dev"] for line in lines], times=[line["time"] for line in lines])
    g, e = logs["graph"], logs["eager"]
    rel = max(abs(a - b) / abs(b) for a, b in zip(g["losses"], e["losses"]))
    key = next(iter(e["metrics"][0]))
    acc = max(abs(a[key] - b[key]) for a, b in zip(g["metrics"], e["metrics"]))
    # the time of the training steps alone: from the first evaluation to the last (evaluations included)
    span = lambda t: t[-1] - t[0]
    report[run] = dict(logs, max_rel_loss_diff=rel, max_metric_diff=acc, metric=key)
    print(f"RESULT {run:<13} max rel diff of logged losses {rel:.2e}, max |d {key}| {acc:.4f} "
          f"(final {g['metrics'][-1][key]:.4f} graph, {e['metrics'][-1][key]:.4f} eager); "
          f"{args.steps - args.eval_every} steps + evals: {span(g['times']):.2f} s graph, {span(e['times']):.2f} s eager",
          flush=True)
    if args.json:  # after every run: a run cut short still leaves the ones before it
        Path(args.json).write_text(json.dumps(report, indent=1))
