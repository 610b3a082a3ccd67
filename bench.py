"""
bench.py: what each PEFT method costs per training step, measured.

Builds a RoBERTa-shaped encoder with random weights (no download), feeds random token ids
(never zeros, from the CPU as train.py does), and times train.py's own training step
(TrainStep) per iteration: forward under bf16 autocast, backward, AdamW step (fused on
a GPU). "ms/step" is the eager step (train.py --eager); on a GPU "step ms" is the same step in
mode 'graph' (--compile's scope torch.compiled, then forward + backward replayed as a CUDA graph,
AdamW eager), as train.py runs it, and "speedup" the ratio of the two; --graph adds "graph ms",
the whole step (a capturable AdamW too, the same compiled model) as one graph: no Python at all.
Prints one row per configuration: median step time, tokens/s, peak GPU memory (the row's own:
allocated beyond what the process held before the row was built, cuBLAS workspaces allocated
once up front), the memory one forward pass leaves for backward ("saved"), trainable
parameters, and the time as a ratio to two baselines measured in the same run:

    floor  frozen backbone and a trainable head, with the gradient still flowing through
           every layer down to the embeddings: the least any adapter on q, v can cost
    lora   LoRA at its paper setting

Then a second table (LoCA Appendix J): the cost of computing ΔW (forward and backward) for
a d x d matrix with n coefficients by FFT (FourierFT), dense DCT (C_outᵀ S C_in) and
sparse DCT (n rank-1 products of DCT basis rows), and LoCA's own autograd.Function
(sparse below n = out + in, dense above, plus the location gradient).

    python bench.py                                  # roberta-base, batch 32 x 128, GPU
    python bench.py --graph --profile                # + whole-step CUDA-graph time, kernels, syncs
    python bench.py --model roberta-large --batch 16
    python bench.py --device cpu --layers 1 --hidden 32 --batch 2 --seq 16 --steps 5 --warmup 2   # smoke test, seconds
    torchrun --nproc_per_node=2 bench.py --methods lora,loca --delta-sizes ''   # data parallel: batch per GPU

Under torchrun every process runs the same rows at --batch examples each, its gradients
all-reduced every step (step.Speed.reduce_gradients, as train.py); a row's time is the slowest
process's median and tokens/s counts every process's tokens, so the scaling is the tokens/s
of N processes over those of `python bench.py` with the same flags.

The ΔW table's d defaults to 256 .. 4096 (--delta-sizes), or to --hidden alone when --hidden narrows
the model (a smoke test, which a d = 4096 table would keep busy for minutes on a CPU).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import spectral_ft
from run.config import LAYERS_FROM_STEPS
from run.errors import Parser, UsageError, bounded
from encoder.model import KNOWN_CONFIGS, ModelConfig, SequenceClassifier
from run.step import COMPILE_SCOPES, Speed, capture_stream, compile_in_place
from train import Training, weighted_loss

ROWS = ["floor", "head", "full", *spectral_ft.METHODS]
DELTA_SIZES = "256,512,1024,2048,4096"  # the ΔW table's d unless --delta-sizes or --hidden says otherwise
SMOKE_TEST = "--device cpu --layers 1 --hidden 32 --batch 2 --seq 16 --steps 5 --warmup 2"  # seconds on a CPU
# Paper settings do not fit a --hidden 16 smoke-test model; these do.
SMALL = {"vera": {"r": 8}, "fourierft": {"n": 32}, "fora": {"n": 16, "r": 4}, "dfora": {"n": 16, "r": 4},
         "loca": {"n": 32}, "foura": {"r": 4}, "spectral_a": {"r": 4}, "spectral_r": {"r": 4}}


class TrainStep:
    """train.py's step as a callable, for timing: `step(parts, examples)` runs the body of train.train_loop's loop,
    line for line (tests/test_bench.py compares the two), on step.Speed's micro-batches -> this process's part of
    the batch's mean loss. `mode`: Speed's ('eager', 'padded', 'graph')."""

    def __init__(self, model, optimizer, scheduler=None, scaler=None, schedule=None, *, device, dtype=None,
                 mode="eager", rows=None, max_length=None, pad_id=0, regression=False, world=1, compile="adapters"):
        self.speed = Speed(model, device=device, dtype=dtype, mode=mode, rows=rows, max_length=max_length,
                           pad_id=pad_id, regression=regression, world=world, compile=compile)
        self.training = Training(optimizer, scheduler or torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                                       scaler or torch.amp.GradScaler(device.type, enabled=False), schedule)
        self.regression, self.world = regression, world

    @property
    def mode(self):
        return self.speed.mode

    def __call__(self, parts, examples):
        speed, training, regression, world = self.speed, self.training, self.regression, self.world
        step_loss = 0.0
        for network, (input_ids, mask, types, y, weight) in speed.micro_batches(parts):
            with speed.autocast:
                logits = network(input_ids, mask, types)  # (b, num_labels)
            loss = weighted_loss(logits, y, weight, regression) * (world / examples)  # its share of the mean
            training.scaler.scale(loss).backward()
            step_loss = step_loss + loss.detach() / world
        speed.reduce_gradients()
        training.scaler.step(training.optimizer)
        training.scaler.update()
        training.scheduler.step()
        if training.schedule:
            training.schedule.step()
        training.optimizer.zero_grad(set_to_none=True)
        return step_loss


def build(args, row, device):
    """The model of one row with exactly that row's tensors trainable, its backbone made and randomly initialized on
    `device` (on the H100 machines the CPU's initialization took 3-7 s of a row; the GPU's draws other numbers)."""
    torch.manual_seed(0)
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    if args.hidden:  # a narrow model for smoke tests: 2 heads, 4x feed-forward, small vocabulary
        overrides.update(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_attention_heads=2, vocab_size=1000)
    config = ModelConfig.from_json(dict(KNOWN_CONFIGS[args.model], **overrides))
    with torch.device(device):
        model = SequenceClassifier(config, num_labels=2)
    if row in spectral_ft.METHODS:
        spectral_ft.inject(model, row, targets=("query", "value"), **(SMALL.get(row, {}) if args.hidden else {}))
    elif row in ("floor", "head"):
        model.requires_grad_(False)
    if row == "floor":  # make the gradient flow from the head down to the embeddings
        model.embeddings.register_forward_hook(lambda module, inputs, output: output.requires_grad_())
    if row != "full":
        head = set(model.head_parameter_names())
        for name, p in model.named_parameters():
            if name in head:
                p.requires_grad_(True)
    return model.to(device)


def adamw(model, device):
    """AdamW over the model's trainable tensors, fused on a GPU, as train.py's."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                             **({"fused": True} if device.type == "cuda" else {}))


