"""
Nothing lost, and one clear line for every bad file (issue 11): each promise checked on the command
line, in a forked child process whose working directory is a temporary folder, by its exit status and
its one `train.py: ...` / `bench.py: ...` line on stderr.

A "zygote" imports torch, train.py and bench.py once, then forks one child per command (a fresh
`python train.py` costs seconds of imports). A child may run in the background (to be stopped with a
signal) and may first run a `prelude`: test-only Python that simulates a full disk.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from config import build_parser, resolve_config
from model import TINY_SPECIAL_TOKENS as SPECIAL_TOKENS
from model import SequenceClassifier, save_pretrained, tiny_config

REPO = Path(__file__).resolve().parent.parent
WORDS = "red blue green cat dog bird runs sits eats big small old".split()

ZYGOTE = r"""
import json, os, signal, sys, traceback
sys.path.insert(0, os.environ["SPECTRAL_FT_REPO"])
import torch._dynamo  # imported lazily by meta-device code; once here, not in every child
import bench, train  # torch and the project, imported once; nothing has run, so forking is safe
for line in sys.stdin:
    request = json.loads(line)
    if request["kind"] == "wait":
        print(os.waitstatus_to_exitcode(os.waitpid(request["pid"], 0)[1]), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises, as at a terminal (even when
        os.chdir(request["cwd"])                                    # the suite was started with SIGINT ignored)
        os.environ.update(request["env"])
        for fd, path in ((1, request["out"]), (2, request["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        try:
            exec(request["prelude"])
            code = (bench if request["kind"] == "bench" else train).cli(request["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    print(pid if request["background"] else os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Zygote:
    def __init__(self, logs):
        self.logs, self.count = logs, 0
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(logs / "hf"), HF_HUB_OFFLINE="1",
                   SPECTRAL_FT_REPO=str(REPO), GLUE_DIR=str(logs / "glue-cache"))
        env.pop("GLUE_URL", None)
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=logs, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _send(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def start(self, argv, cwd, kind="train", background=False, prelude="", **env):
        self.count += 1
        out, err = self.logs / f"{self.count}.out", self.logs / f"{self.count}.err"
        value = self._send(dict(kind=kind, argv=list(map(str, argv)), cwd=str(cwd), env=env, prelude=prelude,
                                out=str(out), err=str(err), background=background))
        return value, out, err

    def __call__(self, argv, cwd, kind="train", prelude="", **env):
        """(exit status, stdout, stderr) of `train.py argv` (or bench.py) run in `cwd`."""
        code, out, err = self.start(argv, cwd, kind, False, prelude, **env)
        return code, out.read_text(), err.read_text()

    def wait(self, pid):
        return self._send(dict(kind="wait", pid=pid))


def one_line(code, err, status, *expected, prefix="train.py:"):
    """The promise: exit `status`, one line starting with `prefix` that holds every `expected` text."""
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert code == status and len(lines) == 1 and "Traceback" not in err, (code, err[-2000:])
    assert all(text in lines[0] for text in expected), (expected, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """Built once: RTE-format data, a tiny BERT checkpoint folder, and a two-step LoRA run to resume."""
    root = tmp_path_factory.mktemp("kit")
    data, big = root / "rte", root / "big"  # big: an epoch of 512 steps at batch size 1
    for folder, sizes in ((data, (("train.tsv", 16), ("dev.tsv", 8))), (big, (("train.tsv", 512), ("dev.tsv", 8)))):
        folder.mkdir()
        for name, n in sizes:
            rows = ["index\tsentence1\tsentence2\tlabel"] + [
                f"{i}\t{WORDS[i % 12]} {WORDS[(i * 5) % 12]}\t{'yes' if i % 2 else 'no'} {WORDS[(i * 7) % 12]}\t"
                f"{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)]
            (folder / name).write_text("\n".join(rows) + "\n")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + ["yes", "no"] + WORDS) + "\n")
    torch.manual_seed(0)
    model = root / "model"
    save_pretrained(SequenceClassifier(tiny_config("bert", len(SPECIAL_TOKENS) + 14), 2), model, [vocab])
    run = root / "run"
    train.main(["--model", str(model), "--data-dir", str(data), "--method", "lora", "--max-steps", "2",
                "--batch-size", "8", "--out", str(run)])
    return dict(root=root, data=data, big=big, model=model, run=run)


def model_copy(kit, where, **files):
    """The kit's checkpoint folder copied to `where`, with `files` (name -> bytes, or None to delete)."""
    shutil.copytree(kit["model"], where)
    for name, content in files.items():
        if content is None:
            (where / name).unlink()
        else:
            (where / name).write_bytes(content)
    return where


def flags(kit, *more):
    return ["--model", kit["model"], "--data-dir", kit["data"], "--method", "lora", "--batch-size", "8", *more]


# -----------------------------------------------------------------------------
# data loss


def test_resume_reads_and_writes_its_own_folder_and_nothing_else(cli, kit, tmp_path):
    """Item 1: a run folder copied elsewhere and resumed from the directory the original was made in
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
    """Item 2: a run holds its folder; a second run (or a resume) into it exits 2 naming it; once the
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


def test_default_folders_differ_for_unrelated_runs_and_the_printed_one_is_written(cli, kit, tmp_path):
    """Item 3: README's first run, then runs with another --lr and another model: three folders, each
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
    headline = resolve_config(build_parser("").parse_args(
        ["--method", "loca", "--model", "roberta-base", "--task", "rte", "--device", "cpu"]))
    first_run = resolve_config(build_parser("").parse_args(["--model", "tiny", "--device", "cpu"]))
    assert headline["out"].startswith("runs/loca-rte-roberta-base-s0-") and headline["out"] != first_run["out"]


def test_save_minutes_checkpoints_within_the_first_epoch_and_changes_no_result(cli, kit, tmp_path):
    """Item 4: with --save-minutes (here a few milliseconds) a checkpoint exists long before the first
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
    from hub import read_safetensors
    a, b = (read_safetensors(p / "adapter.safetensors") for p in (out, tmp_path / "whole"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    results = [json.loads((p / "results.json").read_text()) for p in (out, tmp_path / "whole")]
    assert results[0]["final"] == results[1]["final"] and results[0]["best"] == results[1]["best"]


SLOW_LOAD = """
import pathlib, time, data.glue_tasks as glue
def _loading(*args, **kwargs):  # the data loads slowly: Ctrl-C lands before the loop
    pathlib.Path("loading").touch()
    time.sleep(60)
glue.load_glue = _loading
"""


def test_ctrl_c_says_whether_the_run_can_be_resumed_and_names_its_folder(cli, kit, tmp_path):
    """Item 4: Ctrl-C before the loop (nothing saved) says nothing can be resumed; in the loop, the run
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


def test_cli_uses_leave_the_checkout_as_they_found_it(cli, kit, tmp_path):
    """Item 5: a slice of the suite's command lines (the first run with its default folder, a bad flag, a
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


# -----------------------------------------------------------------------------
# one clear line, exit status 2, for every bad file, before anything is written

CONFIG_CASES = [  # (config.json change, what the line must say besides the file's name)
    (dict(num_attention_heads=0), "num_attention_heads=0 is out of range: must be >= 1"),
    (dict(hidden_size="big"), "hidden_size='big' is not an integer"),
    (dict(hidden_size=10**9), "more than the 10,000,000,000 this encoder allows"),
    (dict(num_hidden_layers=-3), "num_hidden_layers=-3 is out of range: must be >= 1"),
    ([1, 2], "expected a JSON object"),
    ("{\"hidden_size\": 32,", "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
]


@pytest.mark.parametrize("change, expected", CONFIG_CASES, ids=["heads0", "big", "huge", "layers", "list", "json"])
def test_a_bad_config_json_is_one_line_naming_it(cli, kit, tmp_path, change, expected):
    config = json.loads((kit["model"] / "config.json").read_text())
    text = change if isinstance(change, str) else json.dumps(change if isinstance(change, list) else
                                                             dict(config, **change))
    model = model_copy(kit, tmp_path / "m", **{"config.json": text.encode()})
    out = tmp_path / "out"
    code, _, err = cli(["--model", model, "--data-dir", kit["data"], "--out", out], tmp_path)
    one_line(code, err, 2, f"{model / 'config.json'}: ", expected)
    assert not out.exists()


def test_bad_weight_tokenizer_and_data_files_are_one_line_naming_them(cli, kit, tmp_path):
    """A truncated pytorch_model.bin, a vocab.txt and a train.tsv that are not UTF-8."""
    bin_model = model_copy(kit, tmp_path / "bin", **{"model.safetensors": None})
    state = {f"bert.{k}": v for k, v in SequenceClassifier.from_pretrained(kit["model"], 2).state_dict().items()}
    torch.save(state, bin_model / "pytorch_model.bin")
    whole = (bin_model / "pytorch_model.bin").read_bytes()
    (bin_model / "pytorch_model.bin").write_bytes(whole[:len(whole) // 2])
    vocab = (kit["model"] / "vocab.txt").read_bytes()
    latin1 = model_copy(kit, tmp_path / "latin1", **{"vocab.txt": vocab.replace(b"green", b"gr\xfcn")})
    data = tmp_path / "data"
    shutil.copytree(kit["data"], data)
    rows = (data / "train.tsv").read_bytes().split(b"\n")
    (data / "train.tsv").write_bytes(b"\n".join(rows[:3] + [rows[3].replace(b"\t", b"\t\xe9", 1)] + rows[4:]))
    for argv, expected in (
            (["--model", bin_model, "--data-dir", kit["data"]], [f"{bin_model / 'pytorch_model.bin'}: damaged or truncated"]),
            (["--model", latin1, "--data-dir", kit["data"]], [f"{latin1 / 'vocab.txt'}: not UTF-8 text"]),
            (["--model", kit["model"], "--data-dir", data], [f"{data / 'train.tsv'}, line 4: not UTF-8 text",
                                                            "byte 0xe9"])):
        out = tmp_path / "out"
        code, _, err = cli([*argv, "--out", out], tmp_path)
        one_line(code, err, 2, *expected)
        assert not out.exists()


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
             "its config's 'compile' is 'fast', not one of ['adapters', 'model', 'none']"),
            ("rng_bad", dict(checkpoint, rng={"torch": 1}), "its 'rng' does not hold the random generators' states")):
        folder = tmp_path / name
        shutil.copytree(kit["run"], folder)
        torch.save(damaged, folder / "checkpoint.pt")
        before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))
        code, _, err = cli(["--resume", folder], tmp_path)
        one_line(code, err, 2, f"--resume {folder}: {folder / 'checkpoint.pt'} is damaged: {expected}")
        assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before


def test_an_adapter_too_large_to_hold_is_refused_at_once_with_the_bound(cli, tmp_path):
    for argv, expected in (
            (["--method", "lora", "--r", "1000000000"], "--r 1000000000: lora on 4 layers of tiny would hold about "
                                                        "256,000,000,000 parameters"),
            (["--method", "vera", "--r", "100000000"], "--r 100000000: vera on 4 layers of tiny")):
        started = time.time()
        code, _, err = cli(["--model", "tiny", *argv, "--out", tmp_path / "out"], tmp_path)
        line = one_line(code, err, 2, expected, "at most 67,108,864", "choose a smaller --r")
        assert time.time() - started < 20 and not (tmp_path / "out").exists(), line
    code, _, err = cli(["--model", "roberta-base", "--method", "lora", "--r", "1000000", "--count-params"], tmp_path)
    one_line(code, err, 2, "lora on 24 layers of roberta-base", "the model's own 124,")


BENCH_CASES = [
    (["--hidden", "-5"], "argument --hidden: must be >= 0"),
    (["--hidden", "15", "--device", "cpu"], "--hidden 15: must be even"),
    (["--steps", "0"], "argument --steps: must be >= 1"),
    (["--batch", "two"], "argument --batch: expected an integer, got 'two'"),
    (["--seq", "100000", "--device", "cpu"], "--seq 100000: roberta-base takes at most 512 tokens"),
    (["--delta-sizes", "64,x"], "argument --delta-sizes: expected comma-separated integers"),
    (["--methods", "lora,bogus", "--device", "cpu"], "--methods: unknown bogus"),
    (["--device", "banana"], "--device 'banana' is not a device"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--compile", "all"], "argument --compile: invalid choice: 'all'"),
]


def test_bad_bench_flags_and_no_gpu_are_one_line(cli, tmp_path):
    for argv, expected in BENCH_CASES:
        code, _, err = cli(argv, tmp_path, kind="bench")
        one_line(code, err, 2, expected, prefix="bench.py:")
    code, _, err = cli([], tmp_path, kind="bench", CUDA_VISIBLE_DEVICES="")  # a machine without a GPU
    one_line(code, err, 2, "no CUDA GPU on this machine", "--device cpu", prefix="bench.py:")
    code, out, err = cli(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "1", "--seq", "4",
                          "--steps", "1", "--warmup", "0", "--methods", "lora", "--delta-sizes", ""], tmp_path,
                         kind="bench")
    assert code == 0, err
    assert out.splitlines()[0].startswith("# roberta-base shape (hidden 16, 1 layers")


# -----------------------------------------------------------------------------
# the rest of the list

FULL_DISK = """
import errno, os
_fsync, _calls = os.fsync, [0]
def _full(fd):  # the third durable write fails as on a full disk: log.jsonl, checkpoint 1, then step 2's best adapter
    _calls[0] += 1
    if _calls[0] >= 3:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)
os.fsync = _full
"""


def test_a_full_disk_names_the_file_and_says_the_last_checkpoint_is_intact(cli, kit, tmp_path):
    out = tmp_path / "full"
    code, _, err = cli(flags(kit, "--max-steps", "5", "--save-every", "1", "--out", out), tmp_path, prelude=FULL_DISK)
    one_line(code, err, 2, f"could not write {out / 'best' / 'adapter.safetensors'} (No space left on device)",
             f"{out / 'checkpoint.pt'} (step 1) is intact")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    assert not list(out.glob("*.tmp"))


def test_data_errors_speak_of_flags_and_a_failed_download_leaves_no_folder(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(["--model", "tiny", "--data-dir", empty], tmp_path)
    line = one_line(code, err, 2, f"--data-dir {empty} lacks dev.tsv, train.tsv", "leave out --data-dir")
    assert "data_dir=" not in line and "download=False" not in line
    header = tmp_path / "header_only"
    header.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (header / name).write_text("index\tsentence1\tsentence2\tlabel\n")
    code, _, err = cli(["--model", "tiny", "--data-dir", header], tmp_path)
    line = one_line(code, err, 2, f"{header / 'train.tsv'} holds no rte examples")
    assert "delete" not in line.lower()
    cache = tmp_path / "glue"  # the default folder ($GLUE_DIR), with a cached file cut to its header
    (cache / "RTE").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(header / name, cache / "RTE" / name)
    code, _, err = cli(["--model", "tiny", "--task", "rte", "--data-dir", cache / "RTE"], tmp_path)
    assert "delete" not in err.lower()
    code, _, err = cli(["--model", "roberta-base", "--task", "rte", "--method", "lora", "--out", tmp_path / "o"],
                       tmp_path, GLUE_DIR=str(cache))
    one_line(code, err, 2, "holds no rte examples", "delete it to download it again")
    code, _, err = cli(["--model", "tiny", "--task", "cola", "--out", tmp_path / "o"], tmp_path, GLUE_DIR=str(cache),
                       GLUE_URL="http://127.0.0.1:9")  # nothing listens on the discard port
    line = one_line(code, err, 1, f"could not download GLUE cola into {cache / 'CoLA'}/", "--data-dir")
    assert "data_dir=" not in line and "url=" not in line
    assert not (cache / "CoLA").exists() and not (tmp_path / "o").exists()


def test_fp32_hint_only_when_the_run_is_not_already_fp32(cli, kit, tmp_path):
    for precision, hinted in (("fp32", False), ("bf16", True)):
        code, _, err = cli(flags(kit, "--lr", "1e30", "--max-steps", "20", "--precision", precision, "--device", "cpu",
                                 "--out", tmp_path / precision), tmp_path)
        line = one_line(code, err, 1, "loss is nan at step", "try a lower --lr", prefix="train.py:")
        assert ("--precision fp32" in line) == hinted, line


def test_out_that_cannot_be_a_folder_and_empty_flags_are_refused(cli, kit, tmp_path):
    (tmp_path / "a_file").write_text("")
    unwritable = "/sys/spectral-ft-test-out"  # sysfs: not even root may make a folder there
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        unwritable = str(tmp_path / "ro" / "out")
    for model in (["--model", "tiny"], ["--model", kit["model"], "--data-dir", kit["data"]]):
        code, _, err = cli([*model, "--out", tmp_path / "a_file"], tmp_path)
        one_line(code, err, 2, f"--out {tmp_path / 'a_file'} is a file, not a folder")
        code, _, err = cli([*model, "--out", tmp_path / "a_file" / "sub"], tmp_path)
        one_line(code, err, 2, f"--out {tmp_path / 'a_file' / 'sub'} cannot be written")
        code, _, err = cli([*model, "--out", unwritable], tmp_path)
        one_line(code, err, 2, f"--out {unwritable} cannot be written")
    for argv, expected in ((["--targets", ""], "--targets is empty"), (["--out", ""], "--out is empty"),
                           (["--model", ""], "--model is empty"), (["--targets", "query,"], "has an empty name")):
        code, _, err = cli(argv, tmp_path)
        one_line(code, err, 2, expected)
    assert not (tmp_path / "runs").exists()


def test_bad_hyperparameters_are_caught_before_the_tiny_model_is_written(cli, tmp_path):
    for argv in (["--max-length", "1000"], ["--method", "lora", "--r", "0"], ["--method", "lora", "--dropout", "2"],
                 ["--targets", "nothing_here"]):
        code, _, err = cli(["--model", "tiny", *argv, "--out", tmp_path / "out"], tmp_path)
        one_line(code, err, 2)
        assert not (tmp_path / "out").exists(), argv
