"""
Our training step against transformers + PEFT, for every method PEFT shares with us: the default step must be at
least 1.15x faster than PEFT under torch.compile(model, mode="reduce-overhead") for each of them (issue 27), every
row in a process of its own (rows sharing a process moved each other by ~10%, whichever ran first).

    python scripts/peft_bench.py --json out.json                                             # the bench
    python scripts/peft_bench.py --minilm .minilm --sst2 .sst2 --rows ''                      # the real run only
    python scripts/peft_bench.py --device cpu --layers 2 --hidden 64 --steps 2 --warmup 1 --seq 16 --batches 4   # smoke
    python scripts/peft_bench.py --table out.json                                             # its tables again

The first command runs everything, each row in its own process: the script forks itself once per row and batch
(the row's process runs the same flags with --rows that row, --same-process and a JSON file in a temporary folder),
then prints one table. Forked, a row's process starts with the imports done (a fresh Python took 8-16 s for them on
the H100 machine) and everything after them its own: CUDA, the allocator, Dynamo's caches. --same-process runs the
rows one after another in this process instead. --row-timeout stops a row's process that runs too long (its row
then says so and the next one runs), so that one call can bound the whole table. Inductor compiles in the row's
process (--compile-workers 1, the default: on the H100 machine torch's pool took ~10 s to start and made no
compiled row's first step shorter); --compile-workers 0 starts torch's pool instead, before the row builds its model,
so that no worker starts beside a timed step (a row that compiles nothing, PEFT eager or our floor's default,
starts none). The real run's rows compile as a user's run does, with torch's pool (started before the epoch; not
for PEFT eager and ours-none, which compile nothing: epoch_compiles). Each row's line ends with its
process's seconds and where they went (start: from the fork to the row's setup; setup; the model; the steps), which
is what a call's plan needs: most of a full table's time is spent outside the timed steps.

The bench: roberta-base's shape with random weights (transformers' RobertaConfig defaults; ours: bench.build),
random tokens, batch x --seq, bf16 autocast, fused AdamW (lr 1e-4), the median optimizer step (CUDA events), and
the same number of steps in a row, synchronized only around them (loop, as train.py's loop runs them), and the
host's time from a step's call to its first CUDA graph launch (launch_ms: what a step timed alone waits for). For
each METHOD PEFT shares with us (spectral_ft's classes with a `peft` declaration: lora, dora, vera, fourierft, oft):
    peft-METHOD-ro      transformers' RobertaForSequenceClassification + PEFT's tuner, the classifier trained
                        (modules_to_save), the whole model under torch.compile(model, mode="reduce-overhead"): one
                        line for a PEFT user
    peft-METHOD-eager   the same, eager
    ours-METHOD-none    bench.TrainStep (train.py's step), mode 'graph': CUDA graphs alone, nothing compiled (a run of
                        fewer than 10,000 steps: run.config.decide_compile)
    ours-METHOD-layers  the same, each transformer layer compiled first (a run of 10,000 steps or more)
    ours-METHOD         the same, the adapted layers compiled first (--compile adapters)
PEFT's adapter is ours: its config is the adapter_config.json export.py writes for bench.build's model (targets
query,value, the class's defaults; on a --hidden model bench.SMALL's), read by peft.get_peft_config
(tests/test_bench.py checks that both train the same tensors, shape for shape). And the floors:
    peft-floor-ro       the transformers model frozen but its classifier, the gradient still flowing down to the
                        embeddings' output (a forward hook makes it require grad, as bench.py's floor), same compile
    ours-floor          bench.TrainStep on bench.py's floor (CUDA graphs alone: no adapted layer to compile)
    ours-floor-layers   the floor with each transformer layer compiled
    ours-lora-model, ours-floor-model   ours with the whole model compiled (--compile model)
each after torch._dynamo.reset(), on a fresh model. The table: per method ours, PEFT-RO and PEFT-eager ms, and
PEFT-RO / ours and PEFT-eager / ours (> 1: ours faster), PEFT-RO / ours in a loop, and whether ours is at least
1.15x faster than PEFT-RO (the median step: issue 27's measure), for a short run's default (none) and a long run's
(layers); and whether a run of any length on this shape (its first step, then median steps, under train.py's
default for that length) ends 1.15x sooner than under PEFT-RO, with the length where each method's ratio is least.
The real run (--minilm, --sst2): one SST-2 epoch of MiniLM, batch 32, max length 64, LoRA as ours (the pooler
trained too, as our head's), in epoch_permutation(0, 0, n) order, wall clock with compilation: transformers'
BertForSequenceClassification + PEFT, eager and under reduce-overhead (each batch at its own padded length, as a
PEFT user runs it), and ours (capture_vs_reduce_overhead.epoch_row; ours-none: --compile none, CUDA graphs
alone, which train.py takes for this run of 2,105 steps; ours: --compile adapters; ours-layers: --compile layers),
each also in its own process. Without transformers or peft the PEFT rows are skipped (one line says so).
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
# torch.cuda.is_available() by NVML, not by the CUDA runtime, which would initialize CUDA in this process: a process
# forked after that cannot use the GPU, and this one forks each row's (fork_row)
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch

import bench
import capture_vs_reduce_overhead as cvr
import export
import spectral_ft
from run.config import LAYERS_FROM_STEPS
from run.errors import Parser, UsageError, bounded
from run.step import capturable_linear_algebra

SHARED = tuple(method for method in spectral_ft.METHODS if spectral_ft.declared(method, "peft"))  # PEFT has a tuner
ROWS = (*(f"{row}-{method}{variant}" for method in SHARED
          for row, variant in (("peft", "-ro"), ("peft", "-eager"), ("ours", "-none"), ("ours", "-layers"),
                               ("ours", ""))),
        "peft-floor-ro", "ours-floor", "ours-floor-layers", "ours-lora-model", "ours-floor-model")
EPOCH_ROWS = ("peft-eager", "peft-reduce-overhead", "ours", "ours-layers", "ours-none")
BAR = 1.15  # PEFT-RO / ours the default step must reach for every shared method (issue 27)
TOKENIZED = {}  # (minilm, sst2, max length) -> cvr.load_sst2's splits, tokenized once per table (sst2)
LAUNCHED = "PEFT_BENCH_LAUNCHED"  # a row's process: when its parent started it (time.time()), for its start_s


def parts(row):
    """'peft-vera-ro' -> ('peft', 'vera', 'ro'); 'ours-lora' -> ('ours', 'lora', 'default'); 'ours-lora-model' ->
    ('ours', 'lora', 'model')."""
    side, method, *variant = row.split("-")
    return side, method, variant[0] if variant else "default"


def compiles(row):
    """Whether a bench row goes through Inductor: PEFT-RO, and ours but the floor's default (no adapted layer to
    compile); not PEFT eager. A row that compiles nothing starts no compile workers."""
    side, method, variant = parts(row)
    return variant != "eager" and (side, method, variant) != ("ours", "floor", "default")


def epoch_compiles(row):
    """Whether a real run's row goes through Inductor: all but PEFT eager and ours-none (CUDA graphs alone). A row
    that compiles nothing starts no compile workers, as a user's run of it starts none (torch's pool took ~10 s to
    start on the H100 machine, outside the timed epoch but inside the call)."""
    return row not in ("peft-eager", "ours-none")


def hf_libraries():
    """(transformers, peft), or None with one line saying why when either is missing."""
    try:
        import peft
        import transformers
    except ImportError as error:
        print(f"peft_bench.py: {error.name} is not installed (the PEFT rows need transformers and peft): skipping them")
        return None
    return transformers, peft


def peft_config(peft, model):
    """PEFT's config of the adapters our `model` holds: the adapter_config.json export.py writes for it (peft_type and
    fields from the method's `peft` and `peft_fields()` declarations, the targets as adapted, our head as
    modules_to_save), for training (inference_mode off). An adapter PEFT would rebuild otherwise (`peft_problem`)
    is an error, as in export.py."""
    layers = spectral_ft.adapters(model)
    method = layers[0][1].method
    export.check_peft_layout(model, method)
    targets = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name, _ in layers))  # ["query", "value"]
    fields = export.peft_config(model, dict(method=method, targets=targets), base_name=None)
    return peft.get_peft_config(dict(fields, inference_mode=False))


class HFStep:
    """One optimizer step of a transformers model, called as bench.TrainStep is:
    `loss = step([(input_ids, mask, types, y, weight), ...], examples)` (weights 1: transformers' loss is the
    micro-batch's mean). compiled: the whole model under torch.compile(**options); each batch as it comes."""

    def __init__(self, model, optimizer, scheduler=None, *, device, compiled, options=None):
        self.model, self.optimizer, self.scheduler, self.device, self.compiled = (
            model, optimizer, scheduler, device, compiled)
        self.network = torch.compile(model, **(options or {})) if compiled else model  # what a pass runs
        self.mode = "compiled model" if compiled else "eager"

    def __call__(self, parts, examples):
        self.optimizer.zero_grad(set_to_none=True)
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        step_loss, cuda = 0.0, self.device.type == "cuda"
        for part in parts:
            input_ids, mask, types, y, _ = ((t.pin_memory() if cuda else t).to(self.device, non_blocking=cuda)
                                            for t in part)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self.network(input_ids=input_ids, attention_mask=mask, token_type_ids=types, labels=y)
            loss = out.loss * (len(y) / examples)  # eager: a tensor of its own, not the graph's output
            loss.backward()
            step_loss = step_loss + loss.detach()
        self.optimizer.step()
        if self.scheduler:
            self.scheduler.step()
        return step_loss


def compile_options(device):
    """reduce-overhead on CUDA; on the CPU (smoke tests) backend aot_eager."""
    return {"mode": "reduce-overhead"} if device.type == "cuda" else {"backend": "aot_eager"}


def hf_bench_model(libraries, args, method, device):
    """transformers' RoBERTa classifier (RobertaConfig's defaults: roberta-base's shape), random weights (seed 0)
    drawn on `device` as bench.build's, with PEFT's tuner for `method` configured as our adapter of bench.build's
    row (peft_config; a one-layer model of ours is built on the CPU to read it), or ('floor') frozen but the
    classifier, the embeddings' output requiring grad."""
    transformers, peft = libraries
    if method != "floor":
        config = peft_config(peft, bench.build(argparse.Namespace(**dict(vars(args), layers=1)), method,
                                               torch.device("cpu")))
    torch.manual_seed(0)
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    if args.hidden:  # as bench.py narrows its smoke-test model
        overrides.update(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_attention_heads=2,
                         vocab_size=1000)
    with torch.device(device):
        model = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
            num_labels=2, problem_type="single_label_classification", **overrides))
    if method != "floor":
        model = peft.get_peft_model(model, config)
    else:
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
        model.roberta.embeddings.register_forward_hook(lambda module, inputs, output: output.requires_grad_())
    return model.to(device).train()


