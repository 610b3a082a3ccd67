"""
What a run writes, and where: its folder (by default runs/<method>-<task>-<model>-s<seed>-..., different for
unrelated runs, the one printed; under the working directory, the checkout left as found), the best dev
evaluation's adapter in best/ (written when the metric improves, named in results.json, reproducing its
metrics) and log.jsonl, whose --log-every lines hold the mean training loss of their steps.
"""
import json
import subprocess

import pytest

import train
from command_line import REPO, flags, log_lines, one_line
from run.config import build_parser, decide_config
from encoder.hub import read_safetensors, read_safetensors_metadata
from run.folder import BEST_ADAPTER


def test_default_folders_differ_for_unrelated_runs_and_the_printed_one_is_written(cli, kit, tmp_path):
    """README's first run, then runs with another --lr and another model: three folders, each
    the one printed; the same command again is told to --resume its folder. The headline RoBERTa
    command's default folder is none of them."""
    base = ["--model", "tiny", "--method", "lora", "--max-steps", "1"]
    printed = []
    for argv in (base, [*base, "--lr", "1e-3"], flags(kit, "--max-steps", "1")):
        code, stdout, err = cli(argv, tmp_path)
        assert code == 0, err
        out = next(line.split()[1] for line in stdout.splitlines() if line.strip().startswith("out "))
        assert out.startswith("runs/") and f"wrote {out}/" in stdout and (tmp_path / out / "results.json").exists()
        printed.append(out)
    assert len(set(printed)) == 3 and printed[0].startswith("runs/lora-rte-tiny-s0-")
    assert printed[2].startswith("runs/lora-rte-model-s0-")
    code, _, err = cli(base, tmp_path)
    one_line(code, err, 2, f"--out {printed[0]} already holds an earlier run's checkpoint.pt",
             f"--resume {printed[0]}")
    headline = decide_config(build_parser("").parse_args(
        ["--method", "loca", "--model", "roberta-base", "--task", "rte", "--device", "cpu"]), download=False)
    first_run = decide_config(build_parser("").parse_args(["--model", "tiny", "--device", "cpu"]), download=False)
    assert headline.out.startswith("runs/loca-rte-roberta-base-s0-") and headline.out != first_run.out


def test_cli_uses_leave_the_checkout_as_they_found_it(cli, kit, tmp_path):
    """A slice of the suite's command lines (the first run with its default folder, a bad flag, a
    bad hyperparameter, a resume, bench's smoke test) writes under its working directory only."""
    def checkout():
        done = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return sorted(line for line in done.stdout.splitlines()
                      if not any(cache in line for cache in ("__pycache__", ".hypothesis", ".pytest_cache")))

    before = checkout()
    assert cli(["--model", "tiny", "--method", "lora", "--max-steps", "1"], tmp_path)[0] == 0
    assert cli(["--model", "tiny", "--max-length", "1000"], tmp_path)[0] == 2
    assert cli(["--model", "tiny", "--method", "lora", "--r", "0"], tmp_path)[0] == 2
    run = next((tmp_path / "runs").iterdir())
    assert cli(["--resume", run], tmp_path)[0] == 0
    assert cli(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "1", "--seq", "4", "--steps", "1",
                "--warmup", "0", "--methods", "lora", "--delta-sizes", ""], tmp_path, kind="bench")[0] == 0
    assert checkout() == before
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]  # the default folder: under cwd


def test_the_best_evaluation_s_adapter_is_kept_named_and_reproduces_its_metrics(kit, tmp_path):
    from run.config import prepare_model
    from data import load_glue
    from encoder.model import load_pretrained

    results = train.main([*map(str, flags(kit, "--lr", "5e-2", "--max-steps", "12", "--eval-every", "2",
                                          "--batch-size", "4", "--out", tmp_path / "o"))])
    best, evaluations = results["best"], [line for line in log_lines(tmp_path / "o") if "metrics" in line]
    assert best["adapter"] == BEST_ADAPTER == json.loads((tmp_path / "o" / "results.json").read_text())["best"]["adapter"]
    first_best = next(line for line in evaluations if line["metrics"]["dev"]["accuracy"] == best["value"])
    assert best["step"] == first_best["step"]  # written when the metric improved, not when it tied
    meta = read_safetensors_metadata(tmp_path / "o" / BEST_ADAPTER)
    assert json.loads(meta["step"]) == best["step"] and json.loads(meta["metrics"]) == best["metrics"]
    model, tokenizer = load_pretrained(kit["model"], 2)
    prepare_model(model, *(results["config"][k] for k in ("method", "targets", "hyperparameters")))
    from run.folder import load_trainable_state
    load_trainable_state(model, "lora", read_safetensors(tmp_path / "o" / BEST_ADAPTER), "test")
    dev = load_glue("rte", "dev", kit["data"], download=False)
    encoded = [tokenizer.encode(e.text_a, e.text_b, max_length=results["config"]["max_length"]) for e in dev]
    assert train.evaluate(model, results["config"]["task"], results["config"]["batch_size"], encoded, [e.label for e in dev], 0) == best["metrics"]["dev"]


def test_log_every_lines_hold_the_mean_loss_of_their_steps(kit, tmp_path):
    def losses(every):
        train.main([*map(str, flags(kit, "--max-steps", "9", "--batch-size", "2", "--lr", "1e-2",
                                    "--log-every", str(every), "--out", tmp_path / str(every)))])
        return [line for line in log_lines(tmp_path / str(every)) if "metrics" not in line]

    per_step = [line["loss"] for line in losses(1)]
    for every in (3, 4):
        lines = losses(every)
        assert [line["step"] for line in lines] == list(range(every, 10, every))
        for line in lines:
            window = per_step[line["step"] - every:line["step"]]
            assert line["loss"] == pytest.approx(sum(window) / every, rel=1e-12)
            assert set(line) == {"step", "epoch", "loss", "lr", "time"}
