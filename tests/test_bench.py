"""bench.py runs on the CPU at a tiny size: every row and every ΔW path (a smoke test, no timing claims)."""

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
from run.errors import UsageError


import ast
import inspect

import train
from bench import TrainStep
def test_bench_smoke_runs_every_row_and_delta_path(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results, deltas = bench.main(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "2", "--seq", "8",
                                  "--steps", "2", "--warmup", "1", "--delta-sizes", "16", "--delta-n", "4,40",
                                  "--json", str(out)])
    assert [r["row"] for r in results][:2] == ["floor", "lora"]
    assert {r["row"] for r in results} == set(bench.ROWS)
    for r in results:
        assert r["ms"] > 0 and math.isfinite(r["tokens_per_s"])
        assert math.isnan(r["peak_mib"]) and math.isnan(r["saved_mib"])  # memory is measured on CUDA only
    by_row = {r["row"]: r for r in results}
    assert by_row["floor"]["trainable_adapter"] == 0 and by_row["lora"]["trainable_adapter"] == 2 * (2 * 8 * 16)
    assert [(d["d"], d["n"]) for d in deltas] == [(16, 4), (16, 40)]
    assert out.exists()
    assert "x floor" in capsys.readouterr().out


def test_bench_per_layer_times_one_layer_of_every_method(tmp_path):
    results, deltas = bench.main(["--device", "cpu", "--per-layer", "--hidden", "16", "--batch", "2", "--seq", "8",
                                  "--steps", "2", "--warmup", "1", "--json", str(tmp_path / "layers.json")])
    assert [r["row"] for r in results] == ["floor", *bench.spectral_ft.METHODS] and deltas == []
    assert all(r["ms"] > 0 for r in results)
    assert (tmp_path / "layers.json").exists()


def test_bench_under_torchrun_times_data_parallel_steps_and_counts_every_process_tokens(tmp_path):
    """Two gloo processes: one table (process 0's), tokens/s over both processes' batches."""
    out = tmp_path / "ddp.json"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(Path(bench.__file__).parent / "bench.py"), "--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "2",
                           "--seq", "8", "--steps", "2", "--warmup", "1", "--methods", "lora,loca",
                           "--json", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("x floor") == 1 and "2 processes, --batch each" in done.stdout
    report = json.loads(out.read_text())
    assert report["processes"] == 2 and [r["row"] for r in report["steps"]] == ["floor", "lora", "loca"]
    for r in report["steps"]:
        assert r["tokens_per_s"] == pytest.approx(2 * 2 * 8 / r["ms"] * 1e3)
    assert report["delta"] == []


def the_step(function):
    """The statements of a function from `step_loss = 0.0` to the optimizer's zero_grad, as ast dumps."""
    tree = ast.parse(inspect.getsource(function).strip() if not inspect.isclass(function) else "")
    body = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.While))][-1].body
    lines = [ast.dump(node) for node in body]
    start = next(i for i, line in enumerate(lines) if "step_loss" in line)
    end = next(i for i, line in enumerate(lines) if "zero_grad" in line)
    return lines[start:end + 1]


def test_bench_s_step_is_train_py_s_loop_body_line_for_line():
    """bench.TrainStep times the body of train.py's loop, not a variant of it: the same statements (forward,
    weighted loss, backward, the all-reduce, optimizer and schedules), compared as syntax trees."""
    ours = the_step(TrainStep.__call__)
    loop = the_step(train.train_loop)
    assert len(ours) == 8 and any("backward" in line for line in ours)
    assert ours == loop


def test_bench_times_train_py_s_own_step(monkeypatch):
    """bench.py's rows run TrainStep (train.py's step), not a copy of it."""
    calls, call = [], TrainStep.__call__
    monkeypatch.setattr(TrainStep, "__call__", lambda self, parts, examples: calls.append(self.mode) or call(
        self, parts, examples))
    results, _ = bench.main(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "2", "--seq", "8",
                             "--steps", "2", "--warmup", "1", "--methods", "lora", "--delta-sizes", ""])
    assert [r["row"] for r in results] == ["floor", "lora"]
    assert calls == ["eager"] * 2 * (1 + 2)  # warm-up and timed steps of both rows (no graphs on the CPU)
    assert all("step_ms" not in r for r in results)


def test_the_smoke_test_a_cpu_machine_is_told_to_run_stays_at_its_width_and_says_its_steps_are_eager(
        tmp_path, monkeypatch, capsys):
    """Without a GPU, bench.py suggests a CPU smoke test; that very command times eager steps only (the
    header says so, no graph steps) and its ΔW table stays at the model's width (--hidden), not the
    default d up to 4096 that kept it busy for 12 minutes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError) as error:
        bench.main([])
    message = str(error.value)
    assert "python bench.py " in message, message  # a command to copy
    suggestion = message.split("python bench.py ", 1)[1]
    assert suggestion == bench.SMOKE_TEST
    flags = shlex.split(suggestion)
    hidden = int(flags[flags.index("--hidden") + 1])
    results, deltas = bench.main(flags + ["--json", str(tmp_path / "smoke.json")])
    assert {r["row"] for r in results} == set(bench.ROWS) and all("step_ms" not in r for r in results)
    assert deltas and {d["d"] for d in deltas} == {hidden}
    header = capsys.readouterr().out.splitlines()[0]
    assert "eager steps only (no CUDA graphs on the CPU)" in header and "graph steps" not in header


def test_the_delta_table_keeps_its_default_sizes_at_full_width_and_takes_explicit_ones(monkeypatch):
    seen = []
    monkeypatch.setattr(bench, "run", lambda args, rows, device, world: seen.append(args.delta_sizes) or ([], []))
    narrow = ["--device", "cpu", "--hidden", "8"]
    for argv in (narrow, narrow + ["--delta-sizes", ""], narrow + ["--delta-sizes", "64,128"], ["--device", "cpu"]):
        bench.main(argv)
    assert seen == [[8], [], [64, 128], [256, 512, 1024, 2048, 4096]]