def say(result):
    """A bench row's line: its time, or its error."""
    if "error" in result:
        print(f"  {result['row']} batch {result['batch']}: FAILED ({result['error']})", flush=True)
    else:
        launch = result.get("launch_ms")
        print(f"  {result['row']:<20} batch {result['batch']:<4} {result['ms']:8.3f} ms  (in a loop "
              f"{result['loop_ms']:.3f} ms, " + (f"host before its first graph {launch:.3f} ms, " if launch else "")
              + f"first step {result['first_step_s']:6.1f} s, loss {result['loss']:.4f}, {result['mode']}"
              + process_seconds(result) + ")", flush=True)


def process_seconds(result):
    """', its process S s (start, setup, model, steps: S s each)' where the row ran in a process of its own: the
    process's wall clock, then from its fork to its setup (parsing its flags), the device's setup (CUDA,
    cuBLAS's workspaces, the compile workers), building the model, and its steps (the first, compilation and capture,
    included); what is left is the process's exit. '' where it ran in this process."""
    if "process_s" not in result:
        return ""
    stages = [result.get(key) for key in ("start_s", "setup_s", "build_s", "timing_s")]
    return f", its process {result['process_s']:.1f} s" + (
        " (start, setup, model, steps: " + ", ".join(f"{t:.1f}" for t in stages) + " s)" if None not in stages else "")


