"""scripts/figures.py: what it reads from run folders and bench files, the reconstruction errors behind
the locations figure (against dense float64 computations), the SVGs it writes, and its bad-input lines."""

import csv
import importlib.util
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spectral_ft

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "figures.py"
_spec = importlib.util.spec_from_file_location("figures", SCRIPT)
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)

SVG = "{http://www.w3.org/2000/svg}"


def write_run(folder, method, seed, value, adapter, task="rte", model="roberta-base", losses=None, **hyperparameters):
    """A made-up run folder: results.json with train.py's keys, and log.jsonl from {step: loss}."""
    folder.mkdir(parents=True)
    results = {"config": {"method": method, "task": task, "model": model, "seed": seed,
                          "hyperparameters": hyperparameters},
               "seed": seed, "main_metric": "accuracy",
               "best": {"value": value, "step": 10, "epoch": 1.0, "metrics": {"dev": {"accuracy": value}}},
               "final": {"step": 20, "epoch": 2.0, "metrics": {"dev": {"accuracy": value}}},
               "trainable_parameters": {"adapter": adapter, "head": 1000}}
    (folder / "results.json").write_text(json.dumps(results))
    lines = [{"step": s, "epoch": s / 10, "loss": loss, "lr": {"adapter": 1e-3}, "time": s / 5}
             for s, loss in (losses or {}).items()]
    (folder / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def sweep(root):
    """Three methods over two seeds, plus head-only and full fine-tuning references."""
    values = {"lora": (0.70, 0.74, 2048), "loca": (0.76, 0.78, 512), "fourierft": (0.72, 0.73, 256),
              "head": (0.55, 0.57, 0), "full": (0.80, 0.80, 100_000)}
    folders = []
    for method, (first, second, adapter) in values.items():
        for seed, value in enumerate((first, second)):
            losses = {10: 0.7 - 0.1 * seed, 20: 0.5 - 0.1 * seed, 30: 0.3}
            folders.append(write_run(root / f"{method}-{seed}", method, seed, value, adapter, losses=losses))
    return folders


def parse_svg(path):
    root = ET.parse(path).getroot()
    assert root.tag == SVG + "svg"
    return root


def elements(root, tag, cls):
    return [e for e in root.iter(SVG + tag) if cls in (e.get("class") or "").split()]


# -----------------------------------------------------------------------------
# reconstruction errors against dense float64 computations


def gaussian(rows, cols, seed):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dense_error(delta, approximation):
    return (torch.linalg.norm(delta - approximation) / torch.linalg.norm(delta)).item()


def least_squares_error(delta, basis):
    """Relative residual of the best combination of `basis` (a list of matrices shaped like delta)."""
    A = torch.stack([b.flatten() for b in basis], dim=1)  # (rows·cols, n)
    solution = torch.linalg.lstsq(A, delta.flatten().unsqueeze(1), driver="gelsd").solution
    return dense_error(delta, (A @ solution).reshape(delta.shape))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(2, 10), cols=st.integers(2, 10), seed=st.integers(0, 1000))
def test_svd_error_is_the_truncated_svd_residual(rows, cols, seed):
    delta = gaussian(rows, cols, seed)
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    ranks = list(range(0, min(rows, cols) + 1))
    got = figures.svd_errors(delta, ranks)
    for r, error in zip(ranks, got.tolist()):
        assert error == pytest.approx(dense_error(delta, U[:, :r] * S[:r] @ Vh[:r]), abs=1e-10)
        assert error == pytest.approx(math.sqrt((S[r:] ** 2).sum() / (S ** 2).sum()), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(2, 10), cols=st.integers(2, 10), seed=st.integers(0, 1000), data=st.data())
