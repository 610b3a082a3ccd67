"""
Our hand-written CUDA-graph step (bench.TrainStep: train.py's step, mode 'graph') against torch.compile(mode="reduce-overhead")
doing the capture, in one process, so that both are measured in the same call.

    python scripts/capture_vs_reduce_overhead.py --json out/capture.json                        # (a) the bench
    python scripts/capture_vs_reduce_overhead.py --bench-methods '' --minilm .minilm --sst2 .sst2  # (b) the real run
    python scripts/capture_vs_reduce_overhead.py --device cpu --layers 2 --hidden 64 --steps 2 --warmup 1 \
        --seq 16 --batches 4 --minilm DIR --sst2 DIR --epoch-steps 6                             # CPU smoke test

(a) the bench: for each method and batch, roberta-base's shape with random weights (bench.build), bf16 autocast,
fused AdamW, random tokens at --seq; the median optimizer step (CUDA events) of each variant, a fresh model and
torch._dynamo.reset() before each:
    ours                      TrainStep, mode 'graph', the adapted layers compiled (--compile adapters)
    ours-model                the same, the whole model compiled (--compile model)
    reduce-overhead           CompiledStep: each micro-batch padded to (rows, length bucket), forward + weighted
                              loss under torch.compile(mode="reduce-overhead", dynamic=False), backward eager
                              (the compiled backward runs in CUDA-graph trees too), fused AdamW eager
    reduce-overhead-adapters  the same, but only the adapted layers compiled (mode reduce-overhead)
A correctness guard first: per method, ours and reduce-overhead take one step from the same weights, without
dropout (a --guard-layers model): their losses and gradients must agree to bf16 tolerance.
(b) the real run (--minilm, --sst2): all-MiniLM-L6-v2 × SST-2, one epoch of batch 32 at max length 64, in
epoch_permutation(0, 0, n) order, LoRA r=8 alpha=8 on query,value (lr 5e-4, head 5e-4, weight decay 0.1, 6%
warmup then linear decay: the same for every variant); wall clock from before the first step (compilation
included) to after the last, then dev accuracy (eager). Variants: ours, ours-layers, ours-none (--compile's scopes;
ours-none is train.py's default for this run of 2,105 steps), reduce-overhead (length buckets),
reduce-overhead-unbucketed (each batch at its own padded length, dynamic=None: as a PEFT user runs it).
Verdict: keep ours only if it takes at most 95% of reduce-overhead's time on every bench row and on
the real run. On --device cpu the compiled variants use backend aot_eager and ours runs mode 'padded': a smoke
test of the code paths, not a measurement.
"""
import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's modules

import torch
import torch.nn as nn
import torch.nn.functional as F

import bench
import spectral_ft
from run.config import prepare_model
from run.errors import Parser, UsageError, bounded
from data import load_task
from run.distributed import epoch_permutation
from encoder.hub import atomic_write
from encoder.model import KNOWN_CONFIGS, load_pretrained
from bench import TrainStep
from run.step import bucket_length, compile_in_place, pad_to_shape
from encoder.tokenization import load_tokenizer

BENCH_VARIANTS = ("ours", "ours-layers", "ours-model", "reduce-overhead", "reduce-overhead-adapters")
EPOCH_VARIANTS = ("ours", "ours-layers", "ours-none", "reduce-overhead", "reduce-overhead-unbucketed")
KEEP_OURS_BELOW = 0.95  # ours / reduce-overhead: ours must be at least 5% faster to be kept
READ_EVERY = 10  # the real run reads a loss back every 10 steps, as train.py does
GUARD_LOSS_RTOL, GUARD_GRAD_RTOL = 2e-2, 1e-1  # bf16 autocast, two compilations of the same sums; a bug is O(1)