def bench_row(libraries, args, row, batch, device):
    """One row: a fresh model (ours: bench.build via capture_vs_reduce_overhead.fresh), timed by cvr.time_step."""
    side, method, variant = parts(row)
    started = time.perf_counter()
    if side == "ours":
        way = "ours" if variant == "default" else f"ours-{variant}"  # capture_vs_reduce_overhead's variant
        model, train_step = cvr.fresh(args, method, way, batch, device)
    else:
        torch._dynamo.reset()
        model = hf_bench_model(libraries, args, method, device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                      **({"fused": True} if device.type == "cuda" else {}))
        if variant == "ro" and device.type == "cuda":  # as our graphed step: MAGMA's batched LU cannot be captured
            capturable_linear_algebra()
        train_step = HFStep(model, optimizer, device=device, compiled=variant == "ro", options=compile_options(device))
    built = time.perf_counter()
    vocab = model.config.vocab_size
    result = dict(row=row, batch=batch, mode=train_step.mode, **cvr.time_step(
        train_step, cvr.random_parts(vocab, batch, args.seq), batch, args.warmup, args.steps, device))
    result.update(build_s=round(built - started, 2), timing_s=round(time.perf_counter() - built, 2))
    say(result)
    return result


def hf_epoch_row(libraries, args, row, train, dev, pad_id, device):
    """One SST-2 epoch of transformers' BertForSequenceClassification (MiniLM's weights) + PEFT LoRA configured as
    ours (peft_config of capture_vs_reduce_overhead.lora_run's model), eager or under reduce-overhead, each batch
    at its own padded length; dev accuracy eager."""
    transformers, peft = libraries
    steps = cvr.epoch_steps(args, len(train[0]))
    config = peft_config(peft, cvr.lora_run(args, torch.device("cpu"), steps)[0])
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(args.minilm, num_labels=2, dtype=torch.float32)
    model.config.problem_type = "single_label_classification"
    model = peft.get_peft_model(model, config).to(device).train()
    optimizer, scheduler = cvr.lora_optimizer(model.named_parameters(), lambda name: "modules_to_save" in name,
                                              args, device, steps)
    train_step = HFStep(model, optimizer, scheduler, device=device, compiled=row == "peft-reduce-overhead",
                        options=compile_options(device))
    wall, losses = cvr.timed_epoch(train_step, train, steps, args.batch, pad_id, device)
    forward = lambda input_ids, mask, types: model(input_ids=input_ids, attention_mask=mask,
                                                   token_type_ids=types).logits
    accuracy = cvr.accuracy(model, *dev, pad_id, device, args.batch, forward=forward)
    return cvr.epoch_summary(row, wall, losses, accuracy, train_step.mode)