def test_dct_top_error_is_the_reconstruction_from_the_largest_coefficients(rows, cols, seed, data):
    delta = gaussian(rows, cols, seed)
    n = data.draw(st.integers(0, rows * cols))
    C_out, C_in = spectral_ft.dct_matrix(rows, torch.float64), spectral_ft.dct_matrix(cols, torch.float64)
    S = C_out @ delta @ C_in.T
    kept = torch.zeros(rows * cols, dtype=torch.float64)
    largest = S.abs().flatten().argsort(descending=True)[:n]
    kept[largest] = S.flatten()[largest]
    dense = C_out.T @ kept.reshape(rows, cols) @ C_in  # LoCA's ΔŴ = Cᵀ S C
    assert figures.dct_top_errors(delta, [n]).item() == pytest.approx(dense_error(delta, dense), abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(2, 9), cols=st.integers(2, 9), seed=st.integers(0, 1000), data=st.data())
def test_dct_random_error_is_the_least_squares_fit_on_those_basis_matrices(rows, cols, seed, data):
    delta = gaussian(rows, cols, seed)
    n = data.draw(st.integers(1, rows * cols))
    counts = sorted({1, (n + 1) // 2, n})
    got = figures.dct_random_errors(delta, counts, torch.Generator().manual_seed(seed))
    r, c = spectral_ft.random_locations(n, rows, cols, torch.Generator().manual_seed(seed))
    C_out, C_in = spectral_ft.dct_matrix(rows, torch.float64), spectral_ft.dct_matrix(cols, torch.float64)
    for count, error in zip(counts, got.tolist()):
        basis = [torch.outer(C_out[r[k]], C_in[c[k]]) for k in range(count)]  # iDCT2 of a one-hot S
        assert error == pytest.approx(least_squares_error(delta, basis), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(2, 9), cols=st.integers(2, 9), seed=st.integers(0, 1000), data=st.data())
def test_dft_real_random_error_is_the_least_squares_fit_of_fourierfts_own_delta(rows, cols, seed, data):
    """Basis: FourierFT's ΔW for a one-hot spectrum at each location (spectral_ft.sparse_idft2_real);
    repeated mirror pairs and self-mirrored frequencies included, odd and even sizes."""
    delta = gaussian(rows, cols, seed)
    n = data.draw(st.integers(1, rows * cols))
    counts = sorted({1, data.draw(st.integers(1, n)), n})  # prefixes of one seed's locations
    got = figures.dft_real_random_errors(delta, counts, torch.Generator().manual_seed(seed))
    locations = spectral_ft.random_locations(n, rows, cols, torch.Generator().manual_seed(seed))  # (2, n)
    one = torch.ones(1, dtype=torch.float64)
    basis = [spectral_ft.sparse_idft2_real(one, locations[:, k:k + 1], (rows, cols)) for k in range(n)]
    for count, error in zip(counts, got.tolist()):  # squared: 1 − kept/total is exact to ~1e-16, its root to ~1e-8
        assert error ** 2 == pytest.approx(least_squares_error(delta, basis[:count]) ** 2, abs=1e-12)


def test_random_locations_reconstruct_worst_and_largest_coefficients_win_by_a_wide_margin():
    """The robust claims only (d = 32, mean of 3 Gaussian matrices, budgets rank 1 .. d/4):
    at every budget both random-location families are worse than best rank r and than the
    largest DCT coefficients with their locations paid for (3n); at the same coefficient count
    the largest coefficients keep at least 1.5x the energy random ones keep (5x at the smallest)."""
    study = figures.location_study([32], seeds=3)[32]
    mean = {name: family["mean"] for name, family in study["families"].items()}
    for i, budget in enumerate(study["budgets"]):
        for random_family in ("dct_random", "dft_random"):
            assert mean[random_family][i] > max(mean["svd"][i], mean["dct_top"][i]), budget
        kept_top, kept_random = 1 - mean["dct_top_free"][i] ** 2, 1 - mean["dct_random"][i] ** 2
        assert kept_top >= 1.5 * kept_random, budget
    assert 1 - mean["dct_top_free"][0] ** 2 >= 5 * (1 - mean["dct_random"][0] ** 2)
    assert study["families"]["dct_top"]["count"] == [b // 3 for b in study["budgets"]]
    assert study["families"]["svd"]["count"] == study["ranks"] == [1, 2, 3, 4, 6, 8]


# -----------------------------------------------------------------------------
# reading run folders and bench files


def test_accuracy_groups_take_mean_and_std_over_seeds_and_split_off_head_and_full(tmp_path):
    marks, references = figures.accuracy_groups(figures.read_runs(sweep(tmp_path)))
    by_method = {m["method"]: m for m in marks}
    assert [m["method"] for m in marks] == ["fourierft", "loca", "lora"]  # by parameter count
    assert by_method["lora"]["mean"] == pytest.approx(72.0)
    assert by_method["lora"]["std"] == pytest.approx(math.sqrt(2 * 2.0 ** 2))  # sample std of 70, 74
    assert by_method["loca"]["parameters"] == 512 and by_method["loca"]["runs"] == 2
    assert by_method["loca"]["seeds"] == [0, 1]
    refs = {r["method"]: r for r in references}
    assert set(refs) == {"head", "full"}
    assert refs["full"]["mean"] == pytest.approx(80.0) and refs["full"]["std"] == 0.0


def test_a_method_at_two_sizes_gives_two_marks_labelled_by_their_hyperparameter(tmp_path):
    runs = [write_run(tmp_path / "a", "lora", 0, 0.7, 100, r=8, alpha=8.0),
            write_run(tmp_path / "b", "lora", 0, 0.8, 200, r=16, alpha=8.0)]
    marks, _ = figures.accuracy_groups(figures.read_runs(runs))
    assert [(m["label"], m["parameters"]) for m in marks] == [("lora r=8", 100), ("lora r=16", 200)]


def test_read_log_keeps_the_log_every_lines_numeric_losses_and_skips_a_cut_last_line(tmp_path):
    """The --log-every lines are the curve (each the mean of its window); an evaluation's loss (the mean since
    the previous evaluation, a longer window) is plotted only from a log that has no --log-every lines."""
    folder = write_run(tmp_path / "run", "lora", 0, 0.7, 100)
    evaluations = [{"step": 10, "epoch": 1.0, "loss": 0.8, "metrics": {"dev": {"accuracy": 0.6}}, "lr": {}, "time": 2.0},
                   {"step": 20, "epoch": 2.0, "loss": 0.6, "metrics": {}, "lr": {}, "time": 4.0}]
    periodic = [{"step": 5, "epoch": 0.5, "loss": 0.9, "lr": {}, "time": 1.0},
                {"step": 10, "epoch": 1.0, "loss": None, "lr": {}, "time": 2.0},  # no loss: not plotted
                {"step": 15, "epoch": 1.5, "loss": 0.7, "lr": {}, "time": 3.0},
                {"step": 20, "epoch": 2.0, "loss": True, "lr": {}, "time": 4.0}]  # a bool is not a loss
    for lines, expected in ((evaluations + periodic, {5: 0.9, 15: 0.7}), (evaluations, {10: 0.8, 20: 0.6})):
        (folder / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 25, "lo')
        assert figures.read_log(folder) == expected


def test_loss_curves_average_the_seeds_at_the_steps_all_of_them_logged(tmp_path):
    runs = [write_run(tmp_path / "a", "loca", 0, 0.7, 10, losses={10: 1.0, 20: 0.6, 30: 0.2}),
            write_run(tmp_path / "b", "loca", 1, 0.7, 10, losses={10: 0.8, 20: 0.4}),
            write_run(tmp_path / "c", "lora", 0, 0.7, 20, losses={10: 0.5})]
    curves = {c["method"]: c for c in figures.loss_curves(runs)}
    assert curves["loca"]["steps"] == [10, 20] and curves["loca"]["loss"] == pytest.approx([0.9, 0.5])
    assert curves["loca"]["runs"] == 2 and curves["lora"]["loss"] == [0.5]


def bench_file(path, graphs=True, **args):
    rows = [("floor", 40.0, 20.0), ("lora", 50.0, 25.0), ("loca", 80.0, None)]
    path.write_text(json.dumps({
        "args": {"model": "roberta-base", "batch": 32, "seq": 128, "layers": 0, "hidden": 0, "precision": "bf16",
                 **args},
        "device": "NVIDIA H200", "processes": 1, "delta": [],
        "steps": [dict(row=r, ms=e, **({"step_ms": g} if g and graphs else {})) for r, e, g in rows]}))
    return path


def test_read_bench_reads_rows_and_names_gpu_and_shape(tmp_path):
    rows, (device, shape) = figures.read_bench(bench_file(tmp_path / "bench.json"))
    assert [(r["name"], r["eager_ms"], r["graph_ms"]) for r in rows] == [
        ("floor", 40.0, 20.0), ("lora", 50.0, 25.0), ("loca", 80.0, None)]
    assert device == "NVIDIA H200"
    assert shape.startswith("roberta-base (hidden 768, 12 layers), batch 32 × 128, bf16") and "compile" not in shape
    _, (_, shape) = figures.read_bench(bench_file(tmp_path / "scoped.json", compile="layers"))
    assert shape.endswith(", graph steps after --compile layers")  # which step the graph bars are


# -----------------------------------------------------------------------------
# the SVGs and the numbers beside them


def test_accuracy_svg_has_one_mark_per_method_reference_lines_and_labelled_axes(tmp_path, capsys):
    out = tmp_path / "fig" / "accuracy.svg"
    assert figures.cli(["accuracy", *map(str, sweep(tmp_path / "runs")), "--out", str(out)]) == 0
    root = parse_svg(out)
    marks = elements(root, "g", "mark")
    assert sorted(m.get("data-method") for m in marks) == ["fourierft", "loca", "lora"]
    assert sorted(r.get("data-method") for r in elements(root, "g", "reference")) == ["full", "head"]
    circles = {m.get("data-method"): float(m.find(SVG + "circle").get("cx")) for m in marks}
    assert circles["fourierft"] < circles["loca"] < circles["lora"]  # 256 < 512 < 2048 parameters
    labels = [t.text for t in elements(root, "text", "axis-label")]
    assert "trainable parameters outside the head (log scale)" in labels and "best dev accuracy × 100" in labels
    assert {t.text for t in elements(root, "text", "label")} == {"fourierft", "loca", "lora"}
    numbers = json.loads(out.with_suffix(".json").read_text())
    table = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [row["method"] for row in table] == ["fourierft", "loca", "lora", "head", "full"]
    assert [float(row["mean"]) for row in table[:3]] == pytest.approx([m["mean"] for m in numbers["marks"]])
    assert "wrote" in capsys.readouterr().out


def test_log_ticks_are_decades_with_minor_ticks_between():
    majors, minors = figures.log_ticks(150, 45_000)
    assert majors == [1000, 10000]
    assert minors == [200, 300, 400, 500, 600, 700, 800, 900] + [2000 * k / 2 for k in range(2, 10)] + [
        20000, 30000, 40000]
    majors, _ = figures.log_ticks(150, 900)  # less than two decades: 2 and 5 times a decade labelled too
    assert majors == [200, 500]


@given(low=st.floats(-1e4, 1e4), span=st.floats(1e-3, 1e4))
def test_a_nice_range_starts_and_ends_on_its_own_ticks(low, span):
    start, end = figures.nice_range(low, low + span)
    ticks = figures.linear_ticks(start, end)
    assert start <= low + 1e-9 * span and end >= low + span - 1e-9 * span  # (float noise tolerated)
    assert ticks[0] == pytest.approx(start, abs=1e-9 * span) and ticks[-1] == pytest.approx(end, abs=1e-9 * span)
    assert 3 <= len(ticks) <= 11


def test_steptime_svg_has_a_mark_per_row_and_both_bars_where_measured(tmp_path):
    out = tmp_path / "steptime.svg"
    assert figures.cli(["steptime", str(bench_file(tmp_path / "bench.json")), "--out", str(out)]) == 0
    root = parse_svg(out)
    marks = elements(root, "g", "mark")
    assert [m.get("data-method") for m in marks] == ["floor", "lora", "loca"]
    bars = {m.get("data-method"): [r.get("class") for r in m.iter(SVG + "rect")] for m in marks}
    assert bars == {"floor": ["bar eager", "bar graph"], "lora": ["bar eager", "bar graph"], "loca": ["bar eager"]}
    assert "NVIDIA H200" in elements(root, "text", "title")[0].text
    rows = {r["name"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert rows["lora"]["eager_x_unit"] == pytest.approx(2.5) and rows["lora"]["graph_x_unit"] == pytest.approx(1.25)


def peft_bench_file(path, rows):
    """A scripts/peft_bench.py --json file: rows (name, ms, loop_ms), or (name, error) for a row that failed."""
    bench = [dict(row=r[0], batch=32, device="NVIDIA H100", **({"error": r[1], "process_s": 80.0} if len(r) == 2 else
                                                                dict(ms=r[1], loop_ms=r[2]))) for r in rows]
    path.write_text(json.dumps({"args": {"seq": 128, "batches": [32]}, "device": "NVIDIA H100", "bench": bench}))
    return path


def test_peft_svg_has_four_bars_per_method_a_later_file_replacing_a_row_and_names_what_is_missing(tmp_path):
    first = peft_bench_file(tmp_path / "a.json", [
        ("peft-lora-ro", 9.0, 7.0), ("peft-lora-eager", 30.0, 31.0), ("ours-lora-none", 8.0, 7.5),
        ("ours-lora-layers", "RuntimeError: capture"), ("peft-floor-ro", 7.0, 6.0), ("ours-floor", 6.0, 5.5),
        ("ours-floor-layers", 5.0, 4.5), ("peft-oft-ro", "stopped: still running after 80 s"),
        ("ours-oft-none", "RuntimeError: capture"), ("ours-lora", 5.0, 4.0)])  # --compile adapters: not drawn
    later = peft_bench_file(tmp_path / "b.json", [("ours-lora-layers", 7.0, 6.5)])
    out = tmp_path / "peft.svg"
    assert figures.cli(["peft", str(first), str(later), "--out", str(out)]) == 0
    root = parse_svg(out)
    marks = elements(root, "g", "mark")
    assert [m.get("data-method") for m in marks] == ["lora", "oft", "floor"]
    bars = {m.get("data-method"): [r.get("class") for r in m.iter(SVG + "rect")] for m in marks}
    assert bars == {"lora": ["bar ours-none", "bar ours-layers", "bar peft-ro", "bar peft-eager"],
                    "oft": [], "floor": ["bar ours-none", "bar ours-layers", "bar peft-ro"]}
    assert [t.text for t in elements(root, "text", "missing")] == [
        "ours, short runs (CUDA graphs alone): failed", "ours, long runs (layers compiled): not run",
        "PEFT, reduce-overhead: no step in 80 s", "PEFT, eager: not run", "PEFT, eager: not run"]  # oft's, the floor's
    assert "NVIDIA H100" in elements(root, "text", "title")[0].text
    labels = [t.text for m in marks for t in m.iter(SVG + "text")]
    assert "7.00 ms (6.50)" in labels and "9.00 ms (7.00)" in labels  # the later file's row; a step and its loop
    table = {(r["method"], r["variant"]): r for r in csv.DictReader(out.with_suffix(".csv").open())}
    assert table["lora", "ours-layers"]["source"] == str(later) and float(table["lora", "ours-none"]["ms"]) == 8.0
    widths = {m.get("data-method"): [float(r.get("width")) for r in m.iter(SVG + "rect")] for m in marks}
    assert widths["lora"][1] < widths["lora"][0] < widths["lora"][2] < widths["lora"][3]  # 7 < 8 < 9 < 30 ms


def test_loss_svg_has_one_line_per_method(tmp_path):
    out = tmp_path / "loss.svg"
    folders = sweep(tmp_path / "runs")
    assert figures.cli(["loss", *map(str, folders), "--out", str(out), "--log-y"]) == 0
    root = parse_svg(out)
    assert sorted(m.get("data-method") for m in elements(root, "g", "mark")) == [
        "fourierft", "full", "head", "loca", "lora"]
    assert all(len(m.find(SVG + "polyline").get("points").split()) == 3 for m in elements(root, "g", "mark"))
    assert {t.text for t in elements(root, "text", "axis-label")} == {"optimizer step", "training loss (log scale)"}


def test_locations_svg_has_every_family_in_every_panel_and_states_the_budget(tmp_path):
    out = tmp_path / "locations.svg"
    assert figures.cli(["locations", "--sizes", "8,16", "--seeds", "2", "--out", str(out)]) == 0
    root = parse_svg(out)
    marks = [(m.get("data-method"), m.get("data-size")) for m in elements(root, "g", "mark")]
    assert sorted(marks) == sorted((name, d) for name in figures.FAMILIES for d in ("8", "16"))
    assert any("3n" in (t.text or "") for t in elements(root, "text", "caption"))
    table = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert {(row["d"], row["family"]) for row in table} == {(d, name) for name in figures.FAMILIES for d in ("8", "16")}


# -----------------------------------------------------------------------------
# bad input: one line naming the argument or file, exit status 2


def bad_inputs(tmp_path):
    no_results = tmp_path / "empty"
    no_results.mkdir()
    not_json = write_run(tmp_path / "broken", "lora", 0, 0.7, 10)
    (not_json / "results.json").write_text("{not json")
    per_layer = tmp_path / "layers.json"
    per_layer.write_text(json.dumps({"args": {}, "device": "cpu", "layers": [{"row": "floor", "ms": 1.0}]}))
    other_task = write_run(tmp_path / "cola", "lora", 0, 0.5, 10, task="cola")
    rte = write_run(tmp_path / "rte", "lora", 0, 0.5, 10)
    no_log = write_run(tmp_path / "nolog", "lora", 0, 0.5, 10)
    (no_log / "log.jsonl").unlink()
    out = str(tmp_path / "x.svg")
    return {"no run folders": (["accuracy", "--out", out], "no run folders"),
            "no results.json": (["accuracy", str(no_results), "--out", out], str(no_results)),
            "results.json not JSON": (["loss", str(not_json), "--out", out], str(not_json / "results.json")),
            "bench of another shape": (["steptime", str(per_layer), "--out", out], str(per_layer)),
            "not a peft_bench file": (["peft", str(per_layer), "--out", out], str(per_layer)),
            "two tasks": (["accuracy", str(rte), str(other_task), "--out", out], str(other_task)),
            "no log.jsonl": (["loss", str(no_log), "--out", out], str(no_log)),
            "out not svg": (["locations", "--out", str(tmp_path / "x.png")], "--out"),
            "bad sizes": (["locations", "--sizes", "2", "--out", out], "--sizes"),
            "unknown figure": (["pie", "--out", out], "pie")}


@pytest.mark.parametrize("case", ["no run folders", "no results.json", "results.json not JSON",
                                  "bench of another shape", "not a peft_bench file", "two tasks", "no log.jsonl",
                                  "out not svg", "bad sizes",
                                  "unknown figure"])
def test_bad_input_is_one_line_naming_it_and_exit_status_2(tmp_path, capsys, case):
    argv, named = bad_inputs(tmp_path)[case]
    assert figures.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("figures.py: error: ") and named in err, err
    assert not (tmp_path / "x.svg").exists()


# -----------------------------------------------------------------------------
# every text inside its canvas, and clear of the steptime figure's 1.0× line

COMMITTED = sorted((Path(__file__).resolve().parents[1] / "docs" / "figures").glob("*.svg"))


def text_boxes(root):
    """(text, (left, top, right, bottom)) of every <text>, from its anchor, font size and characters:
    width figures.text_width (DejaVu Sans advance widths rounded up: measured with rsvg-convert, the
    87-character bold 15 px title rendered 740 px, estimated 797; an 11 px caption line 536, estimated
    608), height 0.95 em above the baseline and 0.25 em below. A rotate(-90 cx cy) turns the box."""
    boxes = []
    for element in root.iter(SVG + "text"):
        text, size = element.text or "", float(element.get("font-size"))
        width = figures.text_width(text, size, bold=element.get("font-weight") == "bold")
        x, y = float(element.get("x")), float(element.get("y"))
        left = x - {"start": 0, "middle": width / 2, "end": width}[element.get("text-anchor", "start")]
        box = (left, y - 0.95 * size, left + width, y + 0.25 * size)
        transform = element.get("transform")
        if transform:
            assert transform.startswith("rotate(-90 "), transform  # the only transform the figures use
            cx, cy = map(float, transform[len("rotate(-90 "):-1].split())
            # (px, py) -> (cx + (py - cy), cy - (px - cx))
            box = (cx + box[1] - cy, cy - (box[2] - cx), cx + box[3] - cy, cy - (box[0] - cx))
        boxes.append((text, box))
    return boxes


def assert_texts_fit(path):
    root = parse_svg(path)
    _, _, width, height = map(float, root.get("viewBox").split())
    for text, (left, top, right, bottom) in text_boxes(root):
        assert 0 <= left and right <= width and 0 <= top and bottom <= height, (
            f"{path.name}: {text!r} spans x {left:.0f}..{right:.0f}, y {top:.0f}..{bottom:.0f} "
            f"of a {width:.0f} x {height:.0f} canvas")


def assert_no_text_crosses_the_unit_line(path):
    """The dashed vertical line at 1.0× (any dashed vertical line outside the legend) crosses no text."""
    root = parse_svg(path)
    dashed = [e for e in root.findall(SVG + "line") if e.get("stroke-dasharray") and e.get("x1") == e.get("x2")]
    assert dashed, f"{path.name}: no dashed 1.0× line"
    for line in dashed:
        x, low, high = float(line.get("x1")), *sorted((float(line.get("y1")), float(line.get("y2"))))
        for text, (left, top, right, bottom) in text_boxes(root):
            assert not (left <= x <= right and top < high and bottom > low), (
                f"{path.name}: the dashed line at x = {x:.0f} crosses {text!r} ({left:.0f}..{right:.0f})")


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_every_title_and_label_of_the_readme_figures_fits_its_canvas(path):
    assert_texts_fit(path)


def test_the_readme_step_time_figure_s_1x_line_crosses_no_label():
    assert_no_text_crosses_the_unit_line(next(p for p in COMMITTED if p.name == "steptime.svg"))


def test_a_long_title_is_wrapped_and_pushes_the_plot_down(tmp_path):
    title = "A title far longer than one line of the canvas holds, " * 3 + "ending here"
    short, long = tmp_path / "short.svg", tmp_path / "long.svg"
    folders = [str(f) for f in sweep(tmp_path / "runs")]
    for out, words in ((short, "Short"), (long, title)):
        assert figures.cli(["accuracy", *folders, "--out", str(out), "--title", words]) == 0
        assert_texts_fit(out)
    lines = [t.text for t in elements(parse_svg(long), "text", "title")]
    assert len(lines) == 3 and " ".join(lines) == title
    top = lambda path: min(float(r.get("y")) for r in parse_svg(path).iter(SVG + "rect") if r.get("fill") == "none")
    assert top(long) == pytest.approx(top(short) + 2 * 19)  # the plot box moves down by the two extra lines


@settings(max_examples=30, deadline=None)
@given(ratios=st.lists(st.floats(0.05, 9.0), min_size=2, max_size=6), failed=st.booleans())
def test_step_time_bars_of_any_length_keep_labels_in_the_canvas_and_off_the_1x_line(tmp_path_factory, ratios, failed):
    """Bars ending anywhere (below, at, just past 1.0×), and a row whose capture failed."""
    path = tmp_path_factory.mktemp("steptime") / "bench.json"
    steps = [dict(row="floor", ms=20.0, step_ms=10.0)] + [
        dict(row=f"m{k}", ms=10.0 * r * 1.5, **({} if failed and k == 0 else {"step_ms": 10.0 * r}))
        for k, r in enumerate(ratios)]
    path.write_text(json.dumps({"args": {"model": "roberta-base", "batch": 32, "seq": 128, "precision": "bf16"},
                                "device": "NVIDIA H200", "steps": steps}))
    out = path.with_name("steptime.svg")
    assert figures.main(["steptime", str(path), "--out", str(out)])
    assert_texts_fit(out)
    assert_no_text_crosses_the_unit_line(out)


@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40), size=st.floats(8, 20))
def test_wrap_keeps_every_word_in_order_and_each_line_within_the_width_when_its_words_fit(text, size):
    lines = figures.wrap(text, size, 300)
    assert " ".join(lines) == text
    for line in lines:
        assert figures.text_width(line, size) <= 300 or " " not in line