class CompiledStep:
    """One optimizer step with torch.compile doing the capture, called as bench.TrainStep is:
    `loss = step([(input_ids, mask, types, y, weight), ...], examples)`.

    Each micro-batch goes to the device padded to (rows, bucket_length) by step.pad_to_shape (buckets=True), or
    as it is (buckets=False); the forward and the weighted loss sum (`weighted_sum`) run compiled: scope 'model'
    compiles that function (mode reduce-overhead: Inductor, then CUDA-graph trees for the forward and, through
    AOTAutograd, the backward), scope 'adapters' compiles each adapted layer alone, in place. backward() and the
    fused AdamW step are eager. Gradients are set to None at the start of a step, so that after a step they hold
    its gradients (the guard reads them). `options`: torch.compile's keywords beyond dynamic."""

    def __init__(self, model, optimizer, scheduler=None, *, device, dtype, rows, max_length, pad_id,
                 scope="model", buckets=True, options=None):
        self.model, self.optimizer, self.scheduler, self.device = model, optimizer, scheduler, device
        self.rows, self.max_length, self.pad_id, self.buckets = rows, max_length, pad_id, buckets
        self.mode, self.dtype = f"compiled {scope}", dtype if dtype in (torch.bfloat16, torch.float16) else None
        options = dict(options or {}, dynamic=False if buckets else None)  # None: dynamo's default, as PEFT users
        if scope == "model":
            self.loss_sum = torch.compile(self.weighted_sum, **options)
        else:  # 24 layers of one class, each a program per bucket: more than dynamo's default 8 (as compile_in_place)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            for _, adapter in spectral_ft.adapters(model):
                adapter.compile(**options)
            self.loss_sum = self.weighted_sum

    def weighted_sum(self, input_ids, mask, types, y, weight):
        """Σ_b weight_b · cross-entropy(logits_b, y_b): a 0-dim tensor; logits in float32."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(input_ids, mask, types)  # (rows, num_labels)
        return (F.cross_entropy(logits.float(), y, reduction="none") * weight).sum()

    def to_device(self, part):
        """A micro-batch at (rows, bucket_length), or as it is; pinned and copied without a wait on CUDA."""
        input_ids, mask, types, y, weight = part
        if self.buckets:
            rows, length = max(self.rows, len(input_ids)), bucket_length(input_ids.shape[1], self.max_length)
            part = pad_to_shape(input_ids, mask, types, y, weight, rows, length, self.pad_id)
        cuda = self.device.type == "cuda"
        return [(t.pin_memory() if cuda else t).to(self.device, non_blocking=cuda) for t in part]

    def __call__(self, parts, examples):
        self.optimizer.zero_grad(set_to_none=True)
        torch.compiler.cudagraph_mark_step_begin()  # the outputs of the previous step's graphs are dead
        step_loss = 0.0
        for part in parts:
            loss = self.loss_sum(*self.to_device(part)) / examples  # eager: a tensor of its own, not the graph's
            loss.backward()
            step_loss = step_loss + loss.detach()
        self.optimizer.step()
        if self.scheduler:
            self.scheduler.step()
        return step_loss


def make_step(variant, model, optimizer, scheduler, device, dtype, rows, max_length, pad_id):
    """The step of one variant. On the CPU, ours runs mode 'padded' after compile_in_place with aot_eager and the
    compiled variants use aot_eager: the same code paths, no CUDA graphs."""
    cuda = device.type == "cuda"
    if variant in ("ours", "ours-layers", "ours-model", "ours-none"):
        scope = variant.partition("-")[2] or "adapters"  # --compile's scope
        if not cuda:
            compile_in_place(model, scope, backend="aot_eager")
        return TrainStep(model, optimizer, scheduler, device=device, dtype=dtype, mode="graph" if cuda else "padded",
                         rows=rows, max_length=max_length, pad_id=pad_id, compile=scope)
    options = {"mode": "reduce-overhead"} if cuda else {"backend": "aot_eager"}
    return CompiledStep(model, optimizer, scheduler, device=device, dtype=dtype, rows=rows, max_length=max_length,
                        pad_id=pad_id, scope="adapters" if variant.endswith("-adapters") else "model",
                        buckets=not variant.endswith("-unbucketed"), options=options)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, warmup, steps, device):
    """Median ms of `steps` calls fn(i) after `warmup`: CUDA events (bench.median_cuda_ms), or the CPU's clock."""
    if device.type == "cuda":
        return bench.median_cuda_ms(fn, warmup, steps)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[warmup:])


