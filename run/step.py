"""
run/step.py: what makes train.py's step fast; nothing in it changes what the step computes.

train.py's loop is the step itself: for each micro-batch the forward under autocast, the weighted loss, the
backward; then the optimizer step. `Speed` hands that loop its micro-batches and the network to run each
through:

    for network, (input_ids, mask, types, y, weight) in speed.micro_batches(parts):
        ...  # network(input_ids, mask, types), the loss, loss.backward(): train.py's lines

mode "eager": the model itself on each batch's own shape (the CPU always, a GPU with --eager or fp16).
mode "graph" (a GPU): each micro-batch padded to a fixed row count (copies of its first row, at loss weight 0)
and to a length bucket (padding tokens, masked out: the model never attends to them and the loss never reads
them) in that shape's static input buffers, and the network for its shape the model's forward and backward,
each captured once as a CUDA graph and replayed (GraphedPasses): one launch for ~1000 kernels, where an eager
step is bound by ~30 µs of Python and launch time per kernel. The backward graph adds each gradient into the
parameter's static .grad (attach_gradients), as an eager backward would, all in one multi-tensor kernel
(backward_into). One pair of graphs per (rows, length, which tensors train), captured on first use, all in one
memory pool; LoCA's phases train different tensors, so each gets its own. The loss, the optimizer and the schedules
stay eager. Before capturing, the adapted layers (--compile: or each transformer layer, or the whole model) are
torch.compiled in place (compile_in_place): Inductor fuses what a method adds around its matrix products.
Under bf16 / fp16 autocast the frozen backbone's nn.Linear layers are stored in that dtype (store_frozen_linears):
autocast would cast them to the same values at every use, so only the cast kernels go. Graphs need capturable
factorizations (OFT's inverses): cuSOLVER's (capturable_linear_algebra); a capture that fails leaves torch's
generator as it was (rng_restored_on_failure), so that the fallback's dropout still draws.
mode "padded": "graph"'s padding and static gradients without the graphs, so that the CPU checks them.
Evaluation (`logits`) pads the same way and replays a forward-only graph per shape. Several processes: every
one starts from process 0's weights and `reduce_gradients` averages the gradients after the passes, one flat
all-reduce per dtype. REPRODUCE.md §3 has the measurements behind these choices.
"""
import contextlib
import functools
import math
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

import spectral_ft

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}  # --precision
LENGTH_BUCKET = 32  # padded lengths are multiples of 32 (at most --max-length)
CAPTURE_WARMUP = 3  # eager passes on the capture stream before a capture, as torch.cuda.graphs requires
COMPILE_SCOPES = ("adapters", "layers", "model", "none")  # what mode 'graph' torch.compiles before it captures


