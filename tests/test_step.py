"""
train.py's step (bench.TrainStep runs its loop body) on step.Speed's micro-batches, which on a GPU run as CUDA
graphs, checked on the CPU (CI has no GPU).

A graph needs fixed shapes, so mode "padded" (what mode "graph" replays, run eagerly) pads every
micro-batch to a fixed row count (copies of row 0 at loss weight 0) and to a length bucket (padding
tokens, masked out). These tests state that none of that
changes a step: in float64 on a tiny model without dropout, padded steps (LoCA through both phases and
its freeze; several micro-batches; a short last batch; two gloo processes with the flat all-reduce)
equal the unpadded eager step, and padded evaluation gives the eager metrics.
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import spectral_ft
import train
from data import pad_batch
from run.config import prepare_model
from run.distributed import batch_share
from bench import TrainStep
from run.step import bucket_length, pad_to_shape, step_mode
from encoder.model import SequenceClassifier, tiny_config

REPO = Path(__file__).resolve().parent.parent
VOCAB = 40


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 512), max_length=st.integers(1, 512))
def test_bucket_is_the_next_multiple_of_32_never_past_max_length(length, max_length):
    if length > max_length:
        with pytest.raises(ValueError, match="length must be in"):
            bucket_length(length, max_length)
        return
    bucket = bucket_length(length, max_length)
    assert length <= bucket <= max_length
    assert bucket == max_length or (bucket % 32 == 0 and bucket - length < 32)


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6), extra_rows=st.integers(0, 3),
       extra_length=st.integers(0, 12))
def test_pad_to_shape_adds_masked_padding_and_weight_zero_copies_of_row_0(lengths, extra_rows, extra_length):
    encoded = [([5 + i] * n, [1] * n) for i, n in enumerate(lengths)]
    ids, mask, types, y = pad_batch(encoded, [i % 2 for i in range(len(lengths))], range(len(lengths)), 0,
                                          False)
    weight = torch.ones(len(lengths))
    b, T = ids.shape
    rows, length = b + extra_rows, T + extra_length
    p_ids, p_mask, p_types, p_y, p_weight = pad_to_shape(ids, mask, types, y, weight, rows, length, pad_id=3)
    assert p_ids.shape == p_mask.shape == p_types.shape == (rows, length) and p_y.shape == p_weight.shape == (rows,)
    assert torch.equal(p_ids[:b, :T], ids) and torch.equal(p_mask[:b, :T], mask) and torch.equal(p_y[:b], y)
    assert (p_ids[:b, T:] == 3).all() and (p_mask[:, T:] == 0).all() and (p_types[:, T:] == 0).all()
    assert torch.equal(p_ids[b:, :T], ids[[0] * extra_rows]) and torch.equal(p_mask[b:].sum(1), mask[[0] * extra_rows].sum(1))
    assert p_weight.tolist() == [1.0] * b + [0.0] * extra_rows
    with pytest.raises(ValueError, match="does not fit the static shape"):
        pad_to_shape(ids, mask, types, y, weight, b - 1 if b > 1 else b, T - 1 if T > 1 else 0, 0)


def test_graphs_on_cuda_unless_eager_or_fp16_and_never_on_the_cpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert step_mode(cuda, "bf16") == "graph" and step_mode(cuda, "fp64") == "graph"
    assert step_mode(cuda, "bf16", eager=True) == "eager" and step_mode(cuda, "fp16") == "eager"
    assert step_mode(cpu, "fp32") == "eager"
    model = nn_model("lora")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    with pytest.raises(ValueError, match="mode 'graph' needs a CUDA device"):
        TrainStep(model, optimizer, device=cpu, mode="graph", rows=4, max_length=32)
    with pytest.raises(ValueError, match="needs rows and max_length"):
        TrainStep(model, optimizer, device=cpu, mode="padded")


# -----------------------------------------------------------------------------
# padded steps equal eager steps


def nn_model(method, labels=2, seed=0, **hyperparameters):
    """A tiny BERT without dropout (dropout masks depend on the shape), float64, `method` injected."""
    torch.manual_seed(seed)
    config = tiny_config("bert", VOCAB)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    model = SequenceClassifier(config, labels)
    targets = ["query", "value"] if method not in ("full", "head") else None
    return prepare_model(model, method, targets, hyperparameters).double()


def optimizer_of(model, method):
    """fine_tune's groups: adapter, head, LoCA locations (own rate, no weight decay)."""
    head = set(model.head_parameter_names())
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    location = lambda n: n.endswith(".locations")
    groups = [dict(params=[p for n, p in named if n not in head and not location(n)], lr=2e-2),
              dict(params=[p for n, p in named if n in head], lr=1e-2),
              dict(params=[p for n, p in named if location(n)], lr=5e-2, weight_decay=0.0)]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.01)


