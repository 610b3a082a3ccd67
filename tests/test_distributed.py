"""
torchrun: N processes (gloo on the CPU) train exactly what one process trains.

The sharding arithmetic is checked as properties of plain functions; the end-to-end runs start
`python -m torch.distributed.run --standalone --nproc_per_node=N train.py ...` on a tiny model without
dropout (dropout masks are drawn per process, so they cannot match one process's) and compare with
`train.main` in this process: same weights to float tolerance, same dev metrics, process 0 alone
writing, and a run stopped under 2 processes resumed under 1.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import spectral_ft
import train
from encoder.model import build_tiny_model
from run.config import prepare_model
from run.distributed import batch_share, epoch_permutation, epoch_shard
from run.folder import load_trainable_state
from data import load_glue
from encoder.hub import read_safetensors
from encoder.model import load_pretrained

from test_train import write_learnable_rte

REPO = Path(__file__).resolve().parent.parent


# -----------------------------------------------------------------------------
# the arithmetic: every batch split between the processes, each example once


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 90), batch=st.integers(1, 20), world=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       epoch=st.integers(0, 50))
def test_processes_share_each_batch_of_the_one_process_order_with_weights_that_count_each_example_once(
        n, batch, world, seed, epoch):
    order = epoch_permutation(seed, epoch, n).tolist()
    shards = [epoch_shard(seed, epoch, n, rank, world) for rank in range(world)]
    for rank, shard in enumerate(shards):  # DistributedSampler's shard is the order's rank::world
        assert shard[:len(order[rank::world])] == order[rank::world]
    for start in range(0, n, batch):
        end = min(start + batch, n)
        shares = [batch_share(shards[r], start, end, r, world) for r in range(world)]
        assert len({len(indices) for indices, _ in shares}) == 1  # every process runs the same passes
        assert all(len(indices) == len(weights) == math.ceil((end - start) / world) for indices, weights in shares)
        counted = sorted(i for indices, weights in shares for i, w in zip(indices, weights) if w == 1.0)
        assert counted == sorted(order[start:end])  # the one-process batch, each example once
        assert all(w in (0.0, 1.0) for _, weights in shares for w in weights)
        assert sum(w for _, weights in shares for w in weights) == end - start


# -----------------------------------------------------------------------------
# end to end


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-exact comparisons need the same reduction order in every run: one CPU thread, as torchrun's
    children use (OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """RTE (37 train / 29 dev: no batch or process count divides them), STS-B-shaped regression data,
    and a tiny BERT without dropout, in the Hugging Face layout."""
    root = tmp_path_factory.mktemp("distributed")
    rte = write_learnable_rte(root / "rte", n_train=37, n_dev=29)
    stsb = root / "stsb"
    stsb.mkdir()
    for name in ("train.tsv", "dev.tsv"):  # STS-B's layout, a similarity score made from RTE's rows
        rows = (rte / name).read_text().splitlines()[1:]
        lines = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        for row in rows:
            i, s1, s2, label = row.split("\t")
            score = (4.0 if label == "entailment" else 1.0) + (int(i) % 7) / 7
            lines.append(f"{i}\tg\tf\ty\t{i}\ts\ts\t{s1}\t{s2}\t{score}")
        (stsb / name).write_text("\n".join(lines) + "\n")
    examples = [e for s in ("train", "dev") for e in load_glue("rte", s, rte, download=False)]
    models = {}
    for labels in (1, 2):  # STS-B's regression head, RTE's two classes
        model = build_tiny_model([t for e in examples for t in (e.text_a, e.text_b) if t], root / f"model{labels}", labels)
        config = json.loads((model / "config.json").read_text())
        config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        (model / "config.json").write_text(json.dumps(config))
        models[labels] = str(model)
    return dict(rte=str(rte), stsb=str(stsb), model=models[2], regression_model=models[1])


def torchrun(n, *flags, background=False):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "train.py", *map(str, flags)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if background:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def largest_difference(a, b):
    assert sorted(a) == sorted(b)
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("method", ["loca", "vera"])
def test_two_and_three_processes_end_with_the_weights_and_dev_metrics_of_one(tiny, tmp_path, method):
    """Same global batch (8; shares of 4/4 and 3/3/2, and 3/2 and 2/2/1 in each epoch's last batch of 5),
    in float64: the same weights as one process to 1e-6, 1e-4 of an Adam step (float32 shows Adam
    magnifying the rounding of near-zero gradients, not DDP). LoCA runs both phases of its schedule:
    its locations move, by the gradient of the whole batch. The dev metric (a continuous Pearson
    correlation) is recomputed in one process from process 0's adapter file: an example dropped or
    counted twice by the sharded evaluation would change it."""
    flags = ["--model", tiny["regression_model"], "--data-dir", tiny["stsb"], "--task", "stsb", "--method", method,
             "--lr", "1e-2", "--lr-head", "1e-2", "--epochs", "3", "--batch-size", "8", "--device", "cpu",
             "--precision", "fp64"]
    if method == "loca":
        flags += ["--lr-locations", "1e-2", "--B-a", "2", "--B-l", "2", "--T-s", "12"]
    one = train.main([*flags, "--out", str(tmp_path / "one")])
    weights = read_safetensors(tmp_path / "one" / "adapter.safetensors")
    model, tokenizer = load_pretrained(tiny["regression_model"], num_labels=1)
    initial = spectral_ft.adapter_state_dict(prepare_model(model, *(one["config"][k] for k in ("method", "targets", "hyperparameters"))))
    if method == "loca":  # the location phases moved them
        assert all(not torch.equal(weights[k], initial[k].double()) for k in initial if k.endswith(".locations"))
    for n in (2, 3):
        out = tmp_path / f"n{n}"
        printed = torchrun(n, *flags, "--out", out).stdout
        assert printed.count("done: best dev") == 1  # process 0 alone speaks ...
        assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "best", "checkpoint.pt", "log.jsonl",
                                                         "results.json"]  # ... and writes
        results = json.loads((out / "results.json").read_text())
        assert results["processes"] == n
        assert largest_difference(weights, read_safetensors(out / "adapter.safetensors")) < 1e-6
        logged, alone = ([json.loads(line) for line in (o / "log.jsonl").read_text().splitlines()]
                         for o in (out, tmp_path / "one"))
        assert [line["step"] for line in logged] == [5, 10, 15]  # ceil(37 / 8) steps an epoch, as in one process
        assert [line["loss"] for line in logged] == pytest.approx([line["loss"] for line in alone], rel=1e-10)
        load_trainable_state(model.double(), method, read_safetensors(out / "adapter.safetensors"), "test")
        dev = load_glue("stsb", "dev", tiny["stsb"], download=False)
        encoded = [tokenizer.encode(e.text_a, e.text_b, max_length=128) for e in dev]
        metrics = train.evaluate(model, one["config"]["task"], one["config"]["batch_size"], encoded, [e.label for e in dev], tokenizer.pad_token_id)
        assert metrics["pearson"] == pytest.approx(results["final"]["metrics"]["dev"]["pearson"], abs=1e-9)
        assert metrics["pearson"] == pytest.approx(one["final"]["metrics"]["dev"]["pearson"], abs=1e-6)


def test_a_run_stopped_under_two_processes_resumes_under_one(tiny, tmp_path):
    flags = ["--model", tiny["model"], "--data-dir", tiny["rte"], "--method", "lora", "--lr", "1e-2",
             "--lr-head", "1e-2", "--epochs", "60", "--batch-size", "8", "--device", "cpu", "--save-every", "7",
             "--precision", "fp64"]
    stopped = tmp_path / "stopped"
    child = torchrun(2, *flags, "--out", stopped, background=True)
    try:
        deadline = time.time() + 90
        while not (stopped / "checkpoint.pt").exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGTERM)  # torchrun stops its workers mid-step, then exits
        child.wait(timeout=60)
    assert not (stopped / "results.json").exists()  # stopped mid-run
    step = torch.load(stopped / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 300
    resumed = train.main(["--resume", str(stopped)])
    whole = train.main([*flags, "--out", str(tmp_path / "whole")])
    weights = [read_safetensors(p / "adapter.safetensors") for p in (stopped, tmp_path / "whole")]
    assert largest_difference(*weights) < 1e-8
    assert resumed["final"]["metrics"] == whole["final"]["metrics"]
    logged = [json.loads(line) for line in (stopped / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged if "metrics" in line] == list(range(5, 301, 5))  # every evaluation
    assert [line["step"] for line in logged if "metrics" not in line] == list(range(50, 301, 50))  # and loss, once


def test_torchrun_with_one_process_is_the_plain_run_bit_for_bit(tiny, tmp_path):
    """N = 1 under torchrun (a process group, DDP around the model) changes nothing, in float32."""
    flags = ["--model", tiny["model"], "--data-dir", tiny["rte"], "--method", "fourierft", "--lr", "5e-2",
             "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's process (OMP_NUM_THREADS=1): float32 sums split alike
    try:
        plain = train.main([*flags, "--out", str(tmp_path / "plain")])
    finally:
        torch.set_num_threads(threads)
    torchrun(1, *flags, "--out", tmp_path / "one")
    weights = [read_safetensors(p / "adapter.safetensors") for p in (tmp_path / "plain", tmp_path / "one")]
    assert sorted(weights[0]) == sorted(weights[1])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert json.loads((tmp_path / "one" / "results.json").read_text())["final"] == plain["final"]
