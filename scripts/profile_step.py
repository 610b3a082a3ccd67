"""
scripts/profile_step.py: where the time of train.py's step goes, per step, under torch.profiler.

For each row (bench.py's ROWS; the model built by bench.build, the batches by bench.random_batches, AdamW by
bench.adamw) it runs bench.TrainStep, train.py's step, in the mode train.py runs it on that device ('graph':
--compile's scope compiled, forward and backward replayed as CUDA graphs, on a GPU; 'eager' on the CPU), warms
up, times --steps steps, then profiles --steps more and prints per step:

    ms/step   wall time of the steps without the profiler (CUDA events; perf_counter on the CPU)
    wall      wall time of the profiled steps
    busy      the time at least one kernel runs: the union of the kernels' intervals, overlaps counted once
    matmul .. other   busy time by the kernel's category (PATTERNS), overlaps shared equally: they add up to busy
    gaps      wall - busy: launch and Python time the GPU waits through
    kernels   kernels launched (copies and memsets included)

On a GPU a kernel is what CUPTI records on the device (kernels, memcpy, memset). On the CPU (the smoke test) a
"kernel" is an ATen op's own time, its interval less its children's, an op inside the optimizer's step or an
attention op counted as theirs; the categories are then read from ATen names (aten::addmm is a matmul).

    python scripts/profile_step.py                                   # floor, lora; GPU, train.py's step
    python scripts/profile_step.py --methods floor,lora,fourierft,loca --json prof.json --trace trace.json
    python scripts/profile_step.py --mode eager --top 10              # the eager step, its 10 costliest kernels
    python scripts/profile_step.py --device cpu --layers 1 --hidden 32 --batch 2 --seq 16 --steps 2 --warmup 1
"""
import argparse
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
import torch  # noqa: E402

import bench  # noqa: E402
from run.errors import Parser, UsageError, bounded  # noqa: E402
from run.step import DTYPES, step_mode  # noqa: E402

CATEGORIES = ("matmul", "attention", "norm_act_elementwise", "optimizer", "copy_memset", "other")
# (a lower-case piece of a kernel's name, its category): the first piece the name contains decides.
PATTERNS = [
    # optimizer first: fused AdamW's multi_tensor_apply_kernel<..FusedAdamMathFunctor..>, the foreach ops, and on
    # the CPU every op inside "Optimizer.step#AdamW.step"
    ("adam", "optimizer"), ("multi_tensor", "optimizer"), ("foreach", "optimizer"), ("optimizer.step", "optimizer"),
    # attention before matmul: the memory-efficient kernels are cutlass's (fmha_cutlassF_..., fmha_cutlassB_...)
    ("flash", "attention"), ("fmha", "attention"), ("attention", "attention"), ("sdpa", "attention"),
    ("scaled_dot_product", "attention"), ("dot_do_o", "attention"),  # cuDNN's attention backward
    # cuBLAS (sm90_xmma_gemm_..., nvjet_..., cublasLt::splitKreduce_kernel), CUTLASS, Inductor's mm templates, ATen
    ("gemm", "matmul"), ("gemv", "matmul"), ("cublas", "matmul"), ("cutlass", "matmul"), ("xmma", "matmul"),
    ("nvjet", "matmul"), ("triton_tem_", "matmul"), ("aten::mm", "matmul"), ("aten::bmm", "matmul"),
    ("aten::addmm", "matmul"), ("aten::baddbmm", "matmul"), ("aten::addbmm", "matmul"), ("aten::matmul", "matmul"),
    ("aten::linear", "matmul"),
    # Inductor's fused pointwise and reduction kernels (triton_poi_, triton_red_, triton_per_), casts among them
    ("triton", "norm_act_elementwise"),
    # copies before elementwise: ATen's copy and fill kernels are elementwise_kernel<..direct_copy_kernel_cuda..>
    # and <..FillFunctor..>
    ("memcpy", "copy_memset"), ("memset", "copy_memset"), ("fillfunctor", "copy_memset"), ("copy", "copy_memset"),
    ("aten::fill_", "copy_memset"), ("aten::zero_", "copy_memset"), ("aten::clone", "copy_memset"),
    ("aten::cat", "copy_memset"),
    ("layer_norm", "norm_act_elementwise"), ("layernorm", "norm_act_elementwise"),
    ("gammabeta", "norm_act_elementwise"),  # LayerNorm's weight and bias gradients
    ("gelu", "norm_act_elementwise"), ("tanh", "norm_act_elementwise"), ("softmax", "norm_act_elementwise"),
    ("dropout", "norm_act_elementwise"), ("philox", "norm_act_elementwise"), ("bernoulli", "norm_act_elementwise"),
    ("elementwise", "norm_act_elementwise"), ("reduce_kernel", "norm_act_elementwise"),
    ("aten::add", "norm_act_elementwise"), ("aten::sub", "norm_act_elementwise"), ("aten::mul", "norm_act_elementwise"),
    ("aten::div", "norm_act_elementwise"), ("aten::where", "norm_act_elementwise"), ("aten::sum", "norm_act_elementwise"),
]
HEADERS = {"matmul": "matmul", "attention": "attn", "norm_act_elementwise": "norm/act", "optimizer": "optim",
           "copy_memset": "copy", "other": "other"}