def float_dtype(t):
    """float64 for float64 tensors (--precision fp64), else float32: losses and metrics are computed in
    at least float32, also under bf16 / fp16 autocast."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


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
    if (b, T) == (rows, length):  # nothing to pad
        return input_ids, mask, types, y, weight
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


@contextlib.contextmanager
def rng_restored_on_failure(device):
    """A capture that fails leaves the device's generator in capture mode, where the next eager random op (dropout,
    in the fallback without graphs) raises "Offset increment outside graph capture": on failure, the generator gets
    back the state it had before (torch's graph-safe state swap), then the error goes on."""
    index = torch.device(device).index
    generator = torch.cuda.default_generators[torch.cuda.current_device() if index is None else index]
    saved = generator.clone_state()
    try:
        yield
    except BaseException:
        generator.graphsafe_set_state(saved)
        raise


def capturable_linear_algebra():
    """A CUDA graph cannot hold MAGMA's batched LU (it waits on the host), which torch picks for a batch of
    inverses over 128 x 128 (OFT's Cayley blocks at roberta-base's width: 4 x 192 x 192); cuSOLVER's and cuBLAS's
    are capturable and compute the same factorization. Set for the process, once a step is graphed."""
    torch.backends.cuda.preferred_linalg_library("cusolver")


def compile_in_place(model, scope, backend="inductor"):
    """torch.compile what the CUDA graphs then capture, in place (checkpoints, evaluation and merging see
    the same modules) -> the compiled modules. scope 'adapters': each adapted layer, where Inductor fuses
    what a method adds around its matrix products (ΔW's construction, the casts, the sum of the two
    branches; the products stay cuBLAS's), which is most of a plain method's cost over the frozen layer;
    'layers': each transformer layer (every module of an nn.ModuleList), adapters inside: the backbone's norms,
    activations, dropout and residual adds fused too, and one program serves every layer (they share their code);
    'model': the whole model, embeddings and head too, its layers unrolled (the longest start); 'none'.
    backend: torch.compile's ('aot_eager' runs dynamo and AOTAutograd alone: the tests' check on a CPU)."""
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile scope must be one of {', '.join(COMPILE_SCOPES)}, got {scope!r}")
    layers = [layer for m in model.modules() if isinstance(m, torch.nn.ModuleList) for layer in m]
    modules = {"adapters": [m for _, m in spectral_ft.adapters(model)], "layers": layers, "model": [model],
               "none": []}[scope]
    if modules:  # a program per length bucket, train / eval mode and LoCA phase: more than dynamo's default 8
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    # Inductor would draw dropout's masks from its own Philox stream (the same distribution, other masks: a compiled
    # run would end as another seed's); fallback_random draws them from torch's generator, as the plain model does.
    # combo_kernels: Inductor launches independent small kernels of one program as one kernel: LoRA's `layers` step
    # 6.68 -> 6.48 ms in a loop on an H100, every shared method faster (REPRODUCE §3m); results agree to rounding,
    # as any two Inductor programs do.
    options = {"options": {"fallback_random": True, "combo_kernels": True}} if backend == "inductor" else {}
    for module in modules:
        module.compile(backend=backend, **options)
    return modules


def uncompile(modules):
    """Undo `compile_in_place`: the modules run their plain forward again."""
    for module in modules:
        module._compiled_call_impl = None


def store_frozen_linears(model, dtype):
    """Keep every frozen nn.Linear of the backbone in autocast's `dtype` (bf16 / fp16) -> the layers converted.
    Autocast casts such a weight and bias to exactly these values at every use (a cast kernel each, ~220 a step
    on roberta-base, REPRODUCE §3f), so what the step computes stays the same bit for bit and the frozen
    weights take half the memory. Left alone: anything that trains, and the layers an adapter wraps (DoRA and
    OFT use W0 outside a matrix product; merging adds ΔW into it). Checkpoints hold only what trains."""
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16 (autocast's), got {dtype}")
    wrapped = {id(m) for _, adapter in spectral_ft.adapters(model) for m in adapter.modules()}
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in wrapped
              and not any(p.requires_grad for p in m.parameters())]
    for module in frozen:
        module.to(dtype)
    return frozen


def step_mode(device, precision, eager=False):
    """'graph' on CUDA, 'eager' on the CPU, with --eager, or with fp16 (its GradScaler step is eager)."""
    return "graph" if device.type == "cuda" and not eager and precision != "fp16" else "eager"


class GraphedPasses:
    """The model's forward and backward for inputs of one shape, each captured once as a CUDA graph and replayed.
    Called, it is the model's forward: `passes(input_ids, mask, types)` -> logits that train.py's eager loss and
    `loss.backward()` go through; that backward replays the captured one, which adds every trained parameter's
    gradient into the static .grad it was captured with (Speed.attach_gradients). Two graphs, not one, so that
    the loss between them stays train.py's own line; per micro-batch only the loss's few kernels run eagerly.
    inputs: the static (rows, length) buffers (input_ids, mask, types) the graphs read; grads: the static
    gradient buffers, restored after the warm-up passes (which add into them); attached: the (parameter, its static
    .grad) pairs that train, which the captured backward adds into in one multi-tensor kernel (backward_into)."""

    def __init__(self, model, inputs, *, autocast, pool, stream, grads, attached):
        self.inputs = inputs
        saved = [g.clone() for g in grads]  # the gradients of the micro-batches already through this step
        try:
            self.capture(model, autocast, pool, stream, attached)
        finally:
            for g, before in zip(grads, saved):
                g.copy_(before)
        self.anchor = torch.empty(0, device=self.logits.device, requires_grad=True)  # the replay's logits require grad

    def capture(self, model, autocast, pool, stream, attached):
        """Warm-up passes on the capture stream (as torch.cuda.graphs requires), then the two captures."""
        current = torch.cuda.current_stream(stream.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            for _ in range(CAPTURE_WARMUP):
                with autocast:
                    logits = model(*self.inputs)
                if logits.requires_grad:
                    logits.backward(torch.ones_like(logits))
        current.wait_stream(stream)
        self.forward_graph, self.backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with rng_restored_on_failure(stream.device):
            with torch.cuda.graph(self.forward_graph, pool=pool, stream=stream):
                with autocast:
                    logits = model(*self.inputs)  # (rows, num_labels)
            self.trains, self.grad_logits = logits.requires_grad, torch.zeros_like(logits)  # backward's static input
            if self.trains:
                with torch.cuda.graph(self.backward_graph, pool=pool, stream=stream):
                    backward_into(logits, self.grad_logits, attached)
        self.logits = logits.detach()  # forward's static output

    def __call__(self, input_ids, mask, types):
        for buffer, t in zip(self.inputs, (input_ids, mask, types)):
            if t.data_ptr() != buffer.data_ptr():
                buffer.copy_(t)
        if self.trains:
            return _Replay.apply(self, self.anchor)
        self.forward_graph.replay()
        return self.logits.clone()

    def backward(self, grad_logits):
        self.grad_logits.copy_(grad_logits)
        self.backward_graph.replay()


def backward_into(logits, grad_logits, attached):
    """logits.backward(grad_logits), each gradient added into its parameter's static .grad as autograd would, but
    all in one multi-tensor kernel rather than one addition kernel per parameter (autograd's AccumulateGrad: 48 for
    LoRA on roberta-base's q and v). attached: the (parameter, its static .grad) pairs. During the pass each .grad is
    None, so that autograd can hand each gradient over without a kernel; then the static ones come back, and
    torch._foreach_add_ adds the gradients into them: the same float additions, micro-batch after micro-batch (a
    parameter used twice in one pass has its two gradients summed before they are added)."""
    for p, _ in attached:
        p.grad = None
    try:
        logits.backward(grad_logits)
        pairs = [(static, p.grad) for p, static in attached if p.grad is not None]  # none: it took no part
    finally:
        for p, static in attached:
            p.grad = static
    if pairs:
        torch._foreach_add_([static for static, _ in pairs], [new for _, new in pairs])


class _Replay(torch.autograd.Function):
    """GraphedPasses' node in the autograd graph: forward replays the forward graph, backward the backward graph."""

    @staticmethod
    def forward(ctx, passes, anchor):
        ctx.passes = passes
        passes.forward_graph.replay()
        return passes.logits.clone()  # the next replay overwrites the static output

    @staticmethod
    def backward(ctx, grad_logits):
        ctx.passes.backward(grad_logits)
        return None, None


class Speed:
    """The micro-batches of train.py's step on the device, and the network each runs through (see the module's
    docstring), the gradients averaged over processes, and evaluation's logits.

        speed = Speed(model, device=device, dtype=torch.bfloat16, mode="graph", rows=32, max_length=128)
        for network, (input_ids, mask, types, y, weight) in speed.micro_batches(parts): ...
        speed.reduce_gradients()
        logits = speed.logits(input_ids, mask, types)  # (b, num_labels), for evaluate
    """

    def __init__(self, model, *, device, dtype=None, mode="eager", rows=None, max_length=None, pad_id=0,
                 regression=False, world=1, compile="adapters"):
        if mode not in ("eager", "padded", "graph"):
            raise ValueError(f"mode must be 'eager', 'padded' or 'graph', got {mode!r}")
        if mode != "eager" and not (rows and max_length):
            raise ValueError(f"mode {mode!r} needs rows and max_length (the static shape), got {rows}, {max_length}")
        if mode == "graph" and device.type != "cuda":
            raise ValueError(f"mode 'graph' needs a CUDA device, got {device}; use 'padded' or 'eager'")
        self.model, self.device, self.mode, self.rows, self.max_length = model, device, mode, rows, max_length
        self.parameters = list(model.parameters())  # walked at every step: model.parameters() costs ~0.3 ms a walk
        self.pad_id, self.regression, self.world = pad_id, regression, world
        low = dtype in (torch.bfloat16, torch.float16)  # a graph cannot hold autocast's cache of cast weights
        self.autocast = torch.autocast(device.type, dtype=dtype if low else None, enabled=low,
                                       cache_enabled=mode != "graph")
        if world > 1:  # every process starts from process 0's tensors
            with torch.no_grad():
                for t in [*model.parameters(), *model.buffers()]:
                    dist.broadcast(t.data, 0)
        self.graphed, self.graphs, self.pool = {}, {}, None  # training passes, evaluation graphs: per shape
        self.inputs = {}  # static input buffers per (rows, length), shared by training and evaluation
        self.grads, self.flat = {}, []  # static gradients (modes 'padded', 'graph'): per parameter, and the buffers
        self.trained_now, self.attached, self.detached = None, [], []  # attach_gradients: which train, .grad
        self.stored = store_frozen_linears(model, dtype) if low else []  # what autocast would cast, once
        self.compiled = compile_in_place(model, compile) if mode == "graph" else []
        if mode == "graph":
            capturable_linear_algebra()

    @classmethod
    def for_run(cls, config, model, device, world, pad_id, regression):
        """(Speed, the line saying what it does) for a run's configuration: on a GPU, unless --eager or fp16, each
        micro-batch padded to a length bucket through the model's CUDA graphs (--compile's scope compiled first)."""
        scope, mode = config.compile or "none", step_mode(device, config.precision, config.eager)
        rows = min(config.micro_batch_size or math.ceil(config.batch_size / world), math.ceil(config.batch_size / world))
        speed = cls(model, device=device, dtype=DTYPES[config.precision], mode=mode, rows=rows,
                    max_length=config.max_length, pad_id=pad_id, regression=regression, world=world, compile=scope)
        compiled = {"adapters": ", adapted layers compiled", "layers": ", layers compiled", "model": ", model compiled",
                    "none": ""}[scope]
        return speed, (f"  step            {'CUDA graphs per length bucket' + compiled if mode == 'graph' else 'eager'}"
                       + (" (fp16's GradScaler step is eager)" if config.precision == "fp16" and not config.eager else ""))

    def micro_batches(self, parts):
        """(network, (input_ids, mask, types, y, weight) on the device) for each micro-batch of `parts` (CPU
        tensors): the model on the batch's own shape (eager), or padded to (rows, length bucket) in that shape's
        static buffers, with the model's graphed passes for that shape (graph; the model itself in mode 'padded',
        into the same static gradients)."""
        if self.mode != "eager":
            self.attach_gradients()
        for part in parts:
            if self.mode == "eager":
                yield self.model, [t.to(self.device, non_blocking=True) for t in part]
                continue
            rows, length = max(self.rows, len(part[0])), bucket_length(part[0].shape[1], self.max_length)
            input_ids, mask, types, y, weight = pad_to_shape(*part, rows, length, self.pad_id)
            inputs = self.fill(rows, length, (input_ids, mask, types))
            y, weight = (t.to(self.device, non_blocking=True) for t in (y, weight))
            yield (self.graphed_passes(rows, length) if self.mode == "graph" else self.model), (*inputs, y, weight)

    def attach_gradients(self):
        """Every parameter that trains now gets its static gradient, zeroed, and every other none (so that the
        optimizer skips it): a graph adds into the addresses it was captured with. One flat buffer per dtype for
        the parameters that train when the first step starts (one kernel zeroes it), one of its own for a
        parameter that starts training later (LoCA's locations). Which parameters train is read once a step
        (`self.trained_now`, also the graphs' key); the rest is laid out again only when that changes."""
        trains = tuple(p.requires_grad for p in self.parameters)
        if trains != self.trained_now:
            self.lay_out_gradients(trains)
        for flat in self.flat:
            flat.zero_()
        for p, grad in self.attached:
            p.grad = grad
        for p in self.detached:
            if p.grad is not None:
                p.grad = None

    def lay_out_gradients(self, trains):
        """The static gradients of the parameters `trains` marks (made on first need), and which get none."""
        trained = [p for p, t in zip(self.parameters, trains) if t]
        if not self.grads:
            for dtype in dict.fromkeys(p.dtype for p in trained):
                same = [p for p in trained if p.dtype == dtype]
                flat = torch.zeros(sum(p.numel() for p in same), dtype=dtype, device=self.device)
                self.flat.append(flat)
                for p, part in zip(same, flat.split([p.numel() for p in same])):
                    self.grads[p] = part.view_as(p)
        for p in trained:
            if p not in self.grads:
                self.grads[p] = torch.zeros_like(p)
                self.flat.append(self.grads[p].view(-1))
        self.trained_now, self.attached = trains, [(p, self.grads[p]) for p in trained]
        self.detached = [p for p, t in zip(self.parameters, trains) if not t]

    def graphed_passes(self, rows, length):
        """The model's forward and backward on (rows, length)'s static buffers, captured once for the tensors that
        train now, and replayed; the model itself where the capture fails (said once)."""
        key = (rows, length, self.trained_now)
        if key not in self.graphed:
            try:
                self.graphed[key] = GraphedPasses(self.model, self.inputs[rows, length], autocast=self.autocast,
                                                  pool=self.graph_pool(), stream=capture_stream(self.device),
                                                  grads=self.flat, attached=self.attached)
            except Exception as error:
                torch.cuda.current_stream(self.device).wait_stream(capture_stream(self.device))
                self.capture_failed(error)
                return self.model if self.mode != "graph" else self.graphed_passes(rows, length)
        return self.graphed[key]

    def graph_pool(self):
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        return self.pool

    def capture_failed(self, error):
        """One line on stderr; without torch.compile first, then without graphs (mode 'padded')."""
        why = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"
        if self.compiled:
            uncompile(self.compiled)
            self.compiled, self.graphed, self.graphs = [], {}, {}
            print(f"step: torch.compile failed ({why}); continuing with CUDA graphs alone (--compile none avoids "
                  f"the attempt)", file=sys.stderr)
            return
        print(f"step: CUDA graph capture failed ({why}); continuing without graphs (--eager avoids the attempt)",
              file=sys.stderr)
        self.mode = "padded"

    def reduce_gradients(self):
        """Several processes: every gradient becomes the mean of the processes' (one all-reduce per dtype). The
        static gradients (modes 'padded', 'graph') are reduced where they lie, in their flat buffers."""
        if self.world == 1:
            return
        if self.flat:
            for flat in self.flat:
                dist.all_reduce(flat.div_(self.world))
            return
        grads = [p.grad for p in self.parameters if p.grad is not None]
        for dtype in dict.fromkeys(g.dtype for g in grads):
            same = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in same]).div_(self.world)
            dist.all_reduce(flat)
            offset = 0
            for g in same:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    # ---- evaluation

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
            self.capture(key, tensors[:3])
        input_ids, mask, types = self.fill(rows, length, tensors[:3])
        if self.mode == "graph":
            graph, logits = self.graphs[key]
            graph.replay()
        else:
            with self.autocast:
                logits = self.model(input_ids, mask, types)  # (rows, num_labels)
        return logits[:b].clone()  # the graph's output is overwritten by its next replay

    def fill(self, rows, length, tensors):
        """Copy one padded batch (input_ids, mask, types) into the static buffers of its shape (made on first use)."""
        if (rows, length) not in self.inputs:
            self.inputs[rows, length] = [torch.empty_like(t, device=self.device) for t in tensors]
        buffers = self.inputs[rows, length]
        for buffer, t in zip(buffers, tensors):
            buffer.copy_(t.pin_memory() if self.device.type == "cuda" and not t.is_cuda else t, non_blocking=True)
        return buffers

    def capture(self, key, tensors):
        """Warm up on the capture stream, then capture the forward for key's shape as a CUDA graph in the pool the
        training graphs share. A failed capture is said once (capture_failed)."""
        buffers = self.fill(key[1], key[2], tensors)

        def forward():
            with self.autocast:
                return self.model(*buffers)
        stream = capture_stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(stream):
                for _ in range(CAPTURE_WARMUP):
                    forward()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with rng_restored_on_failure(self.device), torch.cuda.graph(graph, pool=self.graph_pool(), stream=stream):
                output = forward()
        except Exception as error:
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self.capture_failed(error)
            return self.capture(key, tensors) if self.mode == "graph" else None
        self.graphs[key] = (graph, output)