# LoCA's location gradients near zero (|g| far below AdamW's eps 1e-8) move a location by lr · g / eps:
# the float64 rounding of g (1e-16) then shows as 1e-11 in a location. Every other tensor: 1e-12.
LOCATION_ATOL = 1e-9


def batches(seed, steps, batch, micro, regression=False, max_len=20):
    """`steps` batches of `batch` examples (the last one short) of random lengths, as fine_tune makes them:
    micro-batches of pad_batch's tensors and loss weights. -> [(parts, examples)]"""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(steps):
        n = batch if s < steps - 1 else max(1, batch // 2 - 1)  # an epoch's short last batch
        lengths = torch.randint(2, max_len + 1, (n,), generator=g).tolist()
        encoded = [(torch.randint(5, VOCAB, (k,), generator=g).tolist(), [0] * (k // 2) + [1] * (k - k // 2))
                   for k in lengths]
        labels = torch.rand(n, generator=g).mul(5).tolist() if regression else torch.randint(0, 2, (n,), generator=g).tolist()
        parts = [(*pad_batch(encoded, labels, range(i, min(i + micro, n)), 0, regression),
                  torch.ones(min(i + micro, n) - i)) for i in range(0, n, micro)]
        out.append((parts, n))
    return out


def run_steps(model, method, mode, data, micro, regression=False, schedule_args=None, max_length=32, world=1):
    optimizer = optimizer_of(model, method)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, train.linear_warmup_decay(len(data), 1))
    schedule = spectral_ft.LoCASchedule(model, *schedule_args) if schedule_args else None
    step = TrainStep(model, optimizer, scheduler, None, schedule, device=torch.device("cpu"), mode=mode,
                           rows=micro, max_length=max_length, regression=regression, world=world)
    phases = []
    for parts, examples in data:
        phases.append(schedule.phase if schedule else None)
        yield step(parts, examples).item(), phases[-1]


@pytest.mark.parametrize("method, hyperparameters, schedule_args", [
    ("lora", {}, None), ("fourierft", {"n": 64}, None), ("vera", {"r": 16}, None),
    ("foura", {"gate": False}, None), ("full", {}, None),
    ("loca", {"n": 64}, (2, 2, 6))])  # coefficients 0-1, locations 2-3, coefficients 4-5, frozen 6-
def test_padded_steps_equal_eager_steps_in_float64(method, hyperparameters, schedule_args):
    """Micro-batches of 3 (the batch of 7 in three passes, the last of 1), lengths 2-20 padded to 32,
    the epoch's short last batch: the same losses and weights as unpadded eager steps."""
    data = batches(seed=1, steps=9, batch=7, micro=3)
    eager_model = nn_model(method, **hyperparameters)
    padded_model = copy.deepcopy(eager_model)
    initial = {n: p.detach().clone() for n, p in eager_model.named_parameters()}
    eager = list(run_steps(eager_model, method, "eager", data, 3, schedule_args=schedule_args))
    padded = list(run_steps(padded_model, method, "padded", data, 3, schedule_args=schedule_args))
    if schedule_args:
        assert [phase for _, phase in eager] == ["coefficients"] * 2 + ["locations"] * 2 + ["coefficients"] * 2 + [
            "frozen"] * 3
    assert [loss for loss, _ in padded] == pytest.approx([loss for loss, _ in eager], rel=1e-12)
    weights = dict(padded_model.named_parameters())
    for name, p in eager_model.named_parameters():
        torch.testing.assert_close(weights[name], p, rtol=0, atol=LOCATION_ATOL if name.endswith(".locations") else 1e-12,
                                   msg=name)
        if p.requires_grad or name.endswith(".locations"):  # training moved them: the comparison has teeth
            assert not torch.equal(p, initial[name]), name


def test_padded_regression_steps_and_evaluation_equal_eager(tmp_path):
    """STS-B-shaped regression (MSE) and the dev metrics: padded evaluation gives the eager Pearson
    correlation (continuous: any padding row or token that leaked in would show)."""
    data = batches(seed=2, steps=4, batch=6, micro=6, regression=True)
    models = {mode: nn_model("lora", labels=1) for mode in ("eager", "padded")}
    losses = {mode: [loss for loss, _ in run_steps(models[mode], "lora", mode, data, 6, regression=True)]
              for mode in models}
    assert losses["padded"] == pytest.approx(losses["eager"], rel=1e-12)

    from data.glue_tasks import Example
    g = torch.Generator().manual_seed(3)
    examples = [Example(f"a{i}", None, float(torch.rand(1, generator=g)) * 5) for i in range(11)]
    encoded = [(torch.randint(5, VOCAB, (k,), generator=g).tolist(), [0] * k)
               for k in torch.randint(2, 40, (11,), generator=g).tolist()]
    metrics = {}
    for mode, model in models.items():
        step = TrainStep(model, optimizer_of(model, "lora"), device=torch.device("cpu"), mode=mode, rows=4,
                               max_length=64, regression=True)
        metrics[mode] = train.evaluate(model, "stsb", 4, encoded, [e.label for e in examples], 0, step.speed)
        assert model.training  # evaluate restores the mode
    assert metrics["padded"]["pearson"] == pytest.approx(metrics["eager"]["pearson"], abs=1e-12)
    assert metrics["eager"] == train.evaluate(models["eager"], "stsb", 4, encoded, [e.label for e in examples], 0)  # no step


WORKER = r'''
import sys, torch, torch.distributed as dist
sys.path[:0] = [REPO, TESTS]
from run.distributed import batch_share
from test_step import batches, nn_model, run_steps

def losses_and_weights(mode, rank, world):
    """8 padded steps of a global batch of 7 (shares 4 / 3, last batch 2 / 1) in `world` processes."""
    data = []
    for parts, examples in batches(seed=4, steps=8, batch=7, micro=7):
        ids, mask, types, y, _ = parts[0]
        shard = list(range(examples))[rank::world]  # this process's positions of the order
        indices, weights = batch_share(shard, 0, examples, rank, world)
        share = tuple(t[indices] for t in (ids, mask, types, y)) + (torch.tensor(weights, dtype=torch.float32),)
        data.append(([share], examples))
    model = nn_model("loca", n=64)
    losses = [loss for loss, _ in run_steps(model, "loca", mode, data, 4, schedule_args=(2, 2, 6), world=world)]
    return losses, {n: p.detach() for n, p in model.named_parameters()}

if __name__ == "__main__":
    dist.init_process_group("gloo")
    losses, weights = losses_and_weights("padded", dist.get_rank(), dist.get_world_size())
    parts = torch.tensor(losses, dtype=torch.float64)
    dist.all_reduce(parts)  # the processes' parts add up to each batch's mean loss
    if dist.get_rank() == 0:
        torch.save({"losses": parts, "weights": weights}, sys.argv[1])
    dist.destroy_process_group()
'''


def test_two_processes_padded_with_the_flat_all_reduce_equal_one_eager_process(tmp_path):
    """Graph mode's several-process path (no DDP: broadcast once, one all-reduce of a flat gradient
    buffer, divided by world), with LoCA's phases: the one-process eager weights and losses."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("REPO", repr(str(REPO))).replace("TESTS", repr(str(REPO / "tests"))))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "two.pt")], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    namespace = {}
    exec(WORKER.replace("REPO", repr(str(REPO))).replace("TESTS", repr(str(REPO / "tests"))).split(
        'if __name__')[0], namespace)
    losses, weights = namespace["losses_and_weights"]("eager", 0, 1)
    assert two["losses"].tolist() == pytest.approx(losses, rel=1e-12)
    for name, p in weights.items():
        torch.testing.assert_close(two["weights"][name], p, rtol=0,
                                   atol=LOCATION_ATOL if name.endswith(".locations") else 1e-12, msg=name)


def test_eager_flag_is_accepted_and_the_cpu_runs_eager_either_way(tmp_path):
    flags = ["--model", "tiny", "--method", "lora", "--max-steps", "3", "--device", "cpu"]
    plain = train.main([*flags, "--out", str(tmp_path / "plain")])
    eager = train.main([*flags, "--eager", "--out", str(tmp_path / "eager")])
    assert eager["config"]["eager"] is True and plain["config"]["eager"] is False
    assert eager["final"] == plain["final"]
    assert plain["config"]["compile"] == "none"  # a short run's default, for graph steps; the CPU compiles nothing
    other = train.main([*flags, "--compile", "model", "--out", str(tmp_path / "model")])
    assert other["config"]["compile"] == "model" and other["final"] == plain["final"]


@settings(max_examples=25, deadline=None)
@given(micro=st.integers(1, 3), trains=st.lists(st.booleans(), min_size=4, max_size=4), seed=st.integers(0, 2**16))
def test_backward_into_adds_the_gradients_into_the_static_grads_as_autograd_does(micro, trains, seed):
    """The graphed backward's one multi-tensor addition (step.backward_into) leaves every static .grad with exactly
    the bits autograd's own accumulation gives over `micro` micro-batches, the .grad tensors the same objects; a
    parameter the pass never reaches keeps its gradient as it was, and one that does not train gets none."""
    from run.step import backward_into

    torch.manual_seed(seed)
    layers = [torch.nn.Linear(5, 5) for _ in range(2)]
    unused = torch.nn.Parameter(torch.randn(3))
    params = [layers[0].weight, layers[0].bias, layers[1].weight, unused]
    for p, t in zip(params, trains):
        p.requires_grad_(t)
    xs = [torch.randn(4, 5, requires_grad=True) for _ in range(micro)]  # the input requires grad: a pass always runs
    grads = {}
    for way in ("autograd", "backward_into"):
        attached = [(p, torch.zeros_like(p)) for p in params if p.requires_grad]
        for p, static in attached:
            p.grad = static
        for x in xs:
            logits = layers[1](torch.tanh(layers[0](x)))
            if way == "autograd":
                logits.backward(torch.ones_like(logits))
            else:
                backward_into(logits, torch.ones_like(logits), attached)
        assert all(p.grad is static for p, static in attached)
        grads[way] = [p.grad.clone() for p, _ in attached]
    assert all(torch.equal(a, b) for a, b in zip(grads["autograd"], grads["backward_into"]))
    assert unused.grad is None or not unused.grad.any()


def test_backward_into_through_a_compiled_adapter_equals_autograd_s_accumulation():
    """The same through torch.compile (AOTAutograd's backward hands the gradients over, as in the graphed step's
    compiled layers): LoRA on a Linear, two micro-batches, the static .grad bit for bit autograd's."""
    from run.step import backward_into

    torch.manual_seed(0)
    adapter = spectral_ft.LoRA(torch.nn.Linear(8, 6), r=2)
    torch.nn.init.normal_(adapter.lora_B)
    adapter.compile(backend="aot_eager")
    xs = [torch.randn(5, 8) for _ in range(2)]
    grads = {}
    for way in ("autograd", "backward_into"):
        attached = [(p, torch.zeros_like(p)) for p in adapter.parameters() if p.requires_grad]
        for p, static in attached:
            p.grad = static
        for x in xs:
            y = adapter(x)
            y.backward(torch.ones_like(y)) if way == "autograd" else backward_into(y, torch.ones_like(y), attached)
        grads[way] = [static.clone() for _, static in attached]
    assert len(grads["autograd"]) == 2 and all(g.any() for g in grads["autograd"])
    assert all(torch.equal(a, b) for a, b in zip(grads["autograd"], grads["backward_into"]))


def test_padded_micro_batches_add_their_gradients_into_static_buffers_that_stay_put():
    """What a graphed backward relies on: every trained parameter's .grad is the same static buffer at every step
    (the addresses the graph was captured with), zeroed when a step starts, and two micro-batches of one shape add
    up in it (g1 + g2, not 2 g2); a tensor that does not train in a phase has no gradient (AdamW skips it)."""
    from run.step import Speed

    model = nn_model("loca", n=64)
    eager_model = copy.deepcopy(model)
    speed = Speed(model, device=torch.device("cpu"), mode="padded", rows=3, max_length=32)
    (parts, _), (later, _) = batches(seed=5, steps=2, batch=6, micro=3)  # two micro-batches of 3 per step
    addresses = None
    for step_parts in (parts, later):
        for network, (input_ids, mask, types, y, weight) in speed.micro_batches(step_parts):
            train.weighted_loss(network(input_ids, mask, types), y, weight, False).backward()
        trained = [p for p in model.parameters() if p.requires_grad]
        now = [p.grad.data_ptr() for p in trained]
        assert addresses in (None, now)
        addresses = now
        expected = [0.0 * p for p in eager_model.parameters() if p.requires_grad]
        for input_ids, mask, types, y, weight in step_parts:
            losses = train.weighted_loss(eager_model(input_ids, mask, types), y, weight, False)
            for e, g in zip(expected, torch.autograd.grad(losses, [p for p in eager_model.parameters() if p.requires_grad])):
                e += g
        for p, e in zip(trained, expected):
            torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)
    assert any(not p.requires_grad for p in model.parameters())  # the frozen backbone, LoCA's locations
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    model.requires_grad_(False)  # a phase that trains nothing of these: the next step detaches them all
    list(speed.micro_batches(later))
    assert all(p.grad is None for p in model.parameters())