# -----------------------------------------------------------------------------
# (a) the bench


def random_parts(vocab, batch, seq, count=4):
    """`count` single-micro-batch steps of random tokens, as bench.py feeds them: ids in [3, vocab) from a CPU
    generator seeded 1, every token real, token type 0, random labels, weight 1."""
    generator = torch.Generator().manual_seed(1)
    ones = torch.ones(batch, seq, dtype=torch.long)
    return [[(torch.randint(3, vocab, (batch, seq), generator=generator), ones, torch.zeros_like(ones),
              torch.randint(0, 2, (batch,), generator=generator), torch.ones(batch))] for _ in range(count)]


def fresh(args, method, variant, batch, device, layers=None):
    """torch._dynamo.reset(), then bench.build's model (seed 0: the same weights for every variant), fused AdamW
    as bench.py's, and the variant's step. -> (model, step)."""
    torch._dynamo.reset()
    shape = argparse.Namespace(**dict(vars(args), layers=args.layers if layers is None else layers))
    model = bench.build(shape, method, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  **({"fused": True} if device.type == "cuda" else {}))
    return model, make_step(variant, model, optimizer, None, device, torch.bfloat16, batch, args.seq,
                            model.config.pad_token_id)


def time_step(train_step, parts, examples, warmup, steps, device):
    """The first call's seconds (compilation and capture), then the median ms of `steps` calls after `warmup`,
    each timed alone (the device synchronized after each), then the same number of calls in a row (loop_ms),
    then as many alone again for the host's ms from the call to its first CUDA graph launch (launch_ms, median;
    None where no graph is replayed), cycling through `parts`; the last call's loss.
    -> {first_step_s, ms, loop_ms, launch_ms, loss}."""
    last = {}

    def one_step(i):
        last["loss"] = train_step(parts[i % len(parts)], examples)

    synchronize(device)
    t0 = time.perf_counter()
    one_step(0)
    synchronize(device)
    first_s = time.perf_counter() - t0
    ms = median_ms(lambda i: one_step(i + 1), warmup, steps, device)
    loop = loop_ms(lambda i: one_step(i + 1 + warmup + steps), steps, device)
    launch = launch_ms(lambda i: one_step(i + 1 + warmup + 2 * steps), steps, device)
    return dict(first_step_s=first_s, ms=ms, loop_ms=loop, launch_ms=launch, loss=float(last["loss"]))


def launch_ms(fn, steps, device):
    """Median host ms from a call fn(i), the device idle, to its first CUDA graph launch (CUDAGraph.replay, which
    our GraphedPasses and torch.compile's cudagraph trees both call): what a step timed alone waits before its
    first kernel, and what a loop hides behind the step before. None when no call replays a graph (the CPU, eager)."""
    if device.type != "cuda":
        return None
    stamps, replay = [], torch.cuda.CUDAGraph.replay

    def stamped(graph, *args, **kwargs):
        stamps.append(time.perf_counter())
        return replay(graph, *args, **kwargs)

    waits = []
    torch.cuda.CUDAGraph.replay = stamped
    try:
        for i in range(steps):
            synchronize(device)
            stamps.clear()
            t0 = time.perf_counter()
            fn(i)
            if stamps:
                waits.append((stamps[0] - t0) * 1e3)
    finally:
        torch.cuda.CUDAGraph.replay = replay
    synchronize(device)
    return statistics.median(waits) if waits else None


def loop_ms(fn, steps, device):
    """ms per call of `steps` calls fn(i) in a row, the device synchronized only before the first and after the
    last: a training loop's pace, where the host prepares a step while the device still runs the one before
    (train.py reads its losses back every READ_EVERY steps). A step timed alone also counts that host time."""
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        fn(i)
    synchronize(device)
    return (time.perf_counter() - t0) * 1e3 / steps