# -----------------------------------------------------------------------------
# each row in its own process


def parser():
    p = Parser(description=__doc__.strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=cvr.names(ROWS), default=",".join(ROWS), help="bench rows ('' skips the bench)")
    p.add_argument("--batches", type=bench.int_list(1, 4096), default="32")
    p.add_argument("--seq", type=bounded(int, 1, 511), default=128)
    p.add_argument("--layers", type=bounded(int, 0, 1000), default=0, help="override the layer count (0: 12)")
    p.add_argument("--hidden", type=bounded(int, 0, 65537), default=0, help="override the width (smoke tests)")
    p.add_argument("--steps", type=bounded(int, 1), default=30, help="timed steps per row")
    p.add_argument("--warmup", type=bounded(int, 0), default=10, help="untimed steps after the first")
    p.add_argument("--minilm", help="all-MiniLM-L6-v2 folder: runs the real SST-2 epoch (with --sst2)")
    p.add_argument("--sst2", help="GLUE SST-2 folder (train.tsv, dev.tsv)")
    p.add_argument("--epoch-rows", type=cvr.names(EPOCH_ROWS), default=",".join(EPOCH_ROWS))
    p.add_argument("--epoch-steps", type=bounded(int, 0), default=0,
                   help="stop each epoch after this many steps (0: all)")
    p.add_argument("--batch", type=bounded(int, 1), default=32, help="the real run's batch")
    p.add_argument("--max-length", type=bounded(int, 1, 513), default=64, help="the real run's max length")
    p.add_argument("--lr", type=bounded(float, 0.0), default=5e-4)
    p.add_argument("--lr-head", type=bounded(float, 0.0), default=5e-4)
    p.add_argument("--device", default=None, help="cuda (default) or cpu (a smoke test)")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--table", metavar="JSON", help="print the tables of a file written with --json, and run nothing")
    p.add_argument("--same-process", action="store_true",
                   help="run the rows one after another in this process (default: each in its own)")
    p.add_argument("--row-timeout", type=bounded(float, 0.0), default=0.0,
                   help="seconds a row's process may take before it is stopped and the row reported so (0: no limit)")
    p.add_argument("--compile-workers", type=bounded(int, 0), default=1,
                   help="Inductor's compile workers for the bench rows (1: compile in the row's process; 0: torch's "
                        "default pool, N: N workers, started and waited for before the row's model is built)")
    p.set_defaults(model="roberta-base")  # the shape of our rows (bench.build)
    return p


def parse_args(argv):
    p = parser()
    args = p.parse_args(argv)
    return args if args.table else cvr.check_args(p, args, args.rows)  # --table runs nothing


