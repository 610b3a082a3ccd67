"""
step.py: one optimizer step of train.py, eager or replayed as CUDA graphs (bench.py times this same class).

The eager step is host-bound on a GPU: each of its ~1000 kernels costs ~30 µs of Python and launch time,
for ~7 µs of GPU work. A CUDA graph replays the captured kernels with one launch. A graph has fixed shapes
and addresses, so every micro-batch is padded to a fixed row count (copies of its first row, at loss
weight 0) and to a length bucket (padding tokens, masked out: the model never attends to them and the loss
never reads them), copied into static input buffers, and the gradients live in static buffers that the
graph accumulates into (zeroed before each step, never set to None while their tensor trains). One graph
per (rows, length, which tensors train, train / eval), captured on first use; LoCA's phases train
different tensors, so each gets its own (its frozen phase trains what its coefficient phase trains: the
same graph). The optimizer, learning-rate and LoCA schedules stay eager. Before capturing, the adapted
layers (or the whole model) are torch.compiled in place (compile_in_place): Inductor fuses what a method
adds around its matrix products.

Why hand-written capture, and not torch.compile(mode="reduce-overhead") (issue 17). Measured on one NVIDIA
H200, torch 2.11.0+cu130, by scripts/capture_vs_reduce_overhead.py: "reduce-overhead" is its CompiledStep,
each micro-batch padded to our length buckets (pad_to_shape), forward + loss compiled whole with
mode="reduce-overhead", dynamic=False, backward and the fused AdamW step eager. One call each:

    median step, ms (roberta-base shape, seq 128, bf16)     ours (TrainStep)   reduce-overhead   ours / it
    lora       batch 32  / 128                            8.80 / 27.01       8.88 / 23.05      0.99 / 1.17
    loca       batch 32  / 128                            9.99 / 29.51      52.11 / 66.41      0.19 / 0.44
    fourierft  batch 32  / 128                            9.54 / 27.86       9.27 / 29.45      1.03 / 0.95
    one SST-2 epoch, all-MiniLM-L6-v2, LoRA, batch 32, max length 64, wall s with compilation:
               ours 16.3, reduce-overhead with our buckets 40.9, reduce-overhead unbucketed 120.5      0.40

The issue's rule keeps ours only if it is at least 5% faster on every bench row and on the real run. It is
not on the bench: on a fixed shape torch's capture matches ours for LoRA and FourierFT at batch 32 and
beats it for LoRA at batch 128. We keep ours anyway, because on what a user runs it is 2.5x faster: a
real epoch meets every length bucket, train and eval modes, and reduce-overhead's cudagraph trees record
and check each of them on the way (unbucketed, as a PEFT user runs it, 7.4x), and LoCA, whose location
step is its own autograd.Function with a dct_matrix that stays out of compiled graphs, runs 2-5x slower
under it. A second reason is control: our graphs share one memory pool, keep the gradients in static
buffers that the flat all-reduce of several processes reads, and fall back to eager on a failed capture
in one line. Against transformers + PEFT's LoRA under torch.compile(model, mode="reduce-overhead")
(scripts/peft_bench.py, batch 32 x 128): ours 9.47 ms vs PEFT 8.53 when PEFT's rows ran first in the
process, 8.22 vs 9.04 when ours ran first (--compile model: 7.48), the frozen floors 7.36 vs 7.88: at
parity within the 10% that the order in one process moves either, not the 10% lead the issue aims for.
"""
import contextlib
import functools
import inspect
import math
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import spectral_ft

LENGTH_BUCKET = 32  # padded lengths are multiples of 32 (at most --max-length)
CAPTURE_WARMUP = 3  # eager passes on the capture stream before a capture, as torch.cuda.graphs requires
COMPILE_SCOPES = ("adapters", "model", "none")  # what mode 'graph' torch.compiles before it captures