def bench_row(args, method, batch, variant, device):
    """One row of the bench: a fresh model and step, timed (time_step)."""
    model, train_step = fresh(args, method, variant, batch, device)
    row = dict(method=method, batch=batch, variant=variant, mode=train_step.mode,
               **time_step(train_step, random_parts(model.config.vocab_size, batch, args.seq), batch, args.warmup,
                           args.steps, device))
    print(f"  {method:<10} batch {batch:<4} {variant:<25} {row['ms']:8.3f} ms  (first step "
          f"{row['first_step_s']:6.1f} s, loss {row['loss']:.4f}, {row['mode']})", flush=True)
    return row


def without_dropout(model):
    """Every dropout of the model off (nn.Dropout modules, and the attention's dropout_p): the guard's steps
    then compute the same function in every variant."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_p"):
            module.dropout_p = 0.0
    return model


def guard(args, method, device):
    """One step of ours and of reduce-overhead from the same weights, without dropout: the loss and the gradients
    of the trainable tensors against ours'. -> {variant: {loss, loss_rel_diff, grad_rel_diff, ok}}."""
    batch, seen = args.batches[0], {}
    for variant in ("ours", "reduce-overhead"):
        model, train_step = fresh(args, method, variant, batch, device, layers=args.guard_layers)
        without_dropout(model)  # before the first step: that is when either variant traces and compiles
        parts = random_parts(model.config.vocab_size, batch, args.seq, count=1)
        loss = float(train_step(parts[0], batch))
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])  # (trainable,)
        seen[variant] = (loss, grads)
        del model, train_step
    ours_loss, ours_grads = seen["ours"]
    report = {}
    for variant, (loss, grads) in seen.items():
        loss_diff = abs(loss - ours_loss) / max(abs(ours_loss), 1e-12)
        grad_diff = ((grads - ours_grads).norm() / ours_grads.norm().clamp_min(1e-12)).item()
        report[variant] = dict(loss=loss, loss_rel_diff=loss_diff, grad_rel_diff=grad_diff,
                               ok=loss_diff <= GUARD_LOSS_RTOL and grad_diff <= GUARD_GRAD_RTOL)
        print(f"  guard {method:<10} {variant:<25} loss {loss:.5f} (rel diff {loss_diff:.1e}), gradients rel diff "
              f"{grad_diff:.1e}: {'ok' if report[variant]['ok'] else 'DISAGREE'}", flush=True)
    return report


# -----------------------------------------------------------------------------
# (b) the real run


def pad_examples(encoded, labels, indices, pad_id):
    """The examples at `indices` padded to their longest (as train.py pads a batch), weight 1 each:
    -> input_ids, attention_mask, token_type_ids (B, T), labels (B,), weight (B,)."""
    T = max(len(encoded[i][0]) for i in indices)
    input_ids = torch.full((len(indices), T), pad_id, dtype=torch.long)  # (B, T)
    types, mask = torch.zeros_like(input_ids), torch.zeros_like(input_ids)  # (B, T) each
    for b, i in enumerate(indices):
        ids, token_types = encoded[i]
        input_ids[b, :len(ids)], types[b, :len(ids)] = torch.tensor(ids), torch.tensor(token_types)
        mask[b, :len(ids)] = 1
    return input_ids, mask, types, torch.tensor([labels[i] for i in indices]), torch.ones(len(indices))


def load_sst2(args):
    """SST-2's train and dev splits tokenized once with the checkpoint's tokenizer at --max-length:
    -> ((encoded, labels) train, (encoded, labels) dev, pad id)."""
    tokenizer = load_tokenizer(Path(args.minilm))
    train, dev, _ = load_task("sst2", args.sst2)
    encode = lambda examples: ([tokenizer.encode(e.text_a, e.text_b, max_length=args.max_length) for e in examples],
                               [e.label for e in examples])
    return encode(train), encode(dev["dev"]), tokenizer.pad_token_id


