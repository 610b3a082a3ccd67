"""
run/folder.py: a run's folder, held by one run at a time, and what train.py writes into it.

    out/.lock               held (flock) while a run works in the folder; the kernel drops it however the run ends
    out/log.jsonl           one JSON line per evaluation and every --log-every steps
    out/checkpoint.pt       everything a resumed run needs, written atomically (torch.save, weights_only-loadable)
    out/adapter.safetensors what the run learnt (adapters + head), with its method and hyperparameters
    out/results.json        the configuration, the best and final evaluations, parameters, versions, wall time

Every file is written to a temporary name and renamed (hub.atomic_write), so a kill or a full disk
never leaves a half-written file in place of a good one; a failed write names the file and says what is
still intact. A checkpoint is read with torch.load(weights_only=True) and checked entry by entry before
anything runs.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import signal
import threading
from pathlib import Path

import numpy as np
import torch

import spectral_ft
from data import TASKS, main_metric
from run.errors import TYPE_NAMES, DiskError, Interrupted, NonFiniteError, UsageError, fits
from encoder.hub import atomic_write, write_safetensors


def interrupted_outside_the_loop(out, resumed):
    """Ctrl-C before the loop (or a second one in it): the run can be resumed from the checkpoint on disk, if
    there is one of this run (or of the run it resumes)."""
    if (out / "checkpoint.pt").is_file() and (out in HELD or resumed):
        return Interrupted(f"continue with --resume {out} (from its last checkpoint)")
    return Interrupted("no checkpoint was written yet, so nothing can be resumed; run again to start over "
                       "(--save-every N or --save-minutes M save sooner)")


# -----------------------------------------------------------------------------
# the folder: held by one run at a time

HELD = {}  # folder -> its open .lock file, held for as long as this process runs in the folder


def hold_folder(out):
    """Make `out` and hold it: an exclusive flock on out/.lock, which the kernel drops when this
    process ends, however it ends (so a killed run never leaves a stale lock). A second run into a held
    folder is refused. Under torchrun only process 0 writes, so only it holds the folder."""
    made = [p for p in [out, *out.parents] if not p.exists()]  # the folders this run makes (runs/ too)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / ".lock", "a")
    except OSError as e:
        what = "is a file, not a folder" if out.is_file() else f"cannot be written ({e.strerror or e})"
        raise UsageError(f"--out {out} {what}: choose a folder you can write to") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(lock.fileno()).st_ino != os.stat(out / ".lock").st_ino:  # a run ending removed it meanwhile
            raise BlockingIOError
    except OSError:
        lock.close()
        raise UsageError(f"--out {out} is in use by another run (which holds {out / '.lock'}): wait for it to "
                         f"end, or choose another --out") from None
    lock.made = made
    HELD[out] = lock


def release_folders():
    """Drop the locks of main(), removing the .lock files while still holding them (a run that opened one
    meanwhile sees it gone, in hold_folder); the folders this run made and wrote nothing into (bad input
    found after they were made: the run folder, and runs/ if it made that too) are removed too."""
    while HELD:
        out, lock = HELD.popitem()
        with contextlib.suppress(OSError):
            (out / ".lock").unlink()
            for folder in lock.made:  # innermost first; rmdir refuses a folder that is not empty
                folder.rmdir()
        lock.close()


class StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM (what a cluster scheduler sends) while the loop runs: the step in flight
    completes, then the loop saves a checkpoint and stops (train.py). A second Ctrl-C stops at once."""

    def __init__(self):
        self.signum, self.previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only its handlers can be set
            self.previous = {s: signal.signal(s, self.request) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def request(self, signum, frame):
        if self.signum == signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def intact(out, saved_at):
    """What a failed run leaves that is still good: the checkpoint on disk, if any."""
    return f"{out / 'checkpoint.pt'} (step {saved_at}) is intact" if saved_at is not None else "no checkpoint was written"


@contextlib.contextmanager
def writing(path, out, saved_at):
    """A failed write (a full disk, ...) names the file and what is still safe."""
    try:
        yield
    except OSError as e:
        raise DiskError(f"could not write {path} ({e.strerror or e}); {intact(out, saved_at)}") from None


# -----------------------------------------------------------------------------
# the log

def start_log(out, resumed_at=None):
    """log.jsonl, empty for a new run; a resumed run keeps the lines up to its checkpoint's step (a killed
    run may have logged past it)."""
    path, kept = out / "log.jsonl", []
    if resumed_at is not None and path.exists():
        for line in path.read_text().splitlines():
            try:
                kept += [line] if json.loads(line)["step"] <= resumed_at else []
            except (ValueError, KeyError, TypeError):
                pass  # a line cut off by the kill
    with writing(path, out, resumed_at), atomic_write(path, "w") as f:
        f.write("".join(line + "\n" for line in kept))


def append_log(out, line, saved_at):
    with writing(out / "log.jsonl", out, saved_at), open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


# -----------------------------------------------------------------------------
# what a run learns, and the checks on it

def trainable_state(model, method):
    """What a run learns: the adapters' tensors (spectral_ft.adapter_state_dict) and the head's, or every
    weight for --method full."""
    if method == "full":
        return {name: p.detach() for name, p in model.named_parameters()}
    head = set(model.head_parameter_names())
    state = {} if method == "head" else spectral_ft.adapter_state_dict(model)
    state.update({name: p.detach() for name, p in model.named_parameters() if name in head})
    return state


def load_trainable_state(model, method, state, source):
    """Copy a run's saved tensors (trainable_state's) into `model`: the adapters' (spectral_ft.adapter_state_dict) and the head's
    parameters, or every parameter for --method full. Anything missing, extra, misshapen or non-finite is a
    ValueError naming `source`."""
    params = dict(model.named_parameters())
    plain = set(params) if method == "full" else set(model.head_parameter_names())
    adapter_keys = set() if method in ("full", "head") else set(spectral_ft.adapter_state_dict(model))
    missing, extra = sorted((plain | adapter_keys) - set(state)), sorted(set(state) - plain - adapter_keys)
    if missing or extra:
        what = "; ".join(f"{label} {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                         for label, names in (("lacks", missing), ("has unknown", extra)) if names)
        raise ValueError(f"{source} does not fit the run's {method} model: it {what} (saved from another method or "
                         f"other targets?)")
    try:
        if adapter_keys:
            spectral_ft.load_adapter_state_dict(model, {k: state[k] for k in adapter_keys})
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    with torch.no_grad():
        for name in sorted(plain):
            tensor = state[name]
            if tensor.shape != params[name].shape or not tensor.is_floating_point():
                raise ValueError(f"{source}: tensor {name!r} is {tuple(tensor.shape)} {tensor.dtype}, the model needs "
                                 f"{tuple(params[name].shape)} floating point")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{source}: tensor {name!r} holds non-finite values (the run diverged)")
            params[name].copy_(tensor)


def check_finite(state, when):
    bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"{when}: weights {', '.join(bad[:3])} are not finite; nothing was saved")


def rng_state():
    """The random generators a run draws from (torch's, CUDA's), as tensors torch.load(weights_only=True) reads."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):  # [] without CUDA
        torch.cuda.set_rng_state(cuda_state, device)


# -----------------------------------------------------------------------------
# the checkpoint: everything a resumed run reads, checked before anything runs

PROGRESS_TYPES = dict(step=int, epoch=int, position=int, best=(dict, None), last=(dict, None), elapsed=float,
                      loss_sum=float, loss_count=int)  # RunState's fields that a checkpoint keeps
LATER_PROGRESS = dict(log_sum=(float, 0.0), log_count=(int, 0))  # kept since --log-every: (type, value before)
CHECKPOINT_TYPES = dict(config=str, trainable=dict, optimizer=dict, scheduler=dict, scaler=dict, rng=dict,
                        **PROGRESS_TYPES)  # and the method's schedule's state (None without one)


def save_checkpoint(out, config, trainable, training, progress, data, saved_at):
    """out/checkpoint.pt: the configuration (a mapping), the learnt tensors, the optimizer's, schedulers' and
    random generators' states, the run's progress (RunState's PROGRESS_TYPES fields) and its data's fingerprint."""
    optimizer, scheduler, scaler, schedule = training
    with writing(out / "checkpoint.pt", out, saved_at), atomic_write(out / "checkpoint.pt") as f:
        torch.save(dict(config=json.dumps(config), trainable=trainable, optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                        schedule=schedule.state_dict() if schedule else None, rng=rng_state(), data=data, **progress), f)


def read_run_checkpoint(folder, content=True):
    """The checkpoint.pt of `--resume folder`, every entry checked (content=False: its entries but the
    configuration unchecked beyond being JSON, all that --print-config reads; config.RunConfig.from_json
    checks the configuration). A file that is not one is one line."""
    path = Path(folder) / "checkpoint.pt"
    if not path.is_file():
        raise UsageError(f"--resume {folder}: no checkpoint.pt there (runs write one at each epoch end "
                         f"and every --save-every steps)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        json.loads(checkpoint["config"])
    except Exception as e:
        raise UsageError(f"--resume {folder}: {path} is not a checkpoint written by train.py "
                         f"({type(e).__name__}: {e})") from None
    check_checkpoint(checkpoint, f"--resume {folder}: {path}", content)
    return checkpoint


def restore(checkpoint, model, method, training, where):
    """Load a checked checkpoint into the model, optimizer and schedules -> its progress (PROGRESS_TYPES and
    LATER_PROGRESS, whose values before they were kept stand in for them in older checkpoints)."""
    optimizer, scheduler, scaler, schedule = training
    try:
        load_trainable_state(model, method, checkpoint["trainable"], where)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        if schedule:
            schedule.load_state_dict(checkpoint.get("schedule") or checkpoint[method])  # older: under the method's name
        set_rng_state(checkpoint["rng"])  # process 0's generators; the others reseed
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as e:
        raise UsageError(f"{where}: the checkpoint does not fit this run: {e}") from None
    return ({key: checkpoint[key] for key in PROGRESS_TYPES}
            | {key: checkpoint.get(key, before) for key, (_, before) in LATER_PROGRESS.items()})


def _need(mapping, types, what, where):
    if not isinstance(mapping, dict):
        raise UsageError(f"{where} is damaged: its {what} is {type(mapping).__name__}, not a mapping")
    for key, kinds in types.items():
        if key not in mapping:
            raise UsageError(f"{where} is damaged: its {what} lacks {key!r}")
        if not fits(mapping[key], kinds):
            allowed = " or ".join(TYPE_NAMES[k] for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
            raise UsageError(f"{where} is damaged: its {what}'s {key!r} is {mapping[key]!r}, not {allowed}")


def check_checkpoint(checkpoint, where, content=True):
    """UsageError naming the first missing or ill-typed entry of a loaded checkpoint (content=False: none,
    as --print-config reads the configuration alone; config.RunConfig.from_json checks that)."""
    if content:
        _need(checkpoint, CHECKPOINT_TYPES, "content", where)
        _need(checkpoint, {k: kind for k, (kind, _) in LATER_PROGRESS.items() if k in checkpoint}, "content", where)
        if not isinstance(checkpoint.get("schedule"), (dict, type(None))):
            raise UsageError(f"{where} is damaged: its schedule state is not a mapping")
    rng = checkpoint["rng"] if content else None
    if content and not (isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8
                        and isinstance(rng.get("cuda"), list)):
        raise UsageError(f"{where} is damaged: its 'rng' does not hold the random generators' states")


# -----------------------------------------------------------------------------
# the results

BEST_ADAPTER = "best/adapter.safetensors"  # the adapter of the best dev evaluation, in the run folder


def write_adapter(path, trainable, config, out, saved_at, **extra):
    """What the run learnt (adapters + head), with its method, hyperparameters, model, task and targets (and
    `extra`, e.g. the step and metrics of the best evaluation) as safetensors metadata."""
    metadata = dict(format="pt", method=config.method, hyperparameters=json.dumps(config.hyperparameters),
                    model=config.model, task=TASKS[config.task].name, targets=json.dumps(config.targets),
                    **{k: json.dumps(v) for k, v in extra.items()})
    with writing(path, out, saved_at):
        path.parent.mkdir(exist_ok=True)
        write_safetensors(path, {k: v.contiguous() for k, v in trainable.items()}, metadata)


def results_of(config, best, final, counts, world, wall_time_s, device):
    """results.json: the configuration, the best and final evaluations, the trainable parameters, the processes,
    the wall time, the versions and the device."""
    return dict(config=config.to_json(), seed=config.seed, main_metric=main_metric(TASKS[config.task].name), best=best,
                final=final, trainable_parameters=counts, processes=world, wall_time_s=round(wall_time_s, 3),
                versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__),
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu")


def write_results(out, trainable, config, results, saved_at):
    """adapter.safetensors (the final weights) and results.json."""
    write_adapter(out / "adapter.safetensors", trainable, config, out, saved_at)
    with writing(out / "results.json", out, saved_at), atomic_write(out / "results.json", "w") as f:
        f.write(json.dumps(results, indent=2) + "\n")


# -----------------------------------------------------------------------------
# the data a run reads: a resumed run must read the same

def data_fingerprint(files):
    """{file name: [size in bytes, sha256 hex]} of the files a run reads."""
    def sha256(path):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    return {Path(f).name: [Path(f).stat().st_size, sha256(f)] for f in files}


def check_same_data(saved, files, where):
    """Refuse to resume onto other data than the run started with (checkpoints before this check hold none)."""
    if saved is None:
        return
    now = data_fingerprint(files)
    for path in files:
        name = Path(path).name
        if now.get(name) != saved.get(name):
            was = f"{saved[name][0]:,} bytes, sha256 {saved[name][1][:12]}" if name in saved else "not read"
            raise UsageError(f"{where}: {path} is not the file the run started with ({was}; now {now[name][0]:,} "
                             f"bytes, sha256 {now[name][1][:12]}): a resumed run reads the same data")