def float_dtype(t):
    """float64 for float64 tensors (--precision fp64), else float32: losses and metrics are computed in
    at least float32, also under bf16 / fp16 autocast."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def data_parallel(model, device, find_unused_parameters=False):
    """model in DistributedDataParallel, which copies process 0's parameters and buffers to every process
    once, then all-reduces gradients. Buffers are not re-sent at each forward: none changes in training
    (forward_sync_buffers=False in newer torch, broadcast_buffers=False before)."""
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters,
                                   **{"forward_sync_buffers" if newer else "broadcast_buffers": False})


def bucket_length(length, max_length):
    """The padded length of a batch whose longest example has `length` tokens: the next multiple of
    LENGTH_BUCKET, at most max_length. Multiples of 32 rather than powers of two: at most 31 padding tokens
    per example (a power of two pads 65 tokens to 128), and a bucket is captured only once it is seen, so
    the 16 possible at length 512 cost nothing until used; graphs share one memory pool."""
    if not 1 <= length <= max_length:
        raise ValueError(f"length must be in [1, max_length={max_length}], got {length}")
    return min(math.ceil(length / LENGTH_BUCKET) * LENGTH_BUCKET, max_length)


def pad_to_shape(input_ids, mask, types, y, weight, rows, length, pad_id):
    """A micro-batch (b, T) at the fixed shape (rows, length): padding tokens (masked out, type 0) up to
    `length`, and rows - b filler rows, copies of row 0 with loss weight 0. -> the same five tensors."""
    b, T = input_ids.shape
    if b > rows or T > length:
        raise ValueError(f"a micro-batch of shape {(b, T)} does not fit the static shape {(rows, length)}")
    keep = torch.tensor([*range(b), *[0] * (rows - b)])  # (rows,)
    ids = F.pad(input_ids, (0, length - T), value=pad_id)[keep]  # (rows, length)
    mask, types = (F.pad(t, (0, length - T))[keep] for t in (mask, types))  # (rows, length) each
    return ids, mask, types, y[keep], torch.cat([weight, weight.new_zeros(rows - b)])


def capture_stream(device):
    """One side stream per GPU for every warm-up and capture (a new stream gets its own cuBLAS workspaces)."""
    return _capture_stream(torch.cuda.current_device() if device.index is None else device.index)


@functools.lru_cache(maxsize=None)
def _capture_stream(index):
    return torch.cuda.Stream(index)


def compile_in_place(model, scope, backend="inductor"):
    """torch.compile what the CUDA graphs then capture, in place (checkpoints, evaluation and merging see
    the same modules) -> the compiled modules. scope 'adapters': each adapted layer, where Inductor fuses
    what a method adds around its matrix products (ΔW's construction, the casts, the sum of the two
    branches; the products stay cuBLAS's), which is most of a plain method's cost over the frozen layer;
    'model': the whole model, the backbone's own layers fused too (faster steps, a longer start); 'none'.
    backend: torch.compile's ('aot_eager' runs dynamo and AOTAutograd alone: the tests' check on a CPU)."""
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile scope must be one of {', '.join(COMPILE_SCOPES)}, got {scope!r}")
    modules = {"adapters": [m for _, m in spectral_ft.adapters(model)], "model": [model], "none": []}[scope]
    if modules:  # a program per length bucket, train / eval mode and LoCA phase: more than dynamo's default 8
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for module in modules:
        module.compile(backend=backend)
    return modules


def uncompile(modules):
    """Undo `compile_in_place`: the modules run their plain forward again."""
    for module in modules:
        module._compiled_call_impl = None


def step_mode(device, precision, eager=False):
    """'graph' on CUDA, 'eager' on the CPU, with --eager, or with fp16 (its GradScaler step is eager)."""
    return "graph" if device.type == "cuda" and not eager and precision != "fp16" else "eager"


class TrainStep:
    """One optimizer step of train.py, and its forward for evaluation (bench.py times this same class).

        step = TrainStep(model, optimizer, device=device, mode="graph", rows=32, max_length=128, ...)
        loss = step([(input_ids, mask, types, y, weight), ...], examples)  # this process's micro-batches
        logits = step.logits(input_ids, mask, types)                      # (b, num_labels), for evaluate

    A step: for each micro-batch the forward under autocast, per-example losses (cross-entropy, or MSE for
    regression) times `weight` (1, or 0 for filler rows), summed, times world / examples (examples: in the
    whole batch, over all processes), backward; then the (GradScaler's) optimizer step, the learning-rate
    schedule and LoCA's schedule. Returns this process's part of the batch's mean loss, on the device.

    mode "eager": today's step on the batch's own shapes; several processes in DistributedDataParallel.
    mode "padded": every micro-batch at (rows, bucket_length) through static input buffers and static
    gradients, run eagerly: what "graph" replays, checkable on the CPU. mode "graph": "padded" with the
    forward + loss + backward of each shape captured once as a CUDA graph and replayed, after
    `compile_in_place(model, compile)` (compile: one of COMPILE_SCOPES; the warm-up passes compile).
    In both, several processes use no DDP: parameters and buffers are broadcast from process 0 once, and
    after the passes the gradients are all-reduced as one flat buffer per dtype, divided by world first
    as DDP does. With dropout the graphs draw other masks than eager steps (other shapes, other random
    offsets), so graph and eager runs agree to float tolerance only without dropout.
    """

    def __init__(self, model, optimizer, scheduler=None, scaler=None, schedule=None, *, device, dtype=None,
                 mode="eager", rows=None, max_length=None, pad_id=0, regression=False, world=1,
                 find_unused_parameters=False, compile="adapters"):
        if mode not in ("eager", "padded", "graph"):
            raise ValueError(f"mode must be 'eager', 'padded' or 'graph', got {mode!r}")
        if mode != "eager" and not (rows and max_length):
            raise ValueError(f"mode {mode!r} needs rows and max_length (the static shape), got {rows}, {max_length}")
        if mode == "graph" and device.type != "cuda":
            raise ValueError(f"mode 'graph' needs a CUDA device, got {device}; use 'padded' or 'eager'")
        self.model, self.optimizer, self.scheduler, self.schedule = model, optimizer, scheduler, schedule
        self.scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
        if mode != "eager" and self.scaler.is_enabled():
            raise ValueError("fp16's GradScaler step runs eager only: use mode 'eager' with an enabled scaler")
        self.device, self.mode, self.rows, self.max_length = device, mode, rows, max_length
        self.pad_id, self.regression, self.world = pad_id, regression, world
        low = dtype in (torch.bfloat16, torch.float16)  # autocast's weight-cast cache cannot live in a graph
        self.autocast = torch.autocast(device.type, dtype=dtype if low else None, enabled=low,
                                       cache_enabled=mode != "graph")
        self.network = model  # what a pass runs: the model, or DDP around it
        self.params = [p for group in optimizer.param_groups for p in group["params"]]  # (LoCA: locations too)
        if mode == "eager" and world > 1:  # DDP reduces what requires a gradient when it is built: every
            trains = [p.requires_grad for p in self.params]  # tensor the optimizer holds, whatever the phase
            for p in self.params:
                p.requires_grad_(True)
            self.network = data_parallel(model, device, find_unused_parameters)
            for p, flag_ in zip(self.params, trains):
                p.requires_grad_(flag_)
        elif world > 1:  # what DDP does when it is built: every process starts from process 0's tensors
            with torch.no_grad():
                for t in [*model.parameters(), *model.buffers()]:
                    dist.broadcast(t.data, 0)
        self.flat, self.grads = [], {}  # static gradients: views of one flat buffer per dtype
        for dtype_ in dict.fromkeys(p.dtype for p in self.params) if mode != "eager" else ():
            same = [p for p in self.params if p.dtype == dtype_]
            flat = torch.zeros(sum(p.numel() for p in same), dtype=dtype_, device=device)
            offset = 0
            for p in same:
                self.grads[p] = flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
            self.flat.append(flat)
        self.inputs, self.graphs, self.pool = {}, {}, None  # static inputs per shape; graphs per key
        self.compiled = compile_in_place(model, compile) if mode == "graph" else []
        self.loss_dtype = torch.float64 if any(p.dtype == torch.float64 for p in model.parameters()) else torch.float32

    # ---- the work of one micro-batch, the same in every mode

    def loss(self, input_ids, mask, types, y, weight, scale):
        """Forward, the weighted loss (a 0-dim tensor), backward. scale: world / examples."""
        with self.autocast:
            logits = self.network(input_ids, mask, types)  # (b, num_labels)
        logits = logits.to(float_dtype(logits))
        losses = (F.mse_loss(logits.squeeze(-1), y.to(logits.dtype), reduction="none") if self.regression
                  else F.cross_entropy(logits, y, reduction="none"))  # (b,)
        loss = (losses * weight).sum() * scale  # DDP's average (or the flat all-reduce's): the batch's mean
        self.scaler.scale(loss).backward()
        return loss.detach()

    def __call__(self, parts, examples):
        """One optimizer step over this process's micro-batches `parts` [(input_ids, mask, types (b, T),
        y (b,), weight (b,))], CPU or device tensors; `examples`: real examples in the whole batch."""
        if self.mode == "eager":
            step_loss = 0.0
            for i, part in enumerate(parts):  # gradient accumulation over micro-batches
                accumulate = self.world > 1 and i + 1 < len(parts)
                with self.network.no_sync() if accumulate else contextlib.nullcontext():  # DDP reduces at the last
                    loss = self.loss(*(t.to(self.device, non_blocking=True) for t in part), self.world / examples)
                step_loss = step_loss + loss / self.world
            self.optimizer_step()
            self.optimizer.zero_grad(set_to_none=True)
            return step_loss

        trainable = tuple(p.requires_grad for p in self.params)
        for p in self.params:  # this phase's tensors get their static gradient, the others none
            p.grad = self.grads[p] if p.requires_grad else None
        shaped = []
        for input_ids, mask, types, y, weight in parts:
            rows, length = max(self.rows, len(input_ids)), bucket_length(input_ids.shape[1], self.max_length)
            shaped.append((rows, length, pad_to_shape(input_ids, mask, types, y, weight, rows, length, self.pad_id)))
        for rows, length, tensors in shaped:  # capture before the step: warm-up passes touch the gradients
            if self.mode == "graph" and ("train", rows, length, trainable) not in self.graphs:
                self.capture(("train", rows, length, trainable), tensors)
        for flat in self.flat:
            flat.zero_()
        step_loss = 0.0
        for rows, length, tensors in shaped:
            buffers = self.fill(rows, length, tensors, self.world / examples)
            if self.mode == "graph":
                graph, loss = self.graphs[("train", rows, length, trainable)]
                graph.replay()
            else:
                loss = self.loss(*buffers)
            step_loss = step_loss + loss / self.world  # a new tensor: the next replay overwrites `loss`
        if self.world > 1:
            for flat in self.flat:
                flat.div_(self.world)
                dist.all_reduce(flat)
        self.optimizer_step()
        return step_loss

    def optimizer_step(self):
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler:
            self.scheduler.step()
        if self.schedule:
            self.schedule.step()  # LoCA: switch between coefficient and location phases, freeze locations at T_s

    @torch.no_grad()
    def logits(self, input_ids, mask, types):
        """The model's logits (b, num_labels) for one batch, in its current mode (train / eval): eager on
        the batch's shape, or padded to (rows, bucket) and, on CUDA, replayed as a forward-only graph."""
        if self.mode == "eager":
            with self.autocast:
                return self.model(*(t.to(self.device, non_blocking=True) for t in (input_ids, mask, types)))
        b = len(input_ids)
        rows, length = max(self.rows, b), bucket_length(input_ids.shape[1], self.max_length)
        y = torch.zeros(b, dtype=torch.float32 if self.regression else torch.long)
        tensors = pad_to_shape(input_ids, mask, types, y, torch.ones(b), rows, length, self.pad_id)
        key = ("eval" if not self.model.training else "forward", rows, length)
        if self.mode == "graph" and key not in self.graphs:
            self.capture(key, tensors)
        input_ids, mask, types, *_ = self.fill(rows, length, tensors)
        if self.mode == "graph":
            graph, logits = self.graphs[key]
            graph.replay()
        else:
            with self.autocast:
                logits = self.model(input_ids, mask, types)  # (rows, num_labels)
        return logits[:b].clone()  # the graph's output is overwritten by its next replay

    # ---- static buffers and graphs

    def fill(self, rows, length, tensors, scale=None):
        """Copy one padded micro-batch into the static buffers of its shape (created on first use)."""
        if (rows, length) not in self.inputs:
            self.inputs[rows, length] = [torch.empty_like(t, device=self.device) for t in tensors] + [
                torch.zeros((), dtype=self.loss_dtype, device=self.device)]  # the last: world / examples
        buffers = self.inputs[rows, length]
        for buffer, t in zip(buffers, tensors):
            if buffer.dtype != t.dtype:
                raise ValueError(f"a batch tensor is {t.dtype}, its static buffer {buffer.dtype}")
            buffer.copy_(t.pin_memory() if self.device.type == "cuda" and not t.is_cuda else t, non_blocking=True)
        if scale is not None:
            buffers[-1].fill_(scale)
        return buffers

    def capture(self, key, tensors):
        """Warm up on the capture stream, then capture key's work (a training pass, or the forward) as a
        CUDA graph in the memory pool the others share. A failed capture is reported once and the run goes
        on in mode 'padded' (the same numbers, without the speed)."""
        rows, length = key[1], key[2]
        buffers = self.fill(rows, length, tensors, 1.0)
        if key[0] == "train":
            work = lambda: self.loss(*buffers)
        else:
            def work():
                with self.autocast:
                    return self.model(*buffers[:3])
        stream = capture_stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(stream):
                for _ in range(CAPTURE_WARMUP):
                    work()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, stream=stream):
                output = work()
        except Exception as error:
            torch.cuda.current_stream(self.device).wait_stream(stream)
            why = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"
            if self.compiled:  # try once more without torch.compile
                uncompile(self.compiled)
                self.compiled = []
                print(f"step: torch.compile failed ({why}); continuing with CUDA graphs alone "
                      f"(--compile none avoids the attempt)", file=sys.stderr)
                return self.capture(key, tensors)
            print(f"step: CUDA graph capture failed ({why}); continuing without graphs (--eager avoids the "
                  f"attempt)", file=sys.stderr)
            self.mode = "padded"
            return
        self.pool = graph.pool()
        self.graphs[key] = (graph, output)