def lora_run(args, device, total_steps):
    """MiniLM with a fresh head (seed 0) and LoRA r=8 alpha=8 on query,value, on the device; AdamW (fused on
    CUDA) with the adapter and head groups, 6% warmup then linear decay to 0. -> (model, optimizer, scheduler)."""
    torch.manual_seed(0)
    model, _ = load_pretrained(args.minilm, 2)
    prepare_model(model, "lora", ["query", "value"], dict(r=8, alpha=8.0))
    model.to(device)
    head = set(model.head_parameter_names())
    return (model, *lora_optimizer(model.named_parameters(), lambda name: name in head, args, device, total_steps))


def lora_optimizer(named_parameters, in_head, args, device, total_steps):
    """AdamW (fused on CUDA, weight decay 0.1) over the trainable tensors, the head's at --lr-head and the others
    at --lr, and its schedule: 6% linear warmup, then linear decay to 0. -> (optimizer, scheduler)."""
    named = [(n, p) for n, p in named_parameters if p.requires_grad]
    groups = [dict(params=[p for n, p in named if not in_head(n)], lr=args.lr),
              dict(params=[p for n, p in named if in_head(n)], lr=args.lr_head)]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.1, **({"fused": True} if device.type == "cuda" else {}))
    warmup = math.ceil(0.06 * total_steps)
    factor = lambda s: s / warmup if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def accuracy(model, encoded, labels, pad_id, device, batch, forward=None):
    """Dev accuracy, eager (bf16 autocast; compiled modules run their Python, so that no row pays for compiling
    evaluation's programs after its timed epoch), in batches padded to their longest; forward(input_ids, mask,
    types) -> logits (B, num_labels), the model itself by default."""
    forward = forward or model
    model.eval()
    correct = 0
    with torch.compiler.set_stance("force_eager"):
        for start in range(0, len(encoded), batch):
            indices = range(start, min(start + batch, len(encoded)))
            input_ids, mask, types, y, _ = pad_examples(encoded, labels, indices, pad_id)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = forward(input_ids.to(device), mask.to(device), types.to(device))  # (B, 2)
            correct += (logits.argmax(-1).cpu() == y).sum().item()
    model.train()
    return correct / len(encoded)


def epoch_steps(args, n):
    """Steps of one epoch of n examples at --batch, or --epoch-steps if fewer."""
    return min(args.epoch_steps or math.inf, math.ceil(n / args.batch))


def timed_epoch(train_step, train, steps, batch, pad_id, device):
    """`steps` optimizer steps over the examples in epoch_permutation(0, 0, n) order, each batch padded to its
    longest (the step pads further if it buckets). -> (wall seconds from before the first step, compilation
    included, to after the last, synchronized; the losses, on the device)."""
    (encoded, labels), losses = train, []
    order = epoch_permutation(0, 0, len(encoded)).tolist()
    synchronize(device)
    t0 = time.perf_counter()
    for k in range(steps):
        indices = order[k * batch:(k + 1) * batch]
        losses.append(train_step([pad_examples(encoded, labels, indices, pad_id)], len(indices)))
        if (k + 1) % READ_EVERY == 0:
            losses[-1].item()  # the host waits for the GPU here, as train.py's loss read-back does
    synchronize(device)
    return time.perf_counter() - t0, losses


def epoch_summary(variant, wall, losses, accuracy_, mode):
    """The row of one real run, printed."""
    row = dict(variant=variant, wall_s=wall, steps=len(losses), dev_accuracy=accuracy_, mode=mode,
               loss_last100=torch.stack([torch.as_tensor(l).float().cpu() for l in losses[-100:]]).mean().item())
    print(f"  epoch {variant:<27} {wall:8.1f} s  ({row['steps']} steps, loss of the last 100 "
          f"{row['loss_last100']:.4f}, dev accuracy {accuracy_:.4f}, {mode})", flush=True)
    return row


