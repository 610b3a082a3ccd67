"""bench.py runs on the CPU at a tiny size: every row and every ΔW path (a smoke test, no timing claims)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench


from step import TrainStep
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
    assert done.stdout.count("x floor") == 1 and "2 processes (DDP)" in done.stdout
    report = json.loads(out.read_text())
    assert report["processes"] == 2 and [r["row"] for r in report["steps"]] == ["floor", "lora", "loca"]
    for r in report["steps"]:
        assert r["tokens_per_s"] == pytest.approx(2 * 2 * 8 / r["ms"] * 1e3)
    assert report["delta"] == []


def test_bench_times_train_py_s_own_step(monkeypatch):
    """bench.py's rows run TrainStep (the class train.py steps with), not a copy of it."""
    import train

    calls, call = [], TrainStep.__call__
    monkeypatch.setattr(TrainStep, "__call__", lambda self, parts, examples: calls.append(self.mode) or call(
        self, parts, examples))
    results, _ = bench.main(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "2", "--seq", "8",
                             "--steps", "2", "--warmup", "1", "--methods", "lora", "--delta-sizes", ""])
    assert [r["row"] for r in results] == ["floor", "lora"]
    assert calls == ["eager"] * 2 * (1 + 2)  # warm-up and timed steps of both rows (no graphs on the CPU)
    assert all("step_ms" not in r for r in results)
