"""
train.py end to end on tiny models and tiny data: no network (a loopback hub), no GPU.

Most runs call train.main(argv) in this process. The command-line promises (exit status, one error
line) are checked in real child processes: a "zygote" process imports torch and train.py once and
forks a child per command line (a fresh `python train.py` costs seconds of imports each), and the
SIGKILL test starts `python train.py` itself.
"""
import hashlib
import http.server
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import spectral_ft
import train
from data import pad_batch
from run.distributed import epoch_permutation
from run.config import prepare_model
from encoder.model import TINY_SPECIAL_TOKENS as SPECIAL_TOKENS
from data import RTE_SAMPLE_DIR
from run.errors import NonFiniteError
from run.folder import load_trainable_state, rng_state, set_rng_state
from encoder.hub import read_safetensors
from encoder.model import SequenceClassifier, save_pretrained, tiny_config

REPO = Path(__file__).resolve().parent.parent
WORDS = "red blue green cat dog bird runs sits eats big small old".split()


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-exact comparisons need the same reduction order in every run: one CPU thread, as the children use."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_learnable_rte(directory, n_train=64, n_dev=32, seed=0):
    """RTE-format TSVs whose label is decided by the first word of sentence2 ('yes' -> entailment)."""
    import random

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            yes = i % 2 == 0
            s1 = " ".join(rng.choice(WORDS) for _ in range(5))
            s2 = ("yes " if yes else "no ") + " ".join(rng.choice(WORDS) for _ in range(3))
            rows.append(f"{i}\t{s1}\t{s2}\t{'entailment' if yes else 'not_entailment'}")
        (directory / name).write_text("\n".join(rows) + "\n")
    return directory


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    return write_learnable_rte(tmp_path_factory.mktemp("data") / "rte")


def run(out, data, *flags):
    return train.main(["--model", "tiny", "--data-dir", str(data), "--out", str(out), *map(str, flags)])


def tensors(path):
    return read_safetensors(path)


def same_tensors(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def losses(out):
    """(step, mean training loss since the previous evaluation) of each evaluation in out/log.jsonl."""
    lines = map(json.loads, (Path(out) / "log.jsonl").read_text().splitlines())
    return [(line["step"], line["loss"]) for line in lines if "metrics" in line]


# -----------------------------------------------------------------------------
# pieces of the loop


@settings(max_examples=50, deadline=None)
@given(total=st.integers(1, 5000), ratio=st.floats(0, 0.99))
def test_lr_factor_warms_up_linearly_then_decays_to_zero(total, ratio):
    warmup = math.ceil(ratio * total)
    f = train.linear_warmup_decay(total, warmup)
    values = [f(s) for s in range(total + 1)]
    assert values[total] == 0.0 and max(values) <= 1.0
    peak = min(warmup, total - 1)  # the step whose factor is largest
    assert all(a <= b for a, b in zip(values[:peak + 1], values[1:peak + 1]))  # rising
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1:]))  # then falling
    if 0 < warmup < total:
        assert values[0] == 0.0 and values[warmup] == 1.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 500), n=st.integers(1, 300), bs=st.integers(1, 64))
def test_each_epoch_visits_every_example_once_in_an_order_set_by_seed_and_epoch(seed, epoch, n, bs):
    perm = epoch_permutation(seed, epoch, n)
    batches = [perm[i:i + bs].tolist() for i in range(0, n, bs)]
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert torch.equal(perm, epoch_permutation(seed, epoch, n))
    if n >= 21:  # another epoch reshuffles: 21! > 2**64 orders, so two equal ones would be no coincidence
        assert not torch.equal(perm, epoch_permutation(seed, epoch + 1, n))  # (n = 8: one run in 1,300)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=8), pad=st.integers(0, 5))