def category(name):
    """The category of a kernel (or, on the CPU, an ATen op) from its name: the first of PATTERNS it contains."""
    lower = name.lower()
    return next((kind for piece, kind in PATTERNS if piece in lower), "other")


def union_length(intervals):
    """The length of the union of (start, end) intervals: the time at least one of them covers."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total


def share_busy(labelled):
    """{label: busy time} for (start, end, label) intervals: each instant that some interval covers counts once,
    shared equally among the labels of the intervals covering it. The values add up to union_length."""
    edges = sorted([(start, 1, label) for start, end, label in labelled if end > start]
                   + [(end, -1, label) for start, end, label in labelled if end > start], key=lambda e: (e[0], e[1]))
    shares, running, last = collections.defaultdict(float), collections.Counter(), None
    for t, change, label in edges:
        covering = sum(running.values())
        if covering and t > last:
            for name, count in running.items():
                if count:
                    shares[name] += (t - last) * count / covering
        running[label] += change
        last = t
    return dict(shares)


def minus(interval, holes):
    """The pieces of (start, end) outside every hole (start, end)."""
    pieces, at = [], interval[0]
    for start, end in sorted(holes):
        if start > at:
            pieces.append((at, min(start, interval[1])))
        at = max(at, end)
    if at < interval[1]:
        pieces.append((at, interval[1]))
    return [(a, b) for a, b in pieces if b > a]


def device_kernels(events):
    """(name, [(start µs, end µs)]) of every kernel, memcpy and memset on the GPU (annotations projected onto the
    GPU's timeline left out)."""
    return [(e.name, [(e.time_range.start, e.time_range.end)]) for e in events
            if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation]


def cpu_kernels(events):
    """(name, [(start µs, end µs)]) of every ATen op on the CPU, the pieces of its interval that are its own time
    (outside its children). Inside an optimizer step or an attention op, the name is prefixed with that op's, whose
    category then wins (PATTERNS lists them first)."""
    kernels = []
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        outer, parent = [], e.cpu_parent
        while parent is not None:
            if category(parent.name) in ("optimizer", "attention"):
                outer = [parent.name]
            parent = parent.cpu_parent
        name = " / ".join(outer + [e.name])
        holes = [(c.time_range.start, c.time_range.end) for c in e.cpu_children]
        kernels.append((name, minus((e.time_range.start, e.time_range.end), holes)))
    return kernels


def wall_ms(step, k, cuda, first=0):
    """ms that steps first .. first + k - 1 take, from the first launch until the GPU has finished the last."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for i in range(first, first + k):
            step(i)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    for i in range(first, first + k):
        step(i)
    return (time.perf_counter() - t0) * 1e3


def breakdown(kernels, k, wall):
    """Per step, in ms: busy, the busy time by category, gaps, the kernels' summed durations, and their count."""
    pieces = [(a, b, category(name)) for name, intervals in kernels for a, b in intervals]
    busy = union_length([(a, b) for a, b, _ in pieces]) / 1e3 / k
    shares = share_busy(pieces)
    return {"wall_ms": wall / k, "busy_ms": busy, **{c: shares.get(c, 0.0) / 1e3 / k for c in CATEGORIES},
            "gaps_ms": wall / k - busy, "summed_ms": sum(b - a for a, b, _ in pieces) / 1e3 / k,
            "kernels": len(kernels) / k}


def top_kernels(kernels, k, n):
    """The n names with the most summed time: [{name, category, ms per step, launches per step}]."""
    time_of, count = collections.Counter(), collections.Counter()
    for name, intervals in kernels:
        time_of[name] += sum(b - a for a, b in intervals)
        count[name] += 1
    return [{"name": name, "category": category(name), "ms": t / 1e3 / k, "count": count[name] / k}
            for name, t in time_of.most_common(n)]


def profile_row(args, row, device, mode):
    """Build the row as bench.py does, run train.py's step in `mode`, warm up, time and profile --steps steps."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    model = bench.build(args, row, device)
    _, parts = bench.random_batches(args, model.config.vocab_size)
    torch._dynamo.reset()  # each row compiles afresh, as in its own train.py run
    train_step = bench.TrainStep(model, bench.adamw(model, device), device=device, dtype=DTYPES[args.precision],
                                 mode=mode, rows=args.batch, max_length=args.seq, compile=args.compile)

    def step(i):
        train_step(parts[i % len(parts)], args.batch)

    wall_ms(step, args.warmup, cuda)
    plain = wall_ms(step, args.steps, cuda, args.warmup)
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        wall = wall_ms(step, args.steps, cuda, args.warmup + args.steps)
    if args.trace:
        prof.export_chrome_trace(str(Path(args.trace).with_suffix(f".{row}.json")))
    events = prof.events()
    kernels = device_kernels(events) if cuda else cpu_kernels(events)
    if not kernels:  # each row is its own profiler session; one row per process (--methods ROW) rules that out
        print(f"  ({row}: the profiler recorded no kernels; its numbers below are wall time alone)")
    return {"row": row, "mode": train_step.mode, "ms": plain / args.steps,  # the mode: 'padded' if capture failed
            **breakdown(kernels, args.steps, wall), "top": top_kernels(kernels, args.steps, max(args.top, 20))}


def print_table(results, top):
    print(f"{'row':<11} {'mode':<6} {'ms/step':>8} {'wall':>8} {'busy':>8} "
          + " ".join(f"{HEADERS[c]:>8}" for c in CATEGORIES) + f" {'gaps':>8} {'kernels':>8}")
    for r in results:
        print(f"{r['row']:<11} {r['mode']:<6} {r['ms']:8.3f} {r['wall_ms']:8.3f} {r['busy_ms']:8.3f} "
              + " ".join(f"{r[c]:8.3f}" for c in CATEGORIES) + f" {r['gaps_ms']:8.3f} {r['kernels']:8.1f}")
    for r in results if top else []:
        print(f"\n# {r['row']}: the {top} kernels with the most time, ms and launches per step")
        for t in r["top"][:top]:
            print(f"  {t['ms']:8.3f} {t['count']:6.1f}  {HEADERS[t['category']]:<8} {t['name'][:100]}")


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.step_arguments(parser)
    parser.add_argument("--methods", default="floor,lora", help=f"comma-separated rows among {','.join(bench.ROWS)}")
    parser.add_argument("--mode", choices=["eager", "padded", "graph"],
                        help="train.py's step mode (default: what train.py runs: graph on a GPU, eager on the CPU)")
    parser.add_argument("--steps", type=bounded(int, 1), default=10, help="steps profiled (and as many timed before)")
    parser.add_argument("--warmup", type=bounded(int, 0), default=5)
    parser.add_argument("--top", type=bounded(int, 0), default=0, help="also print each row's N costliest kernels")
    parser.add_argument("--json", help="also write every number to this file")
    parser.add_argument("--trace", help="also export each row's Chrome trace, to PATH with .ROW.json for its suffix")
    args = parser.parse_args(argv)
    rows = bench.rows_of(parser, args.methods)
    device = bench.device_of(parser, args, program="scripts/profile_step.py")
    mode = args.mode or step_mode(device, args.precision)
    if mode == "graph" and device.type != "cuda":
        parser.error(f"--mode graph: CUDA graphs need a GPU, not {device}; use --mode eager or padded")
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    # No empty profiler session before the captures (torch.profiler._utils._init_for_cuda_graphs): PyTorch's docs give
    # it for CUDA < 12 or drivers before 525.85; on later stacks it was seen to leave the next session without kernels.
    if cuda:
        bench.prepare_cuda(device)
    config = bench.KNOWN_CONFIGS[args.model]
    shape = (f"hidden {args.hidden or config['hidden_size']}, {args.layers or config['num_hidden_layers']} layers"
             + (" (narrowed: 2 heads, vocabulary 1000)" if args.hidden else ""))
    compiled = f", compile {args.compile}" if mode == "graph" else ""
    print(f"# {args.model} shape ({shape}), batch {args.batch} x {args.seq}, {args.precision} autocast, AdamW; "
          f"train.py's step, mode {mode}{compiled}; ms per step, mean of {args.steps} profiled steps after "
          f"{args.warmup + args.steps}; {name}, torch {torch.__version__}")
    print(f"# busy: the union of the {'kernels' if cuda else 'ATen ops'}' intervals, split by category; "
          f"gaps = wall - busy; ms/step: the same number of steps without the profiler")
    results = [profile_row(args, row, device, mode) for row in rows]
    print_table(results, args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": name, "torch": torch.__version__, "mode": mode,
                       "rows": results}, f, indent=1)
    return results


def cli(argv=None):
    """The command line: bad flags are one line and exit status 2, as in bench.py."""
    try:
        main(argv)
        return 0
    except UsageError as e:
        print(f"profile_step.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