def random_batches(args, vocab, rank=0):
    """Four batches of random token ids (never zeros) and labels, made on the CPU as train.py's are -> the
    (ids, labels) pairs, and the same as TrainStep's parts: one micro-batch each, (ids, mask, types, y, weight)."""
    generator = torch.Generator(device="cpu").manual_seed(1 + rank)
    batches = [(torch.randint(3, vocab, (args.batch, args.seq), generator=generator),
                torch.randint(0, 2, (args.batch,), generator=generator)) for _ in range(4)]
    ones = torch.ones(args.batch, args.seq, dtype=torch.long)
    parts = [[(ids, ones, torch.zeros_like(ids), labels, torch.ones(args.batch))] for ids, labels in batches]
    return batches, parts


def time_steps(args, row, device):
    cuda = device.type == "cuda"
    if cuda:  # this row's memory is what it allocates beyond what is held before it starts
        torch.cuda.synchronize()
        held_before = torch.cuda.memory_allocated()
    model = build(args, row, device)
    head = set(model.head_parameter_names())
    adapter_params = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n not in head)
    optimizer = adamw(model, device)
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    batches, parts = random_batches(args, model.config.vocab_size, rank)
    batches = [(ids.to(device), labels.to(device)) for ids, labels in batches]
    mask = torch.ones(args.batch, args.seq, dtype=torch.long, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    # train.py's own step, eager; under torchrun its gradients all-reduced every step
    train_step = TrainStep(model, optimizer, device=device, dtype=dtype, mode="eager", world=world)
    network = model

    def step(i):
        train_step(parts[i % len(parts)], args.batch * world)

    for i in range(args.warmup):
        step(i)
    saved = saved_mib(network, batches[0], mask, dtype, args, optimizer) if cuda else float("nan")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step(i)
            times.append((time.perf_counter() - t0) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - held_before) / 2**20 if cuda else float("nan")
    ms = statistics.median(times)
    if world > 1:  # the slowest process sets the pace
        slowest = torch.tensor([ms], dtype=torch.float64, device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        ms = slowest.item()
    result = {"row": row, "ms": ms, "tokens_per_s": world * args.batch * args.seq / ms * 1e3, "peak_mib": peak,
              "saved_mib": saved, "trainable_adapter": adapter_params, "spread_ms": max(times) - min(times)}
    if args.profile:
        result.update(profile_steps(step, cuda))
    if cuda and args.precision != "fp16":  # train.py's step as CUDA graphs (after compiling --compile's scope)
        result["step_ms"] = time_train_step(model, optimizer, parts, dtype, args, device, world)  # compiles in place
    elif cuda:
        compile_in_place(model, args.compile)
    if args.graph and cuda:
        result["graph_ms"] = time_graph(model, batches, mask, dtype, args)
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return result


def saved_mib(forward, batch, mask, dtype, args, optimizer):
    """MiB that one forward pass leaves allocated until backward: what autograd saved (and
    the logits). Its backward runs, its gradients are dropped, no optimiser step."""
    ids, labels = batch
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=dtype, enabled=args.precision != "fp32"):
        loss = F.cross_entropy(forward(ids, mask).float(), labels)
    saved = (torch.cuda.memory_allocated() - before) / 2**20
    loss.backward()
    optimizer.zero_grad(set_to_none=True)
    return saved


def profile_steps(step, cuda, k=5):
    """Per step: kernels launched, their summed GPU time, and host-device synchronisations."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(k):
            step(i)
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    on_gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    syncs = [e for e in events if e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
             or (e.name.startswith("cudaMemcpy") and "Async" not in e.name)]
    return {"gpu_busy_ms": sum(e.time_range.elapsed_us() for e in on_gpu) / 1e3 / k,
            "kernels": len(on_gpu) / k, "syncs": len(syncs) / k}


def median_cuda_ms(fn, warmup, steps):
    """Median of `steps` CUDA-event-timed calls fn(i), after `warmup` calls."""
    times = []
    for i in range(warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_train_step(model, optimizer, parts, dtype, args, device, world):
    """Median ms of train.py's step in mode 'graph' (TrainStep): the model's forward and backward replayed as CUDA
    graphs, the loss and the AdamW step eager; the batch copied from the CPU each step. Under torchrun the
    gradients are all-reduced as one flat buffer per dtype after the passes. None where capture fails (Speed
    says why)."""
    torch._dynamo.reset()  # each row compiles afresh, as in its own train.py run
    train_step = TrainStep(model, optimizer, device=device, dtype=dtype, mode="graph", rows=args.batch,
                                 max_length=args.seq, world=world, compile=args.compile)
    ms = median_cuda_ms(lambda i: train_step(parts[i % len(parts)], args.batch * world), args.warmup, args.steps)
    if world > 1:  # the slowest process sets the pace
        slowest = torch.tensor([ms], dtype=torch.float64, device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        ms = slowest.item()
    return ms if train_step.mode == "graph" else None


def time_graph(model, batches, mask, dtype, args):
    """Median ms of the whole step (its own capturable AdamW included) captured once as a CUDA graph
    and replayed: the step's cost without any Python or launch overhead. None where capture fails."""
    ids, labels = (t.clone() for t in batches[0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, capturable=True)

    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=args.precision != "fp32", cache_enabled=False):
            loss = F.cross_entropy(model(ids, mask).float(), labels)
        loss.backward()
        optimizer.step()

    try:
        stream = current_capture_stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            step()
    except Exception as error:  # report, do not hide: the row shows no graph time
        print(f"  (CUDA graph capture failed: {type(error).__name__}: {str(error).splitlines()[0][:120]})")
        return None

    def replay(i):
        new_ids, new_labels = batches[i % len(batches)]
        ids.copy_(new_ids)
        labels.copy_(new_labels)
        graph.replay()

    return median_cuda_ms(replay, args.warmup, args.steps)


def current_capture_stream():
    """step.py's side stream for every capture: each new stream gets its own cuBLAS workspaces
    (tens of MiB), which would stay allocated and count against the rows after it."""
    return capture_stream(torch.device("cuda", torch.cuda.current_device()))


def prepare_cuda(device):
    """What every row runs under on a GPU: TF32 matrix products, cuBLAS's workspaces allocated up front
    (warm_cuda), Inductor compiling in this process (no workers starting beside the timed steps)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    warm_cuda(device)
    import torch._inductor.config as inductor
    inductor.compile_threads = 1


def warm_cuda(device):
    """Allocate what the first matrix products allocate once per process and stream (cuBLAS
    and cuBLASLt workspaces), so that no row's peak memory counts them."""
    for stream in (torch.cuda.current_stream(device), current_capture_stream()):
        with torch.cuda.stream(stream):
            for dtype in (torch.float32, torch.bfloat16):
                a = torch.ones(64, 64, device=device, dtype=dtype)
                torch.addmm(a[0], a, a)
                (a @ a).sum()
    torch.cuda.synchronize(device)


def layer_cost(args, row, device):
    """One q-shaped layer (the model's width, square) alone, forward + backward on batch x seq
    tokens: x float32 as a LayerNorm output, the output gradient random bf16. Returns eager
    ms, and on CUDA the saved MiB, with --profile kernels and GPU-busy µs, with --graph the
    CUDA-graph ms. `floor` is the frozen nn.Linear; adapters get random non-zero tensors."""
    config = KNOWN_CONFIGS[args.model]
    d = args.hidden or config["hidden_size"]
    torch.manual_seed(0)
    layer = nn.Linear(d, d)
    if row == "floor":
        layer.requires_grad_(False)
    else:
        layer = spectral_ft.METHODS[row](layer, **(SMALL.get(row, {}) if args.hidden else {}))
        with torch.no_grad():
            for name, p in layer.named_parameters():
                if not name.startswith("base.") and name != "locations":
                    p.add_(0.01 * torch.randn_like(p))
    layer.to(device)
    x = torch.randn(args.batch, args.seq, d, device=device, requires_grad=True)
    g = torch.randn(args.batch, args.seq, d, device=device).to(torch.bfloat16)
    tensors = [x] + [p for p in layer.parameters() if p.requires_grad]
    cuda = device.type == "cuda"

    def step():
        for t in tensors:
            t.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16):
            y = layer(x)
        y.backward(g.to(y.dtype))

    def median_ms(fn, n):
        times = []
        for _ in range(n):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    for _ in range(args.warmup):
        step()
    result = {"row": row, "ms": median_ms(step, args.steps)}
    if not cuda:
        return result
    if args.profile:
        result.update(profile_steps(lambda i: step(), cuda))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x)
    result["saved_mib"] = (torch.cuda.memory_allocated() - before - y.numel() * y.element_size()) / 2**20
    y.backward(g)
    del y
    if args.graph:
        stream = current_capture_stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        result["graph_ms"] = median_ms(graph.replay, args.warmup + args.steps)
    return result