def command(args, **changes):
    """This script's command line for one row's process: `args` as parsed, with `changes`, spelled out flag by
    flag (lists comma-separated, as they were given)."""
    argv = [sys.executable, str(Path(__file__).resolve())]
    for action in parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = changes.get(action.dest, getattr(args, action.dest))
        if isinstance(action, argparse._StoreTrueAction):
            argv += [action.option_strings[0]] if value else []
        elif value is not None:
            argv += [action.option_strings[0], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return argv


def in_own_process(argv, path, keys, timeout=0):
    """Run one row's command line (this script's flags; it writes its report to `path`) in a process of its own
    -> its row (its report's only bench or epoch row, with the row's own error where the process caught one, and the
    process's wall seconds), or `keys` with the process's exit status and the first line of the error it died of, or
    with the `timeout` (seconds, 0: none) it ran past: then it is stopped, its compile workers with it (its own
    process group). So is it when this process is interrupted (Ctrl-C reaches only this process's group).
    The process is forked from this one (fork_row), so it starts with the imports done."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        pid = fork_row(argv[2:], stderr)
        status = None
        try:
            status = wait_for_row(pid, timeout)
        finally:
            stop(pid, reaped=status is not None)
        stderr.seek(0)
        errors = stderr.read()
    if status is None:
        return dict(keys, error=f"stopped: still running after {timeout:g} s", process_s=timeout)
    wall = dict(process_s=round(time.perf_counter() - t0, 1))
    rows = json.loads(Path(path).read_text())["bench" if "row" in keys else "epoch"] if Path(path).is_file() else []
    if len(rows) == 1:
        return dict(rows[0], **wall)
    return dict(keys, **wall, error=f"exit status {status}: {first_line_of_error(errors)[:200]}"
                if status else "no row reported")


def row_main(flags):
    """What a row's process runs: this script's command line, `flags` being the row's (command(...)[2:])."""
    return cli(flags)


def fork_row(flags, stderr):
    """Fork this process into a row's -> its pid. The row's process, in a process group of its own, its output
    discarded and its errors written to the file `stderr`, runs row_main(flags) and exits with its status.
    Forked, it starts with this process's imports (torch; transformers and PEFT for a PEFT row) instead of paying
    them again: a fresh Python took 8-16 s to reach its setup on the H100 machine (REPRODUCE §3k). This process
    neither touches the GPU nor computes with torch before it forks: CUDA cannot be used in a process forked after
    it was, and a process forked after an OpenMP parallel region hangs in its first one."""
    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialized in the table's process: its rows' processes could not use it")
    sys.stdout.flush()
    sys.stderr.flush()
    launched = time.time()
    with warnings.catch_warnings():  # Python 3.12 warns of any thread; here the imports' (torch's import starts one)
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid:
        with contextlib.suppress(OSError):  # the child does the same; whichever runs first, the group exists
            os.setpgid(pid, pid)
        return pid
    status = 1
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        quiet = os.open(os.devnull, os.O_RDWR)
        os.dup2(quiet, 0)
        os.dup2(quiet, 1)
        os.dup2(stderr.fileno(), 2)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", buffering=1, closefd=False)
        os.environ[LAUNCHED] = repr(launched)
        status = row_main(flags)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)  # never back into the caller's code; nothing of its own to tear down


