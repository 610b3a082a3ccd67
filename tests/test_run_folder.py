"""
The run folder's promises added with issues 18 and 20, on the command line as tests/test_robust.py checks
them (a forked child per command, its exit status and its one `train.py: ...` line):

- the best dev evaluation's adapter is kept in best/ (written when the metric improves, named in
  results.json, the same after an interrupted run is resumed);
- --log-every lines hold the mean training loss of their steps;
- Ctrl-C and SIGTERM in the loop save the step reached, say it, release the folder; the resumed run ends
  as an uninterrupted one, bit for bit;
- a resume onto other data, --targets inside the head, --adapter-seed -1, a failed run's empty runs/.
"""
import json
import os
import shutil
import signal
import time

import pytest
import torch

import train
from hub import read_safetensors, read_safetensors_metadata
from runs import BEST_ADAPTER
from test_robust import flags, kit, one_line  # noqa: F401  (kit: a fixture; cli: conftest.py)


def same_tensors(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def log_lines(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def wait_for(path, seconds=60):
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.005)


def test_the_best_evaluation_s_adapter_is_kept_named_and_reproduces_its_metrics(kit, tmp_path):
    from config import prepare_model
    from data import load_glue
    from model import load_pretrained

    results = train.main([*map(str, flags(kit, "--lr", "5e-2", "--max-steps", "12", "--eval-every", "2",
                                          "--batch-size", "4", "--out", tmp_path / "o"))])
    best, evaluations = results["best"], [line for line in log_lines(tmp_path / "o") if "metrics" in line]
    assert best["adapter"] == BEST_ADAPTER == json.loads((tmp_path / "o" / "results.json").read_text())["best"]["adapter"]
    first_best = next(line for line in evaluations if line["metrics"]["dev"]["accuracy"] == best["value"])
    assert best["step"] == first_best["step"]  # written when the metric improved, not when it tied
    meta = read_safetensors_metadata(tmp_path / "o" / BEST_ADAPTER)
    assert json.loads(meta["step"]) == best["step"] and json.loads(meta["metrics"]) == best["metrics"]
    model, tokenizer = load_pretrained(kit["model"], 2)
    prepare_model(model, results["config"])
    from runs import load_trainable_state
    load_trainable_state(model, "lora", read_safetensors(tmp_path / "o" / BEST_ADAPTER), "test")
    dev = load_glue("rte", "dev", kit["data"], download=False)
    encoded = [tokenizer.encode(e.text_a, e.text_b, max_length=results["config"]["max_length"]) for e in dev]
    assert train.evaluate(model, results["config"], encoded, [e.label for e in dev], 0) == best["metrics"]["dev"]


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


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_the_step_reached_release_the_folder_and_resume_exactly(cli, kit, tmp_path,
                                                                                         signum, status):
    argv = flags(kit, "--data-dir", kit["big"], "--batch-size", "1", "--max-steps", "60", "--dropout", "0.1",
                 "--lr", "1e-2", "--eval-every", "20", "--log-every", "1", "--save-minutes", "0")
    out = tmp_path / "stopped"
    pid, _, err_path = cli.start([*argv, "--out", out], tmp_path, background=True)
    try:
        wait_for(out / "log.jsonl")
        deadline = time.time() + 60
        while not log_lines(out) and time.time() < deadline:  # a step is done: the loop runs
            time.sleep(0.005)
    finally:
        os.kill(pid, signum)
        code = cli.wait(pid)
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    line = one_line(code, err_path.read_text(), status, "interrupted", f"stopped at step {step}",
                    f"--resume {out} (from step {step})")
    assert 0 < step < 60 and not (out / ".lock").exists() and not (out / "results.json").exists(), line
    assert cli(["--resume", out], tmp_path)[0] == 0
    assert cli([*argv, "--out", tmp_path / "whole"], tmp_path)[0] == 0
    for name in ("adapter.safetensors", BEST_ADAPTER):
        assert same_tensors(read_safetensors(out / name), read_safetensors(tmp_path / "whole" / name))
    results = [json.loads((p / "results.json").read_text()) for p in (out, tmp_path / "whole")]
    assert results[0]["final"] == results[1]["final"] and results[0]["best"] == results[1]["best"]
    without_time = lambda o: [{k: v for k, v in line.items() if k != "time"} for line in log_lines(o)]
    assert without_time(out) == without_time(tmp_path / "whole")


def test_a_resume_onto_changed_data_is_refused_naming_the_file(cli, kit, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(kit["data"], data)
    out = tmp_path / "run"
    assert cli(flags(kit, "--data-dir", data, "--max-steps", "2", "--out", out), tmp_path)[0] == 0
    rows = (data / "train.tsv").read_text().splitlines(keepends=True)
    (data / "train.tsv").write_text("".join(rows[:9]))  # cut to 8 examples
    code, _, err = cli(["--resume", out], tmp_path)
    one_line(code, err, 2, f"--resume {out}", str(data / "train.tsv"), "not the file the run started with")


@pytest.mark.parametrize("targets", ["dense", "classifier", "pooler.dense,query"])
def test_targets_inside_the_head_are_refused_naming_the_flag_and_the_head(cli, kit, tmp_path, targets):
    code, _, err = cli(["--model", "tiny", "--method", "loca", "--targets", targets, "--max-steps", "1"], tmp_path)
    one_line(code, err, 2, f"--targets {targets}", "classification head (classifier, pooler.dense)")
    assert not (tmp_path / "runs").exists()


def test_bad_input_found_after_the_folder_was_made_leaves_no_empty_runs_folder(cli, kit, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(["--model", "tiny", "--method", "lora", "--data-dir", empty], tmp_path)
    one_line(code, err, 2, f"--data-dir {empty}")
    assert not (tmp_path / "runs").exists()


def test_adapter_seed_out_of_range_names_the_flag_and_fora_and_dfora_show_one_alpha(cli, tmp_path):
    code, _, err = cli(["--model", "tiny", "--method", "loca", "--adapter-seed", "-1"], tmp_path)
    one_line(code, err, 2, "--adapter-seed", "must be >= 0")
    shown = [cli(["--method", m, "--count-params"], tmp_path)[1].splitlines()[0] for m in ("fora", "dfora")]
    assert all("'alpha': 32.0" in line for line in shown), shown