def delta_cost(d, n, path, device, repeats):
    """Median ms of ΔW forward + backward for a d x d matrix with n coefficients."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(n, generator=generator).to(device).requires_grad_(True)
    indices = spectral_ft.random_locations(n, d, d, generator).to(device)
    locations = (indices.float() / (d - 1)).requires_grad_(path == "loca")
    G = torch.randn(d, d, generator=generator).to(device)
    C = spectral_ft.dct_matrix(d, torch.float32, device)

    def run():
        if path == "fft":
            delta = spectral_ft.sparse_idft2_real(values, indices, (d, d))
        elif path == "dense_dct":
            S = torch.zeros(d, d, device=device).index_put((indices[0], indices[1]), values)
            delta = C.T @ S @ C
        elif path == "sparse_dct":
            delta = (C[indices[0]].T * values) @ C[indices[1]]  # (d, n) @ (n, d)
        else:  # LoCA's autograd.Function, with the location gradient
            delta = spectral_ft._LoCADelta.apply(values, locations, C, C, 1.0)
        (delta * G).sum().backward()
        values.grad = locations.grad = None

    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def per_layer_table(args, rows, device, name):
    rows = ["floor"] + [r for r in rows if r in spectral_ft.METHODS]
    results = [layer_cost(args, row, device) for row in rows]
    print(f"# one adapted layer, forward + backward, {args.batch} x {args.seq} tokens")
    print(f"{'row':<11} {'eager ms':>9} {'graph ms':>9} {'kernels':>8} {'gpu us':>8} {'saved MiB':>9}")
    for r in results:
        gpu = r.get("gpu_busy_ms", float("nan")) * 1e3
        print(f"{r['row']:<11} {r['ms']:9.3f} {r.get('graph_ms', float('nan')):9.3f} {r.get('kernels', float('nan')):8.0f} "
              f"{gpu:8.1f} {r.get('saved_mib', float('nan')):9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": name, "layers": results}, f, indent=1)
    return results, []


def int_list(low, high):
    """An argparse type: comma-separated integers in [low, high], '' for none."""
    def parse(text):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if any(not low <= v <= high for v in values):
            raise argparse.ArgumentTypeError(f"each must be >= {low} and <= {high}, got {text}")
        return values
    return parse


def step_arguments(parser):
    """The flags that say which step is measured: the model's shape, the batch, precision, device, compile scope
    (shared with scripts/profile_step.py; device_of checks them)."""
    parser.add_argument("--model", default="roberta-base", choices=sorted(KNOWN_CONFIGS))
    parser.add_argument("--batch", type=bounded(int, 1), default=32)
    parser.add_argument("--seq", type=bounded(int, 1), default=128, help="tokens per example (at most the model's 512)")
    parser.add_argument("--layers", type=bounded(int, 0, 1000), default=0, help="override the layer count (0: the model's)")
    parser.add_argument("--hidden", type=bounded(int, 0, 65537), default=0,
                        help="override the width (0: the model's; else even, 2 heads); for smoke tests")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--device", help="cuda (default), cuda:N, or cpu for a smoke test")
    parser.add_argument("--compile", choices=COMPILE_SCOPES, default="adapters",
                        help="what train.py's graph step compiles before capturing (as train.py --compile; without it "
                             f"train.py takes none below {LAYERS_FROM_STEPS:,} steps and layers from there)")


def rows_of(parser, methods):
    """--methods' comma-separated rows, each one of ROWS."""
    rows = [r.strip() for r in methods.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; allowed {', '.join(ROWS)}")
    return rows


def device_of(parser, args, program="bench.py"):
    """step_arguments' checks that need more than one flag or the machine -> the device."""
    if args.hidden % 2:
        parser.error(f"--hidden {args.hidden}: must be even (the narrow model has 2 attention heads)")
    limit = KNOWN_CONFIGS[args.model]["max_position_embeddings"] - 2  # RoBERTa's positions start at 2
    if args.seq > limit:
        parser.error(f"--seq {args.seq}: {args.model} takes at most {limit} tokens")
    if args.device is None and not torch.cuda.is_available():
        parser.error(f"no CUDA GPU on this machine: {program} times training steps on a GPU; for a CPU smoke test "
                     f"(seconds) pass --device cpu with a small shape: python {program} {SMOKE_TEST}")
    try:
        device = torch.device(args.device or "cuda")
    except (RuntimeError, ValueError):
        parser.error(f"--device {args.device!r} is not a device: use cuda, cuda:N or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: only cuda and cpu are supported")
    return device


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    step_arguments(parser)
    parser.add_argument("--methods", default=",".join(ROWS), help=f"comma-separated rows among {','.join(ROWS)}")
    parser.add_argument("--steps", type=bounded(int, 1), default=30)
    parser.add_argument("--warmup", type=bounded(int, 0), default=10)
    parser.add_argument("--delta-sizes", type=int_list(1, 16384), default=None,
                        help=f"d for the ΔW table ('' to skip; default {DELTA_SIZES}, or --hidden alone where given)")
    parser.add_argument("--delta-n", type=int_list(1, 2**28), default="100,1000,10000")
    parser.add_argument("--profile", action="store_true", help="add kernels, GPU-busy time and syncs per step")
    parser.add_argument("--graph", action="store_true", help="also time the whole step (AdamW too) captured as one CUDA graph")
    parser.add_argument("--per-layer", action="store_true",
                        help="instead of whole steps: one adapted layer alone, forward + backward, per row")
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args(argv)
    rows = rows_of(parser, args.methods)
    rows = ["floor", "lora"] + [r for r in rows if r not in ("floor", "lora")]  # the baselines come first
    if args.delta_sizes is None:  # a narrowed model's table stays at its width
        args.delta_sizes = [args.hidden] if args.hidden else int_list(1, 16384)(DELTA_SIZES)
    device = device_of(parser, args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "WORLD_SIZE" in os.environ:  # torchrun: one process per GPU, each with --batch examples
        if args.graph or args.profile or args.per_layer:
            parser.error("under torchrun bench.py times plain steps: drop --graph, --profile, --per-layer")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        if dist.get_rank() != 0:
            sys.stdout = open(os.devnull, "w")  # process 0 prints the table
        args.delta_sizes = []  # the ΔW table is a one-GPU measurement
        try:
            return run(args, rows, device, world)
        finally:
            dist.destroy_process_group()
            sys.stdout = sys.__stdout__
    return run(args, rows, device, world)


def run(args, rows, device, world):
    """Time every row (or one layer per row, --per-layer), print the tables, write --json."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    if device.type == "cuda":
        prepare_cuda(device)
    config = KNOWN_CONFIGS[args.model]
    shape = (f"hidden {args.hidden or config['hidden_size']}, {args.layers or config['num_hidden_layers']} layers"
             + (" (narrowed: 2 heads, vocabulary 1000)" if args.hidden else ""))
    graph_steps = device.type == "cuda" and args.precision != "fp16"  # as time_steps: fp16's GradScaler step is eager
    steps = (f"eager and graph steps (compile {args.compile})" if graph_steps
             else f"eager steps only (no CUDA graphs {'on the CPU' if device.type == 'cpu' else 'under fp16'})")
    print(f"# {args.model} shape ({shape}), batch {args.batch} x {args.seq}, {args.precision} autocast, AdamW, "
          f"{steps}; median of {args.steps} steps after {args.warmup}; {name}, torch {torch.__version__}"
          + (f"; {world} processes, --batch each" if world > 1 else ""))

    if args.per_layer:
        return per_layer_table(args, rows, device, name)
    results = [time_steps(args, row, device) for row in rows]
    floor, lora = results[0]["ms"], results[1]["ms"]
    steps = any("step_ms" in r for r in results)  # train.py's graph step (CUDA only)
    print(f"{'row':<11} {'ms/step':>8} {'spread':>7} {'tokens/s':>10} {'peak MiB':>9} {'saved MiB':>9} {'trainable':>10} {'x floor':>8} {'x lora':>7}"
          + (f" {'gpu ms':>7} {'kernels':>8} {'syncs':>6}" if args.profile else "")
          + (f" {'step ms':>8} {'x floor':>8} {'x lora':>7} {'speedup':>7}" if steps else "")
          + (f" {'graph ms':>9} {'x floor':>8} {'x lora':>7}" if args.graph else ""))
    graph_floor, graph_lora = results[0].get("graph_ms"), results[1].get("graph_ms")
    step_floor, step_lora = results[0].get("step_ms"), results[1].get("step_ms")
    for r in results:
        r["x_floor"], r["x_lora"] = r["ms"] / floor, r["ms"] / lora
        line = (f"{r['row']:<11} {r['ms']:8.2f} {r['spread_ms']:7.2f} {r['tokens_per_s']:10.0f} {r['peak_mib']:9.0f} {r['saved_mib']:9.0f} "
                f"{r['trainable_adapter']:10d} {r['x_floor']:8.3f} {r['x_lora']:7.3f}")
        if args.profile:
            line += f" {r['gpu_busy_ms']:7.2f} {r['kernels']:8.0f} {r['syncs']:6.1f}"
        if steps:
            s = r.get("step_ms")
            if s and step_floor and step_lora:
                r["step_x_floor"], r["step_x_lora"], r["step_speedup"] = s / step_floor, s / step_lora, r["ms"] / s
                line += f" {s:8.2f} {s / step_floor:8.3f} {s / step_lora:7.3f} {r['ms'] / s:7.2f}"
            else:
                line += f" {'-':>8} {'':>8} {'':>7} {'':>7}"
        if args.graph:
            g = r.get("graph_ms")
            if g and graph_floor and graph_lora:
                r["graph_x_floor"], r["graph_x_lora"] = g / graph_floor, g / graph_lora
                line += f" {g:9.2f} {g / graph_floor:8.3f} {g / graph_lora:7.3f}"
            else:
                line += f" {'-':>9}"
        print(line)

    deltas = []
    sizes = args.delta_sizes
    if sizes:
        print("\n# ΔW forward + backward, ms (median); d x d matrix, n coefficients")
        paths = ("fft", "dense_dct", "sparse_dct", "loca")
        print(f"{'d':>5} {'n':>6} {'fft':>8} {'dense_dct':>10} {'sparse_dct':>11} {'loca':>8}")
        for d in sizes:
            for n in args.delta_n:
                if n > d * d:
                    continue
                costs = {p: delta_cost(d, n, p, device, repeats=max(3, args.steps // 3)) for p in paths}
                deltas.append({"d": d, "n": n, **costs})
                print(f"{d:5d} {n:6d} {costs['fft']:8.3f} {costs['dense_dct']:10.3f} {costs['sparse_dct']:11.3f} {costs['loca']:8.3f}")
    if args.json and (world == 1 or dist.get_rank() == 0):  # one writer: process 0 speaks for all
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": name, "processes": world, "steps": results, "delta": deltas},
                      f, indent=1)
    return results, deltas


def cli(argv=None):
    """The command line: bad flags are one line and exit status 2, as in train.py."""
    try:
        main(argv)
        return 0
    except UsageError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"bench.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