def epoch_row(args, variant, train, dev, pad_id, device):
    """One epoch of one variant (or its first --epoch-steps steps): wall seconds (compilation included), the
    mean loss of the last 100 steps, dev accuracy (eager)."""
    steps = epoch_steps(args, len(train[0]))
    torch._dynamo.reset()
    model, optimizer, scheduler = lora_run(args, device, steps)
    model.train()
    train_step = make_step(variant, model, optimizer, scheduler, device, torch.bfloat16, args.batch,
                           args.max_length, pad_id)
    wall, losses = timed_epoch(train_step, train, steps, args.batch, pad_id, device)
    return epoch_summary(variant, wall, losses, accuracy(model, *dev, pad_id, device, args.batch), train_step.mode)


# -----------------------------------------------------------------------------
# the tables and the verdict


def bench_table(rows, variants):
    """One line per (method, batch): each variant's ms ('failed' where it raised), and ours / reduce-overhead for
    each of ours. -> {ours variant: [ratio or None per line]}."""
    width = {v: max(9, len(v)) for v in variants}
    ours = [v for v in variants if v.startswith("ours")]
    print(f"\n# bench: median optimizer step, ms\n{'method':<10} {'batch':>5} "
          + " ".join(f"{v:>{width[v]}}" for v in variants) + " " + " ".join(f"{v + '/ro':>{len(v) + 3}}" for v in ours))
    ratios = {}
    for method, batch in dict.fromkeys((r["method"], r["batch"]) for r in rows):
        ms = {r["variant"]: r.get("ms") for r in rows if (r["method"], r["batch"]) == (method, batch)}
        line = f"{method:<10} {batch:>5} " + " ".join(
            f"{ms[v]:>{width[v]}.3f}" if ms.get(v) else f"{'failed':>{width[v]}}" for v in variants)
        for v in ours:
            ratio = ms[v] / ms["reduce-overhead"] if ms.get(v) and ms.get("reduce-overhead") else None
            ratios.setdefault(v, []).append(ratio)
            line += f" {ratio:>{len(v) + 3}.3f}" if ratio else f" {'-':>{len(v) + 3}}"
        print(line)
    return ratios


def epoch_table(rows, against="reduce-overhead"):
    """One line per real run, and ours / `against` in wall time. -> that ratio, or None."""
    print(f"\n# real run: one SST-2 epoch, wall seconds (compilation included)\n"
          f"{'variant':<27} {'wall s':>8} {'steps':>6} {'loss':>7} {'dev acc':>8}")
    for r in rows:
        print(f"{r['variant']:<27} " + (f"{r['wall_s']:8.1f} {r['steps']:6d} {r['loss_last100']:7.4f} "
                                        f"{r['dev_accuracy']:8.4f}" if r.get("wall_s") else f"{'failed':>8}"))
    wall = {r["variant"]: r.get("wall_s") for r in rows}
    ratio = wall["ours"] / wall[against] if wall.get("ours") and wall.get(against) else None
    if ratio:
        print(f"ours / {against}: {ratio:.3f}")
    return ratio


def verdict(bench_ratios, epoch_ratio):
    """The rule: keep ours only if it is at least 5% faster (ours / reduce-overhead <= 0.95) on every bench
    row and on the real run, in this call. Either half failing decides (replace); both passing keeps ours; a half
    not measured (or with a failed row) leaves it open, so the halves can run in separate calls."""
    ratios = bench_ratios.get("ours", [])
    halves = {"bench": None if not ratios or None in ratios else max(ratios) <= KEEP_OURS_BELOW,
              "real run": None if epoch_ratio is None else epoch_ratio <= KEEP_OURS_BELOW}
    if False in halves.values():
        decision = "replace ours with reduce-overhead: ours is not at least 5% faster on " + " and ".join(
            half for half, ok in halves.items() if ok is False)
    elif all(halves.values()):
        decision = "keep ours: at least 5% faster on every bench row and on the real run"
    else:
        missing = " and ".join(half for half, ok in halves.items() if ok is None)
        decision = f"open: {missing} not (fully) measured in this call"
    measured = [r for r in ratios if r]
    geomean = math.exp(statistics.fmean(math.log(r) for r in measured)) if measured else None
    said = ([f"bench ours/reduce-overhead worst {max(measured):.3f}, geometric mean {geomean:.3f}"] if measured else []
            ) + ([f"real run {epoch_ratio:.3f}"] if epoch_ratio else [])
    print(f"\nverdict: {decision}" + (f" ({'; '.join(said)})" if said else ""))
    return dict(decision=decision, halves=halves, bench_worst=max(measured) if measured else None,
                bench_geomean=geomean, epoch_ratio=epoch_ratio, bench_ratios=bench_ratios)


