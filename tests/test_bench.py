"""bench.py runs on the CPU at a tiny size: every row and every ΔW path (a smoke test, no timing claims)."""

import math

import bench


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
