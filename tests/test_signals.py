"""
Ctrl-C (SIGINT, exit 130) and SIGTERM (exit 143) stop a run in one line: before the loop it says nothing can
be resumed and leaves no folder; in the loop it saves the step reached, names the folder and the
`--resume` that continues it, and releases the folder. The resumed run ends as an uninterrupted one, bit
for bit (weights, best adapter, results.json, log.jsonl).
"""
import json
import os
import signal
import time

import pytest
import torch

from command_line import flags, log_lines, one_line
from encoder.hub import read_safetensors
from run.folder import BEST_ADAPTER


SLOW_LOAD = """
import pathlib, time, data.glue_tasks as glue
def _loading(*args, **kwargs):  # the data loads slowly: Ctrl-C lands before the loop
    pathlib.Path("loading").touch()
    time.sleep(60)
glue.load_glue = _loading
"""


def test_ctrl_c_says_whether_the_run_can_be_resumed_and_names_its_folder(cli, kit, tmp_path):
    """Ctrl-C before the loop (nothing saved) says nothing can be resumed; in the loop, the run
    saves the step reached and names the folder to resume."""
    for name, prelude, ready, expected in (
            ("early", SLOW_LOAD, "loading", "nothing can be resumed"),
            ("later", "", "later/checkpoint.pt", "continue with --resume {out}")):
        out = tmp_path / name
        argv = flags(kit, "--data-dir", kit["big"], "--batch-size", "1", "--save-every", "1", "--out", out)
        pid, _, err_path = cli.start(argv, tmp_path, background=True, prelude=prelude)
        try:
            deadline = time.time() + 60
            while not (tmp_path / ready).exists() and time.time() < deadline:
                time.sleep(0.01)
        finally:
            os.kill(pid, signal.SIGINT)
            code = cli.wait(pid)
        assert not out.exists() if name == "early" else (out / "checkpoint.pt").exists()
        one_line(code, err_path.read_text(), 130, "interrupted", expected.format(out=out))
        assert "<out>" not in err_path.read_text()


def same_tensors(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def wait_for(path, seconds=60):
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.005)


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