def wait_for_row(pid, timeout):
    """The exit status of row process `pid` once it ends, or None once it has run `timeout` seconds (0: no limit)."""
    deadline = time.monotonic() + timeout if timeout else float("inf")
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def terminated_as_exit():
    """SIGTERM (`timeout`, a job's end) raises SystemExit here, as Ctrl-C raises KeyboardInterrupt, so that the row's
    process, in a process group of its own that no signal to this one reaches, is stopped too (in_own_process)."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop(pid, reaped):
    """Kill row process `pid` and everything it started (its process group; after the row ends, what is left of
    it: Inductor's compile workers), and reap it unless it was."""
    with contextlib.suppress(ProcessLookupError):  # the group has already gone
        os.killpg(pid, signal.SIGKILL)
    if not reaped:
        os.waitpid(pid, 0)


def first_line_of_error(stderr):
    """The first line of the error a process died of: after its last traceback, the first line that is not one of
    the traceback's (indented) frames; without a traceback, the last line it wrote."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    error = [line for line in lines[starts[-1] + 1:] if not line[0].isspace()] if starts else []
    return error[0] if error else lines[-1] if lines else ""


def run_each_in_own_process(args, libraries, report):
    """Every (row, batch) and epoch row in a process of its own (in_own_process), in turn; the rows into `report`."""
    with tempfile.TemporaryDirectory(prefix="peft_bench.") as folder, terminated_as_exit():
        for batch, row in ((b, r) for b in args.batches for r in args.rows if libraries or r.startswith("ours")):
            path = Path(folder) / f"{row}.{batch}.json"
            argv = command(args, rows=[row], batches=[batch], minilm=None, sst2=None, json=path, same_process=True)
            result = in_own_process(argv, path, dict(row=row, batch=batch), args.row_timeout)
            say(kept(report, "bench", result, args.json))
        epoch_rows = [r for r in args.epoch_rows if libraries or r.startswith("ours")] if args.minilm else []
        if epoch_rows:
            sst2(args)  # here, once: each epoch row's process is forked with it
        for row in epoch_rows:
            path = Path(folder) / f"epoch.{row}.json"
            argv = command(args, rows=[], epoch_rows=[row], json=path, same_process=True)
            result = kept(report, "epoch", in_own_process(argv, path, dict(variant=row), args.row_timeout), args.json)
            print(f"  epoch {row}: FAILED ({result['error']})" if "error" in result else
                  f"  epoch {row:<27} {result['wall_s']:8.1f} s  ({result['steps']} steps, dev accuracy "
                  f"{result['dev_accuracy']:.4f}, {result['mode']})", flush=True)


def kept(report, kind, result, path):
    """`result` appended to report[kind], the report's device taken from the first row that names it, and the report
    so far saved to `path`, so that a table stopped midway keeps its rows and its device -> `result`."""
    report[kind].append(result)
    report["device"] = report["device"] or result.get("device")
    cvr.save(report, path)
    return result


def run_in_this_process(args, libraries, report):
    """Every row in this process, one after another (--same-process; a row's process runs its one row so)."""
    started = time.time()
    device, report["device"] = cvr.setup(args)
    workers = args.compile_workers if any(map(compiles, args.rows)) else 1  # none for rows that compile nothing
    default_threads = compile_workers(workers, device)
    launched = float(os.environ.get(LAUNCHED, started))  # the parent's clock at this process's start, if it set one
    stamp = dict(device=report["device"], process=os.getpid(), start_s=round(started - launched, 2),
                 setup_s=round(time.time() - started, 2))
    for batch, row in ((b, r) for b in args.batches for r in args.rows if libraries or r.startswith("ours")):
        report["bench"].append(dict(cvr.attempt(dict(row=row, batch=batch), bench_row, libraries, args, row, batch,
                                                device), **stamp))
        cvr.save(report, args.json)
    if args.minilm:
        # as a user's run compiles: the pool started before the timed epoch, where its rows compile anything
        cvr.inductor_threads(default_threads, warm=any(map(epoch_compiles, args.epoch_rows)))
        train, dev, pad_id = sst2(args)
        for row in (r for r in args.epoch_rows if libraries or r.startswith("ours")):
            result = (cvr.attempt(dict(variant=row), cvr.epoch_row, args, row, train, dev, pad_id, device)
                      if row.startswith("ours") else
                      cvr.attempt(dict(variant=row), hf_epoch_row, libraries, args, row, train, dev, pad_id, device))
            report["epoch"].append(dict(result, **stamp))
            cvr.save(report, args.json)


def sst2(args):
    """cvr.load_sst2(args), tokenized once per table: the table's process tokenizes before it forks the real run's
    rows (plain Python, no torch), and their processes find it done (seconds per row)."""
    key = (args.minilm, args.sst2, args.max_length)
    if key not in TOKENIZED:
        TOKENIZED[key] = cvr.load_sst2(args)
    return TOKENIZED[key]


def compile_workers(workers, device):
    """Inductor's compile workers for the bench rows -> torch's default number. 1: none, each kernel compiled in this
    process; otherwise `workers` (0: torch's default) in a pool started now and waited for, so that no worker
    starts beside a timed step and the row's first step (a compiled row's compilation) is what a user's run takes.
    On the CPU (smoke tests: nothing goes through Inductor) no pool is started."""
    default = cvr.inductor_threads(1)
    if workers != 1 and device.type == "cuda":
        cvr.inductor_threads(workers or default, warm=True)
    return default


# -----------------------------------------------------------------------------
# the table


def bench_table(rows):
    """Per batch, one line per method and way of ours (ours-METHOD as 'METHOD adapters', ours-METHOD-layers as
    'METHOD layers', ...): ours, PEFT-RO and PEFT-eager ms ('failed' where a row raised, '-' where it did not run),
    PEFT-RO / ours and PEFT-eager / ours (> 1: ours faster), PEFT-RO / ours of the steps in a row (loop_ms), and
    whether ours is at least BAR times faster than PEFT-RO; the failed rows' errors below; per batch,
    print_verdicts: train.py's default step against the bar, a short run's (ours-METHOD-none) and a long run's
    (ours-METHOD-layers: run.config.decide_compile's choice from LAYERS_FROM_STEPS steps), and a run of any length
    (worst_run). -> ({batch: {method: PEFT-RO / ours, or None}} of the short runs' default, the same of the long
    runs', {batch: {method: worst_run's {ratio, steps}, or None}}) over the shared methods."""
    print(f"\n# bench: median optimizer step, ms (PEFT / ours > 1: ours faster; loop: the steps in a row)\n"
          f"{'method':<17} {'batch':>5} {'ours':>8} {'peft-ro':>8} {'peft-eager':>10} {'ro/ours':>8} "
          f"{'eager/ours':>10} {'loop ro/ours':>12}  ours >= {BAR}x ro")
    cell = lambda r, width: f"{r['ms']:{width}.3f}" if r and "ms" in r else f"{'failed' if r else '-':>{width}}"
    ratio = lambda peft, ours, key="ms": peft[key] / ours[key] if peft and ours and key in peft and key in ours else None
    short_runs, long_runs, any_run = {}, {}, {}
    for batch in dict.fromkeys(r["batch"] for r in rows):
        by_row = {r["row"]: r for r in rows if r["batch"] == batch}
        methods = dict.fromkeys(parts(row)[1] for row in ROWS if row in by_row)
        # the row of ours for (method, variant); the floor's default row compiles nothing: it is the floor's 'none'
        name = lambda method, variant: f"ours-{method}" + (
            "" if variant == "default" or (method, variant) == ("floor", "none") else f"-{variant}")
        lines = [(m, v) for m in methods for v in ("none", "layers", "default", "model")
                 if (m, v) != ("floor", "default") and (name(m, v) in by_row or v == "none")]
        short_runs[batch], long_runs[batch] = {}, {}
        any_run[batch] = {m: worst_run(by_row.get(f"peft-{m}-ro"), by_row.get(name(m, "none")),
                                       by_row.get(name(m, "layers"))) for m in methods if m in SHARED}
        for method, variant in lines:
            ours = by_row.get(name(method, variant))
            ro, eager = by_row.get(f"peft-{method}-ro"), by_row.get(f"peft-{method}-eager")
            over_ro, over_eager, loop_over_ro = ratio(ro, ours), ratio(eager, ours), ratio(ro, ours, "loop_ms")
            if method in SHARED and variant in ("none", "layers"):
                (short_runs if variant == "none" else long_runs)[batch][method] = over_ro
            label = f"{method} {'adapters' if variant == 'default' else variant}"
            print(f"{label:<17} {batch:>5} {cell(ours, 8)} {cell(ro, 8)} "
                  f"{cell(eager, 10)} " + (f"{over_ro:8.3f}" if over_ro else f"{'-':>8}") + " "
                  + (f"{over_eager:10.3f}" if over_eager else f"{'-':>10}") + " "
                  + (f"{loop_over_ro:12.3f}" if loop_over_ro else f"{'-':>12}")
                  + ("" if over_ro is None else "  yes" if over_ro >= BAR else "  NO"))
        for r in by_row.values():
            if "error" in r:
                print(f"  {r['row']} failed: {r['error']}")
        print_verdicts(batch, short_runs[batch], long_runs[batch], any_run[batch])
    return short_runs, long_runs, any_run


def print_verdicts(batch, short_run, long_run, any_run):
    """Whether train.py's default meets BAR for every shared method: a short run's step ({method: PEFT-RO / none}),
    a long run's ({method: PEFT-RO / layers}), and a run of any length ({method: worst_run's}); a line each."""
    for ratios, which in ((short_run, "a short run's default step (CUDA graphs alone)"),
                          (long_run, f"a long run's default step ({LAYERS_FROM_STEPS:,} steps or more: layers "
                                     f"compiled)")):
        if ratios:
            print(f"batch {batch}: {which} is at least {BAR}x faster than PEFT under reduce-overhead for every "
                  f"method PEFT shares with us: {verdict(ratios)}")
    if any_run:
        ratios = {m: w and w["ratio"] for m, w in any_run.items()}
        print(f"batch {batch}: a run of any length on this shape (train.py's default: none below "
              f"{LAYERS_FROM_STEPS:,} steps, layers from there; its first step, then median steps) ends at least "
              f"{BAR}x sooner than under PEFT reduce-overhead for every method PEFT shares with us: "
              f"{verdict(ratios)}; the least over run lengths: {least_over_lengths(any_run)}")


def least_over_lengths(runs):
    """'lora 1.263x endless, dora 1.540x at 9,999 steps' for worst_run's {method: {ratio, steps}, or None}."""
    return ", ".join(f"{m} {w['ratio']:.3f}x " + (f"at {w['steps']:,} steps" if w["steps"] else "endless")
                     for m, w in runs.items() if w) or "-"


def worst_run(ro, short, long, layers_from=LAYERS_FROM_STEPS):
    """PEFT-RO's wall clock over train.py's default's on this shape, at the run length where it is least -> {ratio,
    steps (None: endless)}, or None where a row did not run. A run of N steps takes its first step (compilation and
    capture) and N - 1 median steps; the default is `short`'s (none) below `layers_from` steps, `long`'s (layers)
    from there. Within each, the ratio (a + b N) / (c + d N) moves one way with N, so its least is at an end: 1 or
    layers_from - 1 steps, layers_from steps or endless (b / d)."""
    if not all(r and "ms" in r for r in (ro, short, long)):
        return None
    wall = lambda r, steps: r["first_step_s"] + (steps - 1) * r["ms"] / 1e3
    over = lambda steps, ours: wall(ro, steps) / wall(ours, steps) if wall(ours, steps) else math.inf
    ends = [(over(1, short), 1), (over(layers_from - 1, short), layers_from - 1),
            (over(layers_from, long), layers_from), (ro["ms"] / long["ms"], None)]
    ratio, steps = min(ends, key=lambda end: end[0])
    return dict(ratio=ratio, steps=steps)


def verdict(ratios):
    """'yes', 'NO (the methods short of BAR)' or 'open (the shared methods without a ratio)' for {method: ratio}."""
    missing = [m for m in SHARED if ratios.get(m) is None]
    short = [f"{m} {value:.3f}x" for m, value in ratios.items() if value is not None and value < BAR]
    return "NO (" + ", ".join(short) + ")" if short else f"open (no ratio for {', '.join(missing)})" if missing else "yes"


def run(args):
    peers = any(not row.startswith("ours") for row in [*args.rows, *(args.epoch_rows if args.minilm else [])])
    libraries = hf_libraries() if peers else None  # a process of our rows alone starts without importing them
    versions = {"torch": torch.__version__, **{lib.__name__: lib.__version__ for lib in libraries or ()}}
    print(f"# {', '.join(f'{k} {v}' for k, v in versions.items())}" + (
        f"; roberta-base shape, seq {args.seq}, bf16 autocast, fused AdamW, median of {args.steps} steps after "
        f"{args.warmup} (and the first)" if args.rows else "")
        + ("; the rows in this process" if args.same_process else "; each row in its own process")
        + (f"; Inductor's compile workers: {args.compile_workers or 'torch default'}" if args.rows else ""), flush=True)
    report = dict(args=vars(args), device=None, versions=versions, bench=[], epoch=[])
    (run_in_this_process if args.same_process else run_each_in_own_process)(args, libraries, report)
    report.update(tables(report))
    cvr.save(report, args.json)
    return report


def tables(report):
    """Print the report's bench and real-run tables -> its verdicts (the report's keys)."""
    verdicts = {}
    if report["bench"]:
        print(f"# {report['device'] or 'no row reported its device'}")
        keys = "peft_ro_over_ours", "peft_ro_over_ours_layers", "peft_ro_over_ours_any_run"
        verdicts = dict(zip(keys, bench_table(report["bench"])))
    if report["epoch"]:
        cvr.epoch_table(report["epoch"], against="peft-reduce-overhead")
    return verdicts


def reprint(path):
    """--table: the tables of a file this script wrote with --json, with today's verdicts; nothing runs."""
    try:
        report = json.loads(Path(path).read_text())
        rows = report["bench"], report["epoch"]
        named = lambda r, *keys: isinstance(r, dict) and all(key in r for key in keys)
        if not all(named(r, "row", "batch") for r in rows[0]) or not all(named(r, "variant") for r in rows[1]):
            raise ValueError("a row without its name")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UsageError(f"--table: {path} is not a JSON file that peft_bench.py --json wrote "
                         f"({type(e).__name__}: {e})") from None
    print(f"# {path}: {', '.join(f'{k} {v}' for k, v in report.get('versions', {}).items())}")
    return tables(dict(report, bench=rows[0], epoch=rows[1]))


def cli(argv=None):
    try:
        args = parse_args(argv)
        reprint(args.table) if args.table else run(args)
        return 0
    except UsageError as e:
        print(f"peft_bench.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