def test_batches_pad_to_their_longest_example_and_mask_only_padding(lengths, pad):
    encoded = [([100 + i] * n, [0] * (n // 2) + [1] * (n - n // 2)) for i, n in enumerate(lengths)]
    ids, mask, types, y = pad_batch(encoded, list(range(len(lengths))), range(len(lengths)), pad, False)
    assert ids.shape == mask.shape == types.shape == (len(lengths), max(lengths))
    assert mask.sum(1).tolist() == lengths and y.tolist() == list(range(len(lengths)))
    for b, (row_ids, row_types) in enumerate(encoded):
        assert ids[b, :lengths[b]].tolist() == row_ids and types[b, :lengths[b]].tolist() == row_types
        assert (ids[b, lengths[b]:] == pad).all() and (types[b, lengths[b]:] == 0).all()


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    """torch's generator (and CUDA's, where there is one): the only ones a run draws from."""
    torch.manual_seed(1)
    torch.randn(3)  # move the generator away from its seed
    torch.save({"rng": rng_state()}, tmp_path / "c.pt")
    expected = torch.randn(5)
    set_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert torch.equal(torch.randn(5), expected)


# -----------------------------------------------------------------------------
# --count-params: the papers' RoBERTa-base numbers, with nothing downloaded


@pytest.mark.parametrize("flags, adapter", [
    (["--method", "lora"], 294_912), (["--method", "vera"], 43_008), (["--method", "fourierft"], 24_000),
    (["--method", "loca"], 24_000), (["--method", "fora", "--n", "500"], 24_000),
    (["--method", "fora", "--n", "250"], 12_000)])
def test_count_params_reproduces_the_roberta_base_table_offline(flags, adapter, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any download attempt would raise
    counts = train.main(["--count-params", "--model", "roberta-base", *flags])["trainable_parameters"]
    H = 768
    assert counts["adapter"] == adapter
    assert counts["head"] == (H * H + H) + (H * 2 + 2)  # RoBERTa's head: dense, then out_proj to 2 labels
    if "loca" in flags:  # during the search each coefficient also trains its (row, col) location
        assert counts["adapter_while_searching"] == 3 * adapter


# -----------------------------------------------------------------------------
# a model from a (loopback) hub: download once, reuse the cache, and learn


class Hub(http.server.BaseHTTPRequestHandler):
    """/{org}/{name}/resolve/main/{file} with the headers hub.hf_hub_download reads; counts requests."""
    files, requests, commit = {}, [], "c" * 40

    def do_GET(self):
        self.requests.append(self.path)
        repo, _, file = self.path.lstrip("/").partition("/resolve/main/")
        if repo not in self.files:
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
        elif file not in self.files[repo]:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", self.commit)
        else:
            data = self.files[repo][file]
            self.send_response(200)
            self.send_header("X-Repo-Commit", self.commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A tiny BERT (vocabulary: the learnable task's words) served as org/tiny from 127.0.0.1."""
    folder = tmp_path_factory.mktemp("served")
    vocab = SPECIAL_TOKENS + ["yes", "no"] + WORDS
    (folder.parent / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    save_pretrained(SequenceClassifier(tiny_config("bert", len(vocab)), 2), folder, [folder.parent / "vocab.txt"])
    handler = type("Handler", (Hub,), {"files": {"org/tiny": {p.name: p.read_bytes() for p in folder.iterdir()}},
                                       "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_hub_model_downloads_once_then_trains_from_the_cache_and_loss_falls(hub, learnable, tmp_path, monkeypatch):
    handler, url = hub
    for var, value in (("HF_ENDPOINT", url), ("HF_HOME", str(tmp_path / "hf")), ("no_proxy", "127.0.0.1"),
                       ("NO_PROXY", "127.0.0.1")):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    flags = ["--model", "org/tiny", "--data-dir", str(learnable), "--method", "loca", "--lr", "5e-2",
             "--lr-head", "1e-2", "--epochs", "16", "--eval-every", "4"]
    first = train.main([*flags, "--out", str(tmp_path / "a")])
    assert any("model.safetensors" in r for r in handler.requests)
    assert list((tmp_path / "hf" / "hub").glob("models--org--tiny/snapshots/*/model.safetensors"))
    seen = len(handler.requests)
    second = train.main([*flags, "--out", str(tmp_path / "b")])
    assert len(handler.requests) == seen  # everything came from the cache
    logged = [loss for _, loss in losses(tmp_path / "a")]
    assert sum(logged[-3:]) / 3 < 0.5 * sum(logged[:3]) / 3  # mean loss of the last 12 steps vs the first 12
    assert first["best"]["value"] > 0.9 and first["best"] == second["best"]


# -----------------------------------------------------------------------------
# reliability: same seed, resume after SIGKILL, non-finite loss


def test_same_seed_gives_identical_weights_and_metrics_and_another_seed_does_not(learnable, tmp_path):
    flags = ["--method", "loca", "--lr", "5e-2", "--epochs", "4", "--T-s", "8", "--B-a", "2", "--B-l", "2",
             "--lr-locations", "1e-2"]
    a, b = run(tmp_path / "a", learnable, *flags), run(tmp_path / "b", learnable, *flags)
    c = run(tmp_path / "c", learnable, *flags, "--seed", "1")
    wa, wb, wc = (tensors(tmp_path / x / "adapter.safetensors") for x in "abc")
    assert same_tensors(wa, wb) and a["best"] == b["best"] and a["final"] == b["final"]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert not same_tensors(wa, wc)


def test_killed_run_resumes_to_the_same_weights_and_metrics_bit_for_bit(learnable, tmp_path):
    flags = ["--model", "tiny", "--data-dir", str(learnable), "--method", "lora", "--dropout", "0.1", "--lr", "1e-2",
             "--lr-head", "1e-2", "--epochs", "30", "--save-every", "3", "--eval-every", "5"]
    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, str(REPO / "train.py"), *flags, "--out", str(killed)], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (killed / "checkpoint.pt").exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL and not (killed / "results.json").exists()  # stopped mid-run
    step = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 120

    resumed = train.main(["--resume", str(killed)])
    whole = train.main([*flags, "--out", str(tmp_path / "whole")])
    assert same_tensors(tensors(killed / "adapter.safetensors"), tensors(tmp_path / "whole" / "adapter.safetensors"))
    assert resumed["best"] == whole["best"] and resumed["final"] == whole["final"]
    assert losses(killed) == losses(tmp_path / "whole")  # the log too, with no line twice
    without_time = lambda out: [{k: v for k, v in json.loads(line).items() if k != "time"}
                                for line in (out / "log.jsonl").read_text().splitlines()]
    assert without_time(killed) == without_time(tmp_path / "whole")  # --log-every's lines too
    assert whole["best"]["value"] > 0.9  # it learned, so the metrics compared above are not constant


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(learnable, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match=r"at step (\d+)") as info:
        run(out, learnable, "--method", "lora", "--lr", "1e30", "--save-every", "1", "--max-steps", "20")
    step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == step - 1 and f"(step {step - 1}) is intact" in str(info.value)
    assert all(torch.isfinite(t).all() for t in checkpoint["trainable"].values() if t.is_floating_point())
    assert not (out / "adapter.safetensors").exists() and not (out / "results.json").exists()


def test_loca_locations_move_during_location_phases_and_only_then(learnable, tmp_path):
    flags = ["--method", "loca", "--lr", "5e-2", "--lr-locations", "1e-2", "--B-a", "2"]
    run(tmp_path / "frozen", learnable, *flags, "--max-steps", "12", "--T-s", "0", "--B-l", "2")  # no search
    run(tmp_path / "search", learnable, *flags, "--max-steps", "12", "--T-s", "12", "--B-l", "2",  # steps 2-3, 6-7, 10-11
        "--weight-decay", "0.1", "--lr-head", "3e-3")
    run(tmp_path / "first", learnable, *flags, "--max-steps", "2", "--T-s", "12", "--B-l", "2")  # its coefficient steps
    run(tmp_path / "no_phase", learnable, *flags, "--max-steps", "12", "--T-s", "12", "--B-l", "0")  # cycles of B_a only
    frozen, search, first, no_phase = (tensors(tmp_path / x / "adapter.safetensors")
                                       for x in ("frozen", "search", "first", "no_phase"))
    keys = [k for k in frozen if k.endswith(".locations")]
    assert keys and all(k.endswith((".locations", ".coefficients")) or k.startswith(("classifier", "pooler")) for k in frozen)
    assert all(torch.equal(frozen[k], no_phase[k]) and torch.equal(frozen[k], first[k]) for k in keys)
    assert all(not torch.equal(frozen[k], search[k]) for k in keys)
    assert all(((search[k] >= 0) & (search[k] <= 1)).all() for k in keys)  # clamped to [0, 1]
    assert all(search[k.replace("locations", "coefficients")].abs().sum() > 0 for k in keys)
    groups = torch.load(tmp_path / "search" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert {g["name"]: (g["initial_lr"], g["weight_decay"]) for g in groups} == {
        "adapter": (5e-2, 0.1), "head": (3e-3, 0.1), "locations": (1e-2, 0.0)}  # never weight decay on locations


# -----------------------------------------------------------------------------
# the command line: bad input -> exit status 2 and one line naming the argument

ZYGOTE = r"""
import json, os, sys, traceback
sys.path.insert(0, os.environ["SPECTRAL_FT_REPO"])  # the checkout; the working directory is a temporary folder
import torch._dynamo  # imported lazily by meta-device code; import it once here, not in every child
import train  # torch and the project, imported once; nothing has run, so forking is safe
for line in sys.stdin:
    argv, env, out_path, err_path = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.update(env)
        for fd, path in ((1, out_path), (2, err_path)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        try:
            code = train.cli(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """cli(argv, **env) -> (exit status, stdout, stderr) of `train.py argv` in a forked child process."""
    logs = tmp_path_factory.mktemp("cli")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(logs / "hf"), no_proxy="127.0.0.1", NO_PROXY="127.0.0.1",
               SPECTRAL_FT_REPO=str(REPO), GLUE_DIR=str(logs / "glue"))
    env.pop("HF_ENDPOINT", None)
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=logs, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def call(argv, **child_env):
        out, err = logs / "out.txt", logs / "err.txt"
        zygote.stdin.write(json.dumps([list(map(str, argv)), child_env, str(out), str(err)]) + "\n")
        zygote.stdin.flush()
        return int(zygote.stdout.readline()), out.read_text(), err.read_text()

    yield call
    zygote.stdin.close()
    zygote.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Checkpoints to resume: a LoCA run and a LoRA run of two steps each, plus damaged copies."""
    root, data = tmp_path_factory.mktemp("runs"), RTE_SAMPLE_DIR
    for method in ("loca", "lora"):
        train.main(["--model", "tiny", "--method", method, "--max-steps", "2", "--out", str(root / method)])
    loca = torch.load(root / "loca" / "checkpoint.pt", weights_only=True)
    lora = torch.load(root / "lora" / "checkpoint.pt", weights_only=True)
    for name, trainable in (("reshaped", {k: (v[:, :-1] if k.endswith("locations") else v) for k, v in loca["trainable"].items()}),
                            ("other_method", lora["trainable"])):
        (root / name).mkdir()
        torch.save(dict(loca, trainable=trainable), root / name / "checkpoint.pt")
    (root / "garbage").mkdir()
    (root / "garbage" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (root / "empty").mkdir()
    bad_tsv = root / "bad_tsv"
    bad_tsv.mkdir()
    (bad_tsv / "train.tsv").write_text((data / "train.tsv").read_text() + "99\tonly two\n")
    (bad_tsv / "dev.tsv").write_text((data / "dev.tsv").read_text())
    bad_label = root / "bad_label"
    bad_label.mkdir()
    (bad_label / "train.tsv").write_text((data / "train.tsv").read_text() + "99\ta\tb\tmaybe\n")
    (bad_label / "dev.tsv").write_text((data / "dev.tsv").read_text())
    return root


SAMPLE = ["--model", "tiny", "--data-dir", str(RTE_SAMPLE_DIR)]
BAD_INPUTS = [  # (argv, what the one error line must say)
    (["--method", "lorax"], "argument --method: invalid choice: 'lorax'"),
    (["--task", "rtee"], "argument --task: invalid choice: 'rtee'"),
    (["--compile", "everything"], "argument --compile: invalid choice: 'everything'"),
    (["--frobnicate", "1"], "unrecognized arguments: --frobnicate"),
    (["--lr", "-1"], "argument --lr: must be > 0"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["--warmup-ratio", "1.5"], "argument --warmup-ratio: must be >= 0 and < 1"),
    (["--seed", "-3"], "argument --seed: must be >= 0"),
    (["--r", "eight"], "argument --r: invalid int value: 'eight'"),
    (["--method", "lora", "--n", "100"], "--n is not a hyperparameter of --method lora: it takes --r, --alpha, --dropout"),
    (["--method", "loca", "--gate"], "--gate/--no-gate is not a hyperparameter of --method loca"),
    (["--method", "head", "--r", "4"], "--r is not a hyperparameter of --method head: it takes no adapter"),
    (["--method", "lora", "--lr-locations", "1e-3"], "--lr-locations does not apply to --method lora"),
    (["--method", "full", "--lr-head", "1e-3"], "--lr-head does not apply to --method full"),
    (["--method", "full", "--targets", "query"], "--targets does not apply to --method full"),
    (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
    (["--device", "banana"], "--device 'banana' is not a device"),
    (["--device", "meta"], "--device meta: only cpu and cuda are supported"),
    ([*SAMPLE, "--method", "lora", "--r", "0"], "r=0 is out of range"),
    ([*SAMPLE, "--method", "lora", "--dropout", "1.5"], "dropout=1.5 is out of range"),
    ([*SAMPLE, "--method", "loca", "--n", "5000"], "n=5000 spectral coefficients do not fit a 32x32 weight matrix"),
    ([*SAMPLE, "--method", "foura", "--transform", "wavelet"], "transform must be 'dct' or 'dft'"),
    ([*SAMPLE, "--targets", "nothing_here"], "no nn.Linear's name ends with any of targets"),
    ([*SAMPLE, "--max-length", "1000"], "--max-length 1000 is more than tiny takes: allowed at most 128"),
    (["--model", "./no/such/checkpoint", "--data-dir", str(RTE_SAMPLE_DIR)], "is not a directory"),
    (["--model", "tiny", "--data-dir", "/no/such/folder"], "--data-dir /no/such/folder is not a folder"),
    (["--model", "tiny", "--data-dir", "{runs}/empty"], "/empty lacks dev.tsv, train.tsv"),
    (["--model", "tiny", "--data-dir", "{runs}/bad_tsv"], "train.tsv, line 66: expected 4 tab-separated columns"),
    (["--model", "tiny", "--data-dir", "{runs}/bad_label"], "line 66: label 'maybe' is not one of rte's labels"),
    (["--resume", "{runs}/empty"], "--resume {runs}/empty: no checkpoint.pt there"),
    (["--resume", "{runs}/garbage"], "is not a checkpoint written by train.py"),
    (["--resume", "{runs}/loca", "--method", "lora"], "--method lora differs from the run being resumed (loca)"),
    (["--resume", "{runs}/loca", "--lr", "0.5"], "--lr 0.5 differs from the run being resumed"),
    (["--resume", "{runs}/reshaped"], "has shape (2, 999), the model needs (2, 1000)"),
    (["--resume", "{runs}/other_method"], "saved from another method or other targets?"),
    ([*SAMPLE, "--out", "{runs}/loca"], "already holds an earlier run's checkpoint.pt: continue it with --resume"),
]


def test_every_bad_input_exits_2_with_one_line_naming_it(cli, runs, hub):
    _, url = hub
    cases = BAD_INPUTS + [(["--model", "org/no-such-model", *SAMPLE[2:]], "the repository 'org/no-such-model' or revision 'main' does not exist")]
    assert len(cases) >= 20
    failures = []
    for argv, expected in cases:
        argv = [a.replace("{runs}", str(runs)) for a in argv]
        expected = expected.replace("{runs}", str(runs))
        code, _, err = cli(argv, HF_ENDPOINT=url)
        lines = [line for line in err.splitlines() if line.startswith("train.py:")]
        if not (code == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err):
            failures.append((argv, code, err[-400:]))
    assert not failures, failures


def test_a_good_run_exits_0_and_a_non_finite_one_exits_1(cli, tmp_path):
    code, out, _ = cli([*SAMPLE, "--method", "lora", "--max-steps", "2", "--out", tmp_path / "ok"])
    assert code == 0 and "checked the pipeline, not accuracy" in out and (tmp_path / "ok" / "results.json").exists()
    code, _, err = cli([*SAMPLE, "--method", "lora", "--lr", "1e30", "--max-steps", "20", "--out", tmp_path / "nan"])
    assert code == 1 and "loss is nan at step" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def stsb(tmp_path_factory):
    """STS-B-format TSVs whose score follows the first word of sentence2: a regression task."""
    import random

    rng, directory = random.Random(1), tmp_path_factory.mktemp("data") / "stsb"
    directory.mkdir()
    for name, n in (("train.tsv", 48), ("dev.tsv", 24)):
        rows = ["index\tgenre\tsentence1\tsentence2\tscore"]
        for i in range(n):
            score = rng.uniform(0, 5)
            s2 = ("yes " if score > 2.5 else "no ") + " ".join(rng.choice(WORDS) for _ in range(3))
            rows.append(f"{i}\tmain\t{' '.join(rng.choice(WORDS) for _ in range(5))}\t{s2}\t{score:.3f}")
        (directory / name).write_text("\n".join(rows) + "\n")
    return directory


@pytest.mark.parametrize("method", [*spectral_ft.METHODS, "full", "head"])
def test_every_method_trains_and_its_adapter_file_alone_reproduces_the_final_dev_metric(method, stsb, tmp_path):
    """adapter.safetensors + the base checkpoint = the trained model: reloaded, it scores exactly the
    final dev Pearson correlation (a continuous metric, so any missing or stale tensor shows)."""
    from data import load_glue
    from encoder.model import load_pretrained

    rate = ["--lr-head" if method == "head" else "--lr", "1e-2"]
    results = run(tmp_path, stsb, "--task", "stsb", "--method", method, "--max-steps", "3", *rate)
    model, tokenizer = load_pretrained(tmp_path / "tiny-model", num_labels=1)
    prepare_model(model, *(results["config"][k] for k in ("method", "targets", "hyperparameters")))
    load_trainable_state(model, method, tensors(tmp_path / "adapter.safetensors"), "test")
    dev = load_glue("stsb", "dev", stsb, download=False)
    encoded = [tokenizer.encode(e.text_a, e.text_b, max_length=128) for e in dev]
    metrics = train.evaluate(model, results["config"]["task"], results["config"]["batch_size"], encoded, [e.label for e in dev], tokenizer.pad_token_id)
    assert metrics == results["final"]["metrics"]["dev"] and math.isfinite(metrics["pearson"])


def test_outputs_hold_the_log_the_adapter_with_metadata_and_the_results(learnable, tmp_path):
    from encoder.hub import read_safetensors_metadata

    results = run(tmp_path / "o", learnable, "--method", "fourierft", "--epochs", "2")
    log = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    log = [line for line in log if "metrics" in line]  # the evaluations (--log-every's lines: another test)
    assert [line["step"] for line in log] == [4, 8] and all(set(line) == {"step", "epoch", "metrics", "loss", "lr", "time"} for line in log)
    meta = read_safetensors_metadata(tmp_path / "o" / "adapter.safetensors")
    assert meta["method"] == "fourierft" and json.loads(meta["hyperparameters"])["n"] == 1000 and meta["task"] == "rte"
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["final"] == results["final"] and saved["trainable_parameters"] == results["trainable_parameters"]
    assert saved["final"]["metrics"]["dev"] == log[-1]["metrics"]["dev"]
    assert set(saved["versions"]) == {"python", "torch", "numpy"} and saved["config"]["seed"] == 0
