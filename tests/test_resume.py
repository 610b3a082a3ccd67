"""
`train.py --resume RUN` continues a run exactly: a run killed at any step (here SIGKILL, no clean-up) and
resumed ends with the weights and metrics of an uninterrupted run, bit for bit. A run holds its folder while
it lives; a resume writes into the folder it was given and nothing else; a damaged checkpoint.pt or training
data that changed since the run started is refused in one line naming it, exit status 2. Ctrl-C and SIGTERM
are in test_signals.py.
"""
import json
import os
import shutil
import signal
import time

import torch

from command_line import flags, one_line


def test_resume_reads_and_writes_its_own_folder_and_nothing_else(cli, kit, tmp_path):
    """A run folder copied elsewhere and resumed from the directory the original was made in
    writes into the copy; the original (same relative --out as stored in the checkpoint) is untouched."""
    code, _, err = cli(flags(kit, "--max-steps", "2", "--out", "orig"), tmp_path)
    assert code == 0, err
    shutil.copytree(tmp_path / "orig", tmp_path / "moved" / "copy")
    (tmp_path / "orig" / "results.json").write_text("a finished run's results\n")
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in (tmp_path / "orig").iterdir() if p.is_file()}
    copy_results = (tmp_path / "moved" / "copy" / "results.json").stat().st_ino
    code, printed, err = cli(["--resume", "moved/copy"], tmp_path)
    assert code == 0, err
    after = {p.name: (p.stat().st_ino, p.read_bytes()) for p in (tmp_path / "orig").iterdir() if p.is_file()}
    assert after == before  # not one file of the original replaced
    assert (tmp_path / "moved" / "copy" / "results.json").stat().st_ino != copy_results  # written anew
    assert "wrote moved/copy/" in printed
    code, _, err = cli(["--resume", "moved/copy", "--out", "orig"], tmp_path)
    one_line(code, err, 2, "--out orig with --resume moved/copy", "copy the folder")


def test_a_held_folder_refuses_a_second_run_until_the_first_dies(cli, kit, tmp_path):
    """A run holds its folder; a second run (or a resume) into it exits 2 naming it; once the
    first is killed (SIGKILL: no clean-up runs), the folder is free again."""
    out = tmp_path / "held"
    pid, _, err_path = cli.start(flags(kit, "--max-steps", "1000000", "--save-every", "1", "--out", out), tmp_path,
                                 background=True)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.01)
        assert (out / "checkpoint.pt").exists(), err_path.read_text()[-2000:]
        code, _, err = cli(flags(kit, "--max-steps", "3", "--out", out), tmp_path)
        one_line(code, err, 2, f"--out {out} is in use by another run")
        code, _, err = cli(["--resume", out], tmp_path)
        one_line(code, err, 2, f"--out {out} is in use by another run")
    finally:
        os.kill(pid, signal.SIGKILL)
        assert cli.wait(pid) == -signal.SIGKILL
    code, _, err = cli(flags(kit, "--max-steps", "3", "--out", out), tmp_path)  # the lock died with the run
    one_line(code, err, 2, f"--out {out} already holds an earlier run's checkpoint.pt", f"--resume {out}")


def test_save_minutes_checkpoints_within_the_first_epoch_and_changes_no_result(cli, kit, tmp_path):
    """With --save-minutes (here a few milliseconds) a checkpoint exists long before the first
    epoch ends (16 steps); the run killed then and resumed (saving by time at other steps) ends with
    the weights and metrics of an uninterrupted run bit for bit."""
    argv = flags(kit, "--batch-size", "1", "--epochs", "2", "--save-minutes", "0.0001", "--dropout", "0.1",
                 "--lr", "1e-2")
    out = tmp_path / "killed"
    pid, _, err_path = cli.start([*argv, "--out", out], tmp_path, background=True)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.005)
    finally:
        os.kill(pid, signal.SIGKILL)
        cli.wait(pid)
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 16 and not (out / "results.json").exists(), err_path.read_text()[-2000:]
    assert cli(["--resume", out], tmp_path)[0] == 0
    assert cli([*argv, "--out", tmp_path / "whole"], tmp_path)[0] == 0
    from encoder.hub import read_safetensors
    a, b = (read_safetensors(p / "adapter.safetensors") for p in (out, tmp_path / "whole"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    results = [json.loads((p / "results.json").read_text()) for p in (out, tmp_path / "whole")]
    assert results[0]["final"] == results[1]["final"] and results[0]["best"] == results[1]["best"]


def test_a_damaged_checkpoint_is_one_line_naming_what_is_wrong(cli, kit, tmp_path):
    checkpoint = torch.load(kit["run"] / "checkpoint.pt", weights_only=True)
    config = json.loads(checkpoint["config"])
    for name, damaged, expected in (
            ("no_rng", {k: v for k, v in checkpoint.items() if k != "rng"}, "its content lacks 'rng'"),
            ("no_task", dict(checkpoint, config=json.dumps({k: v for k, v in config.items() if k != "task"})),
             "its config lacks 'task'"),
            ("epochs", dict(checkpoint, config=json.dumps(dict(config, epochs="ten"))),
             "its config's 'epochs' is 'ten', not an integer"),
            ("lr", dict(checkpoint, config=json.dumps(dict(config, lr=[1]))), "its config's 'lr' is [1], not a number"),
            ("step", dict(checkpoint, step=1.5), "its content's 'step' is 1.5, not an integer"),
            ("compile", dict(checkpoint, config=json.dumps(dict(config, compile="fast"))),
             "its config's 'compile' is 'fast', not one of ['adapters', 'layers', 'model', 'none']"),
            ("rng_bad", dict(checkpoint, rng={"torch": 1}), "its 'rng' does not hold the random generators' states")):
        folder = tmp_path / name
        shutil.copytree(kit["run"], folder)
        torch.save(damaged, folder / "checkpoint.pt")
        before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))
        code, _, err = cli(["--resume", folder], tmp_path)
        one_line(code, err, 2, f"--resume {folder}: {folder / 'checkpoint.pt'} is damaged: {expected}")
        assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before


def test_a_resume_onto_changed_data_is_refused_naming_the_file(cli, kit, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(kit["data"], data)
    out = tmp_path / "run"
    assert cli(flags(kit, "--data-dir", data, "--max-steps", "2", "--out", out), tmp_path)[0] == 0
    rows = (data / "train.tsv").read_text().splitlines(keepends=True)
    (data / "train.tsv").write_text("".join(rows[:9]))  # cut to 8 examples
    code, _, err = cli(["--resume", out], tmp_path)
    one_line(code, err, 2, f"--resume {out}", str(data / "train.tsv"), "not the file the run started with")