def attempt(keys, fn, *args):
    """fn(*args), or, where it raises, `keys` with the error in one line (printed): one failing variant does not
    cost the others' measurements. Either way the row's model is gone after it, and its memory returned."""
    try:
        return fn(*args)
    except Exception as error:  # reported in the row and the table; the next row starts from torch._dynamo.reset()
        why = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"
        print(f"  {' '.join(str(v) for v in keys.values())}: FAILED ({why})", flush=True)
        return dict(keys, error=why)
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def save(report, path):
    """The report so far, as JSON (atomically): a call cut short still leaves the rows before."""
    if path:
        with atomic_write(path, "w") as f:
            json.dump(report, f, indent=1)


# -----------------------------------------------------------------------------
# the command line


def names(allowed):
    """An argparse type: comma-separated names among `allowed`, '' for none."""
    def parse(text):
        chosen = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in chosen if v not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; allowed {', '.join(allowed)}")
        return chosen
    return parse


def parse_args(argv):
    p = Parser(description=__doc__.strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench-methods", type=names(spectral_ft.METHODS), default="lora,loca,fourierft",
                   help="methods of the bench ('' skips the bench)")
    p.add_argument("--batches", type=bench.int_list(1, 4096), default="32,128")
    p.add_argument("--variants", type=names(BENCH_VARIANTS), default="ours,ours-model,reduce-overhead",
                   help=f"bench variants among {','.join(BENCH_VARIANTS)}")
    p.add_argument("--model", default="roberta-base", choices=sorted(k for k in KNOWN_CONFIGS if "deberta" not in k))
    p.add_argument("--seq", type=bounded(int, 1, 513), default=128)
    p.add_argument("--layers", type=bounded(int, 0, 1000), default=0, help="override the layer count (0: the model's)")
    p.add_argument("--hidden", type=bounded(int, 0, 65537), default=0, help="override the width (smoke tests)")
    p.add_argument("--steps", type=bounded(int, 1), default=30, help="timed steps per bench row")
    p.add_argument("--warmup", type=bounded(int, 0), default=10, help="untimed steps after the first")
    p.add_argument("--guard-layers", type=bounded(int, 0, 1000), default=2,
                   help="layers of the guard's model (0 skips the guard)")
    p.add_argument("--minilm", help="all-MiniLM-L6-v2 folder: runs (b), the real SST-2 epoch (with --sst2)")
    p.add_argument("--sst2", help="GLUE SST-2 folder (train.tsv, dev.tsv)")
    p.add_argument("--epoch-variants", type=names(EPOCH_VARIANTS), default=",".join(EPOCH_VARIANTS))
    p.add_argument("--epoch-steps", type=bounded(int, 0), default=0,
                   help="stop each epoch after this many steps (0: all)")
    p.add_argument("--batch", type=bounded(int, 1), default=32, help="the real run's batch")
    p.add_argument("--max-length", type=bounded(int, 1, 513), default=64, help="the real run's max length")
    p.add_argument("--lr", type=bounded(float, 0.0), default=5e-4)
    p.add_argument("--lr-head", type=bounded(float, 0.0), default=5e-4)
    p.add_argument("--device", default=None, help="cuda (default) or cpu (a smoke test)")
    p.add_argument("--json", help="write every number here")
    args = p.parse_args(argv)
    if args.bench_methods and "ours" not in args.variants:
        p.error("--variants must include ours (every ratio and the guard compare with it)")
    return check_args(p, args, args.bench_methods)


def check_args(p, args, bench_rows):
    """The checks both scripts share: the real run's folders, the smoke-test width, the device, something to do."""
    if bool(args.minilm) != bool(args.sst2):
        p.error("--minilm and --sst2 go together (the real run needs both)")
    for flag, folder in (("--minilm", args.minilm), ("--sst2", args.sst2)):
        if folder and not Path(folder).is_dir():
            p.error(f"{flag} {folder}: not a folder")
    missing = [name for name in ("train.tsv", "dev.tsv") if args.sst2 and not (Path(args.sst2) / name).is_file()]
    if missing:
        p.error(f"--sst2 {args.sst2}: lacks {' and '.join(missing)} (GLUE SST-2's train.tsv and dev.tsv)")
    if args.hidden % 2:
        p.error(f"--hidden {args.hidden}: must be even (the narrow model has 2 attention heads)")
    if args.device is None and not torch.cuda.is_available():
        p.error("no CUDA GPU here: pass --device cpu for a smoke test "
                "(e.g. --layers 2 --hidden 64 --steps 2 --warmup 1)")
    if args.device not in (None, "cpu", "cuda") and not str(args.device).startswith("cuda:"):
        p.error(f"--device {args.device}: use cuda, cuda:N or cpu")
    if not bench_rows and not args.minilm:
        p.error("nothing to run: no bench rows, and no --minilm and --sst2 for the real run")
    return args


def setup(args):
    """The device, TF32 and cuBLAS's workspaces as bench.py sets them; -> (device, its name)."""
    device = torch.device(args.device or "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        bench.warm_cuda(device)
    return device, torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def inductor_threads(threads, warm=False):
    """Set Inductor's compile threads -> the previous setting. 1 compiles in this process, as bench.py does, so that
    no worker processes start beside timed steps; the previous (default) setting, with warm=True, is what a user's
    run gets, its worker pool started at once, so that no variant's wall time pays for the start."""
    import torch._inductor.config as inductor
    from torch._inductor.async_compile import AsyncCompile
    previous, inductor.compile_threads = inductor.compile_threads, threads
    for start in ("warm_pool", "wait_pool_ready") if warm else ():  # the second in newer torch only
        if hasattr(AsyncCompile, start):
            getattr(AsyncCompile, start)()
    return previous


def run(args):
    device, name = setup(args)
    default_threads = inductor_threads(1)
    print(f"# {name}, torch {torch.__version__}" + (
        f"; bench: {args.model} shape, seq {args.seq}, bf16 autocast, fused AdamW, median of {args.steps} steps "
        f"after {args.warmup} (and the first)" if args.bench_methods else ""), flush=True)
    report = dict(args=vars(args), device=name, torch=torch.__version__, guard={}, bench=[], epoch=[])
    for method in args.bench_methods:
        if args.guard_layers:
            report["guard"][method] = attempt(dict(guard=method), guard, args, method, device)
        for batch, variant in ((b, v) for b in args.batches for v in args.variants):
            keys = dict(method=method, batch=batch, variant=variant)
            report["bench"].append(attempt(keys, bench_row, args, method, batch, variant, device))
            save(report, args.json)
    if args.minilm:
        inductor_threads(default_threads, warm=True)
        t0 = time.perf_counter()
        train, dev, pad_id = load_sst2(args)
        print(f"  tokenized SST-2 ({len(train[0])} train, {len(dev[0])} dev) in {time.perf_counter() - t0:.1f} s",
              flush=True)
        for variant in args.epoch_variants:
            report["epoch"].append(attempt(dict(variant=variant), epoch_row, args, variant, train, dev, pad_id, device))
            save(report, args.json)
    report["verdict"] = verdict(bench_table(report["bench"], args.variants) if report["bench"] else {},
                                epoch_table(report["epoch"]) if report["epoch"] else None)
    if any("error" in rows or not all(r["ok"] for r in rows.values()) for rows in report["guard"].values()):
        print("guard: reduce-overhead DISAGREES with ours on the first step, or the guard failed (see above)")
    save(report, args.json)
    return report


def cli(argv=None):
    try:
        run(parse_args(argv))
        return 0
    except UsageError as e:
        print(f"capture_vs_reduce_overhead.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
