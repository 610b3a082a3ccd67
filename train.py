"""
Fine-tune a BERT / RoBERTa / DeBERTa-v3 classifier on a GLUE task with a spectral PEFT method, end to end.

    python train.py --method loca --model roberta-base --task rte    # LoCA's RTE run (GPU + internet)
    python train.py --model tiny                                      # offline pipeline check, CPU, < 1 min
    python train.py --method fora --n 250 --count-params              # trainable parameters, no download
    python train.py --method vera --model roberta-large --task mrpc --print-config   # the paper's row, as JSON
    python train.py --resume runs/loca-rte-roberta-base-s0-1a2b3c4d   # continue a stopped run in its folder
    torchrun --nproc_per_node=2 train.py --method loca --model roberta-large   # one process per GPU (DDP)

A run, top to bottom: configuration (the papers' settings for (method, model family, task), then the
flags), data (GLUE TSVs, tokenized once, padded per batch), model (a pretrained encoder with
spectral_ft adapters), optimizer (AdamW with adapter / head / LoCA-location groups, linear warmup then
linear decay), the loop (autocast, LoCA's alternating schedule, checkpoints; on a GPU the adapted layers
torch.compiled (--compile) and each step's forward and backward replayed as a CUDA graph unless --eager:
TrainStep), evaluation on dev after
every epoch, and the files in --out: log.jsonl, checkpoint.pt, adapter.safetensors, results.json.
A run holds its folder (a lock the kernel drops when the process ends), so two runs never share one.
Exit status: 0 done; 1 stopped (non-finite loss, network, full disk); 2 bad input, named in one line;
130 interrupted (Ctrl-C).
"""
import argparse
import contextlib
import fcntl
import functools
import hashlib
import inspect
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

import spectral_ft
from data import RTE_SAMPLE_DIR, TASKS, compute_metrics, default_root, download_glue, load_glue, main_metric
from hub import atomic_write, hf_hub_download, write_safetensors
from model import (KNOWN_CONFIGS, DebertaV2Config, SequenceClassifier, classifier_for, config_from_json, load_pretrained,
                   read_config, save_pretrained, tiny_config)
from settings import PAPER_SETTINGS, lookup
from tokenization import WordPieceTokenizer

# -----------------------------------------------------------------------------
# The papers' settings live in settings.py: rows keyed by (method, model family, task), GENERIC otherwise.

TRAINING_KEYS = ("epochs", "batch_size", "lr", "lr_head", "lr_locations", "weight_decay", "warmup_ratio",
                 "max_length", "B_a", "B_l", "T_s")
HYPERPARAMETER_DESTS = {"r": "r", "n": "n", "alpha": "alpha", "scaling": "scaling", "dropout": "dropout",
                        "d_initial": "d_initial", "transform": "transform", "gate": "gate",
                        "adapter_seed": "seed"}  # argparse dest -> spectral_ft's name (--seed is the run's seed)
RESUME_MAY_CHANGE = ("resume", "device", "precision", "save_every", "save_minutes", "eval_every", "micro_batch_size",
                     "eager", "compile")
NOT_IN_RUN_NAME = ("out", "save_every", "save_minutes", "eager", "compile")  # what a default folder's hash leaves out
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LOG_EVERY = 10  # steps between progress-bar updates (and non-finite checks) on a GPU


class UsageError(Exception):
    """Bad input. Reported as one line naming the argument and what is allowed; exit status 2."""


class NonFiniteError(RuntimeError):
    """The loss or a weight stopped being finite; exit status 1, last good checkpoint untouched."""


class DataDownloadError(OSError):
    """The GLUE download failed; exit status 1 (the network), and no empty data folder is left behind."""


class DiskError(OSError):
    """Writing an output file failed (a full disk, ...); exit status 1, last good checkpoint untouched."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C; its message says whether, and how, the run can be continued. Exit status 130."""


# -----------------------------------------------------------------------------
# command line


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; main() callers get an exception
        raise UsageError(message)


def number(kind, low, high=None, strict=False):
    """An argparse type: an int or float in [low, high) (or (low, high) with strict)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not (math.isfinite(value) and (value > low if strict else value >= low) and (high is None or value < high)):
            bound = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and < {high}")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


def build_parser():
    rows = {}  # method -> family -> tasks with a paper row
    for m, family, t in PAPER_SETTINGS:
        rows.setdefault(m, {}).setdefault(family, []).append(t)
    p = Parser(description=__doc__.split("\n")[1], epilog="Paper rows (settings.py; see --print-config): " + "; ".join(
                   f"{m} on {family} ({' '.join(tasks)})" for m, by in rows.items() for family, tasks in by.items())
               + ". Other combinations use generic defaults. Every flag overrides.")
    a = p.add_argument
    a("--method", choices=[*spectral_ft.METHODS, "full", "head"],
      help="default loca; full: every weight trains, head: classifier only")
    a("--targets", help="comma-separated suffixes of the linear layers to adapt "
                        "(default query,value; DeBERTa: query_proj,value_proj)")
    types = dict(r=int, n=int, alpha=float, scaling=float, dropout=float, d_initial=float, transform=str,
                 adapter_seed=int)
    for dest, name in HYPERPARAMETER_DESTS.items():  # the methods' keywords, named as in spectral_ft
        takes = ", ".join(m for m in spectral_ft.METHODS if name in spectral_ft.hyperparameters(m))
        kind = dict(action=argparse.BooleanOptionalAction) if dest == "gate" else dict(type=types[dest])
        what = "the adapter's own seed: " if dest == "adapter_seed" else ""
        a("--" + dest.replace("_", "-"), **kind, help=f"{what}{takes} (default: the paper's)")
    a("--model", help="hub id or local checkpoint folder (default roberta-base); 'tiny': a tiny random BERT, offline")
    a("--task", choices=sorted(TASKS), help="GLUE task (default rte)")
    a("--data-dir", help="folder holding the task's TSVs (default data/glue/<FOLDER>, or $GLUE_DIR/<FOLDER>, "
      "downloaded if missing)")
    a("--epochs", type=number(int, 1)), a("--max-steps", type=number(int, 1), help="overrides --epochs")
    a("--batch-size", type=number(int, 1), help="examples per optimizer step, over all processes of a torchrun")
    a("--micro-batch-size", type=number(int, 1), help="most examples one process puts through one forward pass; "
      "the rest of its share of the batch accumulates gradients (default: its whole share)")
    a("--max-length", type=number(int, 4))
    a("--lr", type=number(float, 0, strict=True), help="adapter learning rate (every weight for --method full)")
    a("--lr-head", type=number(float, 0, strict=True)), a("--lr-locations", type=number(float, 0))
    a("--weight-decay", type=number(float, 0)), a("--warmup-ratio", type=number(float, 0, 1))
    a("--B-a", type=number(int, 0), help="LoCA: coefficient steps per cycle")
    a("--B-l", type=number(int, 0), help="LoCA: location steps per cycle")
    a("--T-s", type=number(int, 0), help="LoCA: steps of location search, then locations freeze")
    a("--precision", choices=["bf16", "fp16", "fp32", "fp64"],
      help="default bf16 on a GPU that has it, else fp32; fp64: every weight in float64, for exact comparisons")
    a("--device", help="cpu, cuda, cuda:1, ... (default cuda if available)")
    a("--eager", action="store_true", default=None, help="on a GPU, run steps and evaluation eagerly instead of as "
      "CUDA graphs (graphs pad batches to lengths of multiples of 32; fp16 always runs eager; the CPU always does)")
    a("--compile", choices=COMPILE_SCOPES, help="inside the CUDA graphs, torch.compile the adapted layers "
      "(adapters, the default), the whole model (model: faster steps, a longer start) or nothing (none)")
    a("--seed", type=number(int, 0, 2**32), help="the run's seed (default 0)")
    a("--out", help="output folder (default runs/<method>-<task>-<model>-s<seed>-<hash of the settings>)")
    a("--save-every", type=number(int, 1), help="checkpoint every N steps (always at each epoch end)")
    a("--save-minutes", type=number(float, 0), help="also checkpoint when this many minutes have passed since "
      "the last checkpoint (default 10; 0: never by time)")
    a("--eval-every", type=number(int, 1), help="evaluate every N steps (default: each epoch)")
    a("--resume", help="continue the run whose checkpoint.pt is in this folder, writing there and nowhere else")
    a("--count-params", action="store_true", default=None, help="print trainable parameters and exit")
    a("--print-config", action="store_true", default=None,
      help="print the resolved configuration (the paper row, then the flags) as JSON and exit; downloads nothing")
    return p


def flag(dest):
    return "--gate/--no-gate" if dest == "gate" else "--" + dest.replace("_", "-")


def default_targets(model):
    """The query and value projections: "query,value" (BERT, RoBERTa), "query_proj,value_proj" (DeBERTa).
    Read from the config of known names and local folders; a hub id is judged by its name (no download)."""
    if model != "tiny" and (model in KNOWN_CONFIGS or Path(model).is_dir()):
        deberta = isinstance(model_config_without_weights(model), DebertaV2Config)
    else:
        deberta = "deberta" in Path(str(model)).name.lower()
    return "query_proj,value_proj" if deberta else "query,value"


def resolve_config(args, saved=None):
    """The run's full configuration: a paper row (or GENERIC), then the flags. With `saved` (a
    checkpoint's configuration) the run keeps it, and only RESUME_MAY_CHANGE flags may differ."""
    explicit = {k: v for k, v in vars(args).items() if v is not None and k != "print_config"}
    for key in ("model", "targets", "out", "data_dir", "resume", "device"):  # "" is a mistake, not "the default"
        if explicit.get(key) is not None and not explicit[key].strip():
            raise UsageError(f"{flag(key)} is empty: give a value, or leave the flag out for the default")
    if "targets" in explicit and not all(t.strip() for t in explicit["targets"].split(",")):
        raise UsageError(f"--targets {explicit['targets']!r} has an empty name: give comma-separated suffixes "
                         f"like query,value")
    if saved is not None:
        if "out" in explicit and Path(explicit["out"]).resolve() != Path(args.resume).resolve():
            raise UsageError(f"--out {explicit['out']} with --resume {args.resume}: a resumed run reads and writes its "
                             f"own folder and nothing else; copy the folder to continue it elsewhere")
        for key, value in explicit.items():
            if key == "out":
                continue
            if key in HYPERPARAMETER_DESTS:
                old = saved["hyperparameters"].get(HYPERPARAMETER_DESTS[key])
            else:
                old = saved.get(key)
            if key == "targets":
                same = value.split(",") == old
            elif key == "data_dir":
                same = old is not None and Path(value).resolve() == Path(old).resolve()
            else:
                same = value == old
            if key not in RESUME_MAY_CHANGE and not same:
                raise UsageError(f"{flag(key)} {value} differs from the run being resumed ({old}); a resumed run keeps "
                                 f"its settings (you may change {', '.join(map(flag, RESUME_MAY_CHANGE[1:]))})")
        config = dict(saved, **{k: explicit[k] for k in RESUME_MAY_CHANGE[1:] if k in explicit})
        config["out"] = args.resume  # never the folder the checkpoint was written in: it may have moved
        config.setdefault("save_minutes", 10.0)  # checkpoints of older runs lack it
        return finish_device(config, explicit)

    method, model, task = args.method or "loca", args.model or "roberta-base", args.task or "rte"
    tiny = model == "tiny"
    settings, described = lookup(method, model, task)  # the paper row over GENERIC (settings.py)
    # Flags only some methods take: refuse the others, naming what the method does take.
    takes = {} if method in ("full", "head") else spectral_ft.hyperparameters(method)
    for dest, name in HYPERPARAMETER_DESTS.items():
        if dest in explicit and name not in takes:
            allowed = ", ".join(flag(d) for d, h in HYPERPARAMETER_DESTS.items() if h in takes)
            allowed = allowed or "no adapter hyperparameters"
            raise UsageError(f"{flag(dest)} is not a hyperparameter of --method {method}: it takes {allowed}")
    loca_only = "only loca has locations (and --lr-locations, --B-a, --B-l, --T-s)"
    unused = {"lr_locations": method != "loca" and loca_only, "B_a": method != "loca" and loca_only,
              "B_l": method != "loca" and loca_only, "T_s": method != "loca" and loca_only,
              "lr": method == "head" and "it trains the head alone, at --lr-head",
              "lr_head": method == "full" and "every weight trains at --lr",
              "targets": method in ("full", "head") and "it adapts no layers"}
    for key, why in unused.items():
        if why and key in explicit:
            raise UsageError(f"{flag(key)} does not apply to --method {method}: {why}")
    given = {HYPERPARAMETER_DESTS[d]: v for d, v in explicit.items() if d in HYPERPARAMETER_DESTS}
    hyperparameters = {name: given.get(name, settings.get(name, default)) for name, default in takes.items()}
    if model not in ("tiny", *KNOWN_CONFIGS) and Path(model).is_dir():
        model = str(Path(model).resolve())  # a local folder: found again from any directory (--resume)
    data_dir = None if args.data_dir is None else str(Path(args.data_dir).expanduser().resolve())
    config = dict(method=method, model=model, task=task, targets=None, hyperparameters=hyperparameters,
                  settings=described, data_dir=data_dir, max_steps=args.max_steps,
                  seed=args.seed or 0, save_every=args.save_every,
                  save_minutes=10.0 if args.save_minutes is None else args.save_minutes, eval_every=args.eval_every,
                  micro_batch_size=args.micro_batch_size, eager=bool(args.eager),
                  compile=args.compile or "adapters")
    config.update({k: explicit.get(k, settings[k]) for k in TRAINING_KEYS})
    if method not in ("full", "head"):
        row_targets = ",".join(settings["targets"]) if "targets" in settings else None
        config["targets"] = (args.targets or row_targets or default_targets(model)).split(",")
    for key, why in unused.items():
        if why and key != "targets":
            config[key] = None
    if tiny and config["data_dir"] is None and task == "rte":
        config["data_dir"] = str(RTE_SAMPLE_DIR)
    config = finish_device(dict(config, out=args.out), explicit)
    if args.out is None:
        config["out"] = default_out(config)
    return config


def default_out(config):
    """runs/<method>-<task>-<model>-s<seed>-<8 hex>: the hex is a hash of every setting that changes
    the results, so unrelated runs (another model, another --lr) never share a folder and the same
    command twice finds its earlier run (and is told to --resume it or choose another --out)."""
    settings = json.dumps({k: v for k, v in config.items() if k not in NOT_IN_RUN_NAME}, sort_keys=True)
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(config["model"]).name) or "model"
    return (f"runs/{config['method']}-{config['task']}-{stem}-s{config['seed']}-"
            f"{hashlib.sha256(settings.encode()).hexdigest()[:8]}")


def finish_device(config, explicit):
    device = explicit.get("device") or config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: only cpu and cuda are supported")
    default = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    precision = explicit.get("precision") or (config.get("precision") if "device" not in explicit else None) or default
    if precision == "fp16" and dev.type == "cpu":
        raise UsageError("--precision fp16 needs a CUDA device (GradScaler is for GPUs); use bf16 or fp32 on the CPU")
    return dict(config, device=device, precision=precision)


# -----------------------------------------------------------------------------
# small pieces the loop uses


def default_glue_dir(task):
    return default_root() / task.folder


def float_dtype(t):
    """float64 for float64 tensors (--precision fp64), else float32: losses and metrics are computed in
    at least float32, also under bf16 / fp16 autocast."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def linear_warmup_decay(total_steps, warmup_steps):
    """LambdaLR factor: 0 -> 1 linearly over warmup_steps, then linearly to 0 at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def epoch_permutation(seed, epoch, n):
    """The order of the n training examples in `epoch`: a function of (seed, epoch) alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


# -----------------------------------------------------------------------------
# several processes: `torchrun --nproc_per_node=N train.py ...` runs N copies of this script, one per
# GPU, wrapped in DistributedDataParallel (which averages the gradients). Optimizer step k takes the
# same batch as in one process, positions [k B, (k+1) B) of the epoch's order (epoch_permutation),
# split between the processes: process r holds positions r, r + N, r + 2N, ... (DistributedSampler's
# shard, seeded so that its order is epoch_permutation). Each process weighs its per-example losses by
# N / (examples in the batch), so that DDP's average is the gradient of the batch's mean loss, as in one
# process. Shares differ by at most one example; the smaller ones are topped up with a repeated example
# of weight 0 so that every process runs the same passes. Process 0 alone writes files and prints.


def distributed_env():
    """(rank, world size, local rank) from torchrun's environment, or (0, 1, 0) for `python train.py`."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise UsageError("WORLD_SIZE is set but RANK / LOCAL_RANK are not integers: start several processes "
                         "with torchrun --nproc_per_node=N train.py ...") from None


def epoch_shard(seed, epoch, n, rank, world):
    """Process `rank`'s positions of the epoch's order: epoch_permutation(seed, epoch, n)[rank::world]
    (DistributedSampler pads the order to a multiple of `world` by repeating its start; those
    positions >= n are never read)."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed * 1_000_003)
    sampler.set_epoch(epoch)  # the sampler's order is randperm(n) seeded with seed * 1_000_003 + epoch
    return list(sampler)


def batch_share(shard, start, end, rank, world):
    """Process `rank`'s examples of the batch at positions [start, end) of the epoch's order, and their
    loss weights: ceil((end - start) / world) rows on every process, padding rows weighing 0."""
    # this process's positions p in [start, end) are p % world == rank: shard[lo:hi]
    lo, hi = -(-(start - rank) // world), -(-(end - rank) // world)
    rows = -(-(end - start) // world)
    indices, weights = shard[lo:hi], [1.0] * (hi - lo)
    filler = shard[min(lo, len(shard) - 1)]
    return indices + [filler] * (rows - len(indices)), weights + [0.0] * (rows - len(indices))


def gather_interleaved(local, n, rank, world):
    """Every process's predictions, back in example order: `local` holds examples rank, rank + world, ...
    of n. Exact: each example once, none dropped."""
    if world == 1:
        return local
    size = -(-n // world)
    padded = torch.zeros(size, dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    full = torch.empty(n, dtype=local.dtype, device=local.device)
    for r, part in enumerate(parts):
        full[r::world] = part[:len(range(r, n, world))]
    return full


def data_parallel(model, device, find_unused_parameters=False):
    """model in DistributedDataParallel, which copies process 0's parameters and buffers to every process
    once, then all-reduces gradients. Buffers are not re-sent at each forward: none changes in training
    (forward_sync_buffers=False in newer torch, broadcast_buffers=False before)."""
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters,
                                   **{"forward_sync_buffers" if newer else "broadcast_buffers": False})


def rank0_first(rank, world, fn):
    """fn() on process 0, then on the others: downloads and files made once, then read from disk."""
    if rank == 0:
        result = fn()
    if world > 1:
        dist.barrier()
    return result if rank == 0 else fn()


def pad_batch(encoded, labels, indices, pad_id, regression):
    """The examples at `indices`, padded to their longest:
    -> input_ids, attention_mask, token_type_ids (B, T), labels (B,)."""
    rows = [encoded[i] for i in indices]
    T = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    token_types = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T), 1 = token
    for b, (ids, types) in enumerate(rows):
        input_ids[b, :len(ids)], token_types[b, :len(ids)] = torch.tensor(ids), torch.tensor(types)
        mask[b, :len(ids)] = 1
    y = torch.tensor([labels[i] for i in indices], dtype=torch.float32 if regression else torch.long)  # (B,)
    return input_ids, mask, token_types, y


def rng_state():
    """Every random generator's state, as tensors / lists / numbers that torch.load(weights_only=True) reads."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                      float(np_gauss)],
            "python": [py_version, list(py_internal), py_gauss]}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):  # [] without CUDA
        torch.cuda.set_rng_state(cuda_state, device)
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))


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
    head = set(model.head_parameter_names())
    if method not in ("full", "head"):
        spectral_ft.load_adapter_state_dict(model, {k: v for k, v in state.items() if k not in head})
    params = dict(model.named_parameters())
    for name in (params if method == "full" else head):
        if name not in state or state[name].shape != params[name].shape:
            have = tuple(state[name].shape) if name in state else "nothing"
            raise ValueError(f"{source}: tensor {name!r} is {have}, the model needs {tuple(params[name].shape)}")
        with torch.no_grad():
            params[name].copy_(state[name])


def check_finite(state, when):
    bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"{when}: weights {', '.join(bad[:3])} are not finite; nothing was saved")


def count_parameters(model, method):
    """Trainable parameters outside the head (LoCA: coefficients only, as after T_s) and in the head."""
    head = set(model.head_parameter_names())
    outside = [(name, p) for name, p in model.named_parameters() if p.requires_grad and name not in head]
    is_location = lambda name: method == "loca" and name.endswith(".locations")
    counts = {"adapter": sum(p.numel() for name, p in outside if not is_location(name)),
              "head": sum(p.numel() for name, p in model.named_parameters() if name in head)}
    if method == "loca":
        counts["adapter_during_search"] = sum(p.numel() for _, p in outside)  # coefficients + locations
    return counts


def prepare_model(model, config):
    """Adapters in, everything else frozen but the head (or nothing frozen for full)."""
    method = config["method"]
    if method == "full":
        return model.requires_grad_(True)
    model.requires_grad_(False)
    if method != "head":
        spectral_ft.inject(model, method, targets=config["targets"], **config["hyperparameters"])
    head = set(model.head_parameter_names())
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad_(True)
    return model


def model_config_without_weights(name):
    """The config of --model (model.config_from_json), downloading at most its config.json (nothing for
    known names)."""
    if name == "tiny":
        return tiny_config("bert", len(SPECIAL_TOKENS))
    if name in KNOWN_CONFIGS:
        return config_from_json(KNOWN_CONFIGS[name])
    if not Path(name).is_dir() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"--model {name} is not a directory, nor a hub id like 'FacebookAI/roberta-base'")
    path = Path(name) / "config.json" if Path(name).is_dir() else hf_hub_download(name, "config.json")
    return read_config(path)


ADAPTER_FLOOR = 2**26  # parameters an adapter may always hold (256 MiB in float32), whatever the model's size


def check_adapter_size(model, config):
    """Refuse, before allocating anything, an adapter larger than the model it adapts (and than
    ADAPTER_FLOOR): e.g. --r 1000000000 for LoRA would ask for terabytes. Its size is estimated from the
    adapted layers' shapes: r (in + out) per layer for the methods with a rank (VeRA: its shared pair
    once), plus the spectral coefficients."""
    hp, method = config["hyperparameters"], config["method"]
    shapes = [(m.out_features, m.in_features) for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and any(name.endswith("." + t) for t in config["targets"] or ())]
    r, n = hp.get("r"), hp.get("n")
    r = r if isinstance(r, int) and not isinstance(r, bool) and r > 0 else 0
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
    if not shapes or not (r or n):
        return
    if method == "vera":
        size = r * (max(i for _, i in shapes) + max(o for o, _ in shapes)) + sum(r + o for o, _ in shapes)
    else:
        size = sum(r * (o + i) + 2 * n for o, i in shapes)
    own = sum(p.numel() for p in model.parameters())
    bound = max(own, ADAPTER_FLOOR)
    if size > bound:
        what = f"--r {r}" if r else f"--n {n}"
        raise UsageError(f"{what}: {method} on {len(shapes)} layers of {config['model']} would hold about {size:,} "
                         f"parameters ({size * 4 / 2**30:,.1f} GiB in float32), more than allowed: at most "
                         f"{bound:,} (the model's own {own:,}, or {ADAPTER_FLOOR:,}); choose a smaller {what.split()[0]}")


def dry_inject(config, model_config=None):
    """The method on the model's shapes without its weights: built on the meta device, but for the
    adapted layers (random CPU weights: some methods read them). Bad targets and hyperparameters fail
    here, before any download; and parameters are counted without one (--count-params)."""
    with torch.device("meta"):
        model = classifier_for(model_config or model_config_without_weights(config["model"]),
                               TASKS[config["task"]].num_labels)
    if config["method"] not in ("full", "head"):
        check_adapter_size(model, config)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name.endswith("." + t) for t in config["targets"] or ()):
            model._init_weights(module.to_empty(device="cpu"))
    return count_parameters(prepare_model(model, config), config["method"])


def build_tiny_model(examples, directory, num_labels):
    """A tiny random BERT (model.tiny_config) whose WordPiece vocabulary is the examples' words,
    saved in the Hugging Face layout so that the run loads it like any checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "vocab.txt", "w") as f:
        f.write("\n".join(SPECIAL_TOKENS) + "\n")
    splitter = WordPieceTokenizer(directory / "vocab.txt")  # specials only: used for BERT's normalizer and splitter
    texts = [t for ex in examples for t in (ex.text_a, ex.text_b) if t]
    words = sorted({w for t in texts for w in splitter.split_words(splitter.normalize(t))} - set(SPECIAL_TOKENS))
    with atomic_write(directory / "vocab.txt", "w") as f:
        f.write("\n".join(SPECIAL_TOKENS + words) + "\n")
    save_pretrained(SequenceClassifier(tiny_config("bert", len(SPECIAL_TOKENS) + len(words)), num_labels), directory)
    return directory


# -----------------------------------------------------------------------------
# one optimizer step, eager or as CUDA graphs. The eager step is host-bound on a GPU: each of its ~1000
# kernels costs ~30 µs of Python and launch time, for ~7 µs of GPU work. A CUDA graph replays the captured
# kernels with one launch. A graph has fixed shapes and addresses, so every micro-batch is padded to a fixed
# row count (copies of its first row, at loss weight 0) and to a length bucket (padding tokens, masked out:
# the model never attends to them and the loss never reads them), copied into static input buffers, and the
# gradients live in static buffers that the graph accumulates into (zeroed before each step, never set to
# None while their tensor trains). One graph per (rows, length, which tensors train, train / eval), captured
# on first use; LoCA's phases train different tensors, so each gets its own (its frozen phase trains what its
# coefficient phase trains: the same graph). The optimizer, learning-rate and LoCA schedules stay eager.

LENGTH_BUCKET = 32  # padded lengths are multiples of 32 (at most --max-length)
CAPTURE_WARMUP = 3  # eager passes on the capture stream before a capture, as torch.cuda.graphs requires
COMPILE_SCOPES = ("adapters", "model", "none")  # what mode 'graph' torch.compiles before it captures
DCT_MATRIX = spectral_ft.dct_matrix


def bucket_length(length, max_length):
    """The padded length of a batch whose longest example has `length` tokens: the next multiple of
    LENGTH_BUCKET, at most max_length. Multiples of 32 rather than powers of two: at most 31 padding tokens
    per example (a power of two pads 65 tokens to 128), and a bucket is captured only once it is seen, so
    the 16 possible at length 512 cost nothing until used; graphs share one memory pool."""
    if not 1 <= length <= max_length:
        raise ValueError(f"length must be in [1, max_length={max_length}], got {length}")
    return min(-(-length // LENGTH_BUCKET) * LENGTH_BUCKET, max_length)


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
        # dct_matrix's cache is Python, which dynamo traces through: the graph would rebuild the matrix on the
        # CPU and copy it over at every pass (a copy no CUDA graph can hold). Compiled code reads it instead.
        spectral_ft.dct_matrix = torch.compiler.disable(DCT_MATRIX)
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
                 find_unused_parameters=False, forward=None, compile="adapters"):
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
        self.forward = model if forward is None else forward
        self.params = [p for group in optimizer.param_groups for p in group["params"]]  # (LoCA: locations too)
        if mode == "eager" and world > 1:  # DDP reduces what requires a gradient when it is built: every
            trains = [p.requires_grad for p in self.params]  # tensor the optimizer holds, whatever the phase
            for p in self.params:
                p.requires_grad_(True)
            self.forward = data_parallel(model, device, find_unused_parameters)
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
            logits = self.forward(input_ids, mask, types)  # (b, num_labels)
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
                with self.forward.no_sync() if accumulate else contextlib.nullcontext():  # DDP reduces at the last
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
                print(f"train.py: torch.compile failed ({why}); continuing with CUDA graphs alone "
                      f"(--compile none avoids the attempt)", file=sys.stderr)
                return self.capture(key, tensors)
            print(f"train.py: CUDA graph capture failed ({why}); continuing without graphs (--eager avoids the "
                  f"attempt)", file=sys.stderr)
            self.mode = "padded"
            return
        self.pool = graph.pool()
        self.graphs[key] = (graph, output)


@torch.no_grad()
def evaluate(model, split, examples, encoded, config, pad_id, autocast, device=None, batch_size=None, rank=0,
             world=1, step=None):
    """Metrics of one dev split (data.metrics.compute_metrics), in batches of `batch_size` (default
    config's) on `device` (default config's). With several processes each predicts examples rank,
    rank + world, ...; the predictions are gathered and every process computes the metrics of the whole
    split (each example counted once). With `step` (a TrainStep) its logits() runs each batch (padded,
    as a CUDA graph in mode 'graph'; `autocast` is then its own); else the model, under `autocast`."""
    device, batch_size = device or torch.device(config["device"]), batch_size or config["batch_size"]
    was_training = model.training
    model.eval()
    regression = TASKS[config["task"]].num_labels == 1
    labels, mine = [ex.label for ex in examples], list(range(rank, len(examples), world))
    preds = [torch.zeros(0, dtype=torch.float32 if regression else torch.long, device=device)]
    for start in tqdm(range(0, len(mine), batch_size), desc=f"eval {split}", leave=False, dynamic_ncols=True,
                      disable=rank != 0):
        batch = pad_batch(encoded, labels, mine[start:start + batch_size], pad_id, regression)
        if step is not None:
            logits = step.logits(*batch[:3])  # (B, num_labels)
        else:
            input_ids, mask, types, _ = (t.to(device, non_blocking=True) for t in batch)
            with autocast:
                logits = model(input_ids, mask, types)  # (B, num_labels)
        preds.append(logits.to(float_dtype(logits)).squeeze(-1) if regression else logits.argmax(-1))
    model.train(was_training)
    predictions = gather_interleaved(torch.cat(preds), len(examples), rank, world)
    return compute_metrics(config["task"], predictions.cpu().numpy(), np.asarray(labels))


# -----------------------------------------------------------------------------
# the run


def main(argv=None):
    started = time.time()
    args = build_parser().parse_args(argv)
    checkpoint = None
    if args.resume:
        path = Path(args.resume) / "checkpoint.pt"
        if not path.is_file():
            raise UsageError(f"--resume {args.resume}: no checkpoint.pt there (runs write one at each epoch end "
                             f"and every --save-every steps)")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            saved_config = json.loads(checkpoint["config"])
        except Exception as e:
            raise UsageError(f"--resume {args.resume}: {path} is not a checkpoint written by train.py "
                             f"({type(e).__name__}: {e})") from None
        check_checkpoint(checkpoint, saved_config, f"--resume {args.resume}: {path}", content=not args.print_config)
    config = resolve_config(args, saved_config if checkpoint else None)
    if args.print_config:  # settings only: no model, no data, nothing written
        print(json.dumps(config, indent=2))
        return {"config": config}
    method, task = config["method"], TASKS[config["task"]]
    model_config = model_config_without_weights(config["model"])
    limit = model_config.max_position_embeddings - (model_config.pad_token_id + 1
                                                    if model_config.model_type == "roberta" else 0)
    if args.max_length is not None and config["max_length"] > limit:
        raise UsageError(f"--max-length {config['max_length']} is more than {config['model']} takes: "
                         f"allowed at most {limit}")
    counts = dry_inject(config, model_config)  # bad --targets or hyperparameters fail here, before data and weights
    if args.count_params:
        print(f"{method} on {config['model']} ({task.name}, targets {config['targets']}, "
              f"{config['hyperparameters']}):\n"
              f"  trainable outside the head: {counts['adapter']:,}")
        if method == "loca":
            print(f"  during LoCA's location search (coefficients + locations): {counts['adapter_during_search']:,}")
        print(f"  classification head: {counts['head']:,} (not counted in the papers' tables)")
        return {"config": config, "trainable_parameters": counts}
    try:
        with processes(config) as (rank, world, device):
            return fine_tune(config, args, checkpoint, counts, started, rank, world, device)
    except KeyboardInterrupt:
        out = Path(config["out"])
        if (out / "checkpoint.pt").is_file() and (out in HELD or checkpoint is not None):  # ours, or the resumed one
            raise Interrupted(f"continue with --resume {out} (from its last checkpoint)") from None
        raise Interrupted("no checkpoint was written yet, so nothing can be resumed; run again to start over "
                          "(--save-every N or --save-minutes M save sooner)") from None
    finally:
        release_folders()


# -----------------------------------------------------------------------------
# the output folder: held by one run at a time


HELD = {}  # folder -> its open .lock file, held for as long as this process runs in the folder


def hold_folder(out):
    """Make `out` and hold it: an exclusive flock on out/.lock, which the kernel drops when this
    process ends, however it ends (so a killed run never leaves a stale lock). A second run into a held
    folder is refused. Under torchrun only process 0 writes, so only it holds the folder."""
    created = not out.exists()
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
    lock.created = created
    HELD[out] = lock


def release_folders():
    """Drop the locks of main(), removing the .lock files while still holding them (a run that opened one
    meanwhile sees it gone, in hold_folder); a folder this run made and wrote nothing into (bad input
    found after it was made) is removed too."""
    while HELD:
        out, lock = HELD.popitem()
        with contextlib.suppress(OSError):
            (out / ".lock").unlink()
            if lock.created and not any(out.iterdir()):
                out.rmdir()
        lock.close()


# -----------------------------------------------------------------------------
# a checkpoint to resume: everything fine_tune reads from it, checked before anything runs


CHECKPOINT_TYPES = dict(config=str, trainable=dict, optimizer=dict, scheduler=dict, scaler=dict, loca=(dict, None),
                        rng=dict, step=int, epoch=int, position=int, best=(dict, None), last=(dict, None),
                        elapsed=float, loss_sum=float, loss_count=int)
CONFIG_TYPES = dict(method=str, model=str, task=str, targets=(list, None), hyperparameters=dict, settings=str,
                    data_dir=(str, None), max_steps=(int, None), seed=int, save_every=(int, None),
                    eval_every=(int, None), micro_batch_size=(int, None), epochs=int, batch_size=int,
                    lr=(float, None), lr_head=(float, None), lr_locations=(float, None), weight_decay=float,
                    warmup_ratio=float, max_length=int, B_a=(int, None), B_l=(int, None), T_s=(int, None),
                    device=str, precision=str, out=str)
TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "a mapping", list: "a list", None: "null"}


def check_checkpoint(checkpoint, config, where, content=True):
    """UsageError naming the first missing or ill-typed entry of a loaded checkpoint (content=False:
    of its configuration alone, all that --print-config reads)."""
    def fits(value, kinds):
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        return any(value is None if k is None else (isinstance(value, k) and not isinstance(value, bool))
                   or (k is float and isinstance(value, int) and not isinstance(value, bool)) for k in kinds)

    def need(mapping, types, what):
        if not isinstance(mapping, dict):
            raise UsageError(f"{where} is damaged: its {what} is {type(mapping).__name__}, not a mapping")
        for key, kinds in types.items():
            if key not in mapping:
                raise UsageError(f"{where} is damaged: its {what} lacks {key!r}")
            if not fits(mapping[key], kinds):
                allowed = " or ".join(TYPE_NAMES[k] for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
                raise UsageError(f"{where} is damaged: its {what}'s {key!r} is {mapping[key]!r}, not {allowed}")

    if content:
        need(checkpoint, CHECKPOINT_TYPES, "content")
    need(config, CONFIG_TYPES, "config")
    choices = dict(method=[*spectral_ft.METHODS, "full", "head"], task=sorted(TASKS),
                   precision=["bf16", "fp16", "fp32", "fp64"])
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise UsageError(f"{where} is damaged: its config's {key!r} is {config[key]!r}, not one of {allowed}")
    if config.get("compile") not in (None, *COMPILE_SCOPES):  # runs before --compile have none
        raise UsageError(f"{where} is damaged: its config's 'compile' is {config['compile']!r}, not one of "
                         f"{list(COMPILE_SCOPES)}")
    if config["targets"] is not None and not all(isinstance(t, str) and t for t in config["targets"]):
        raise UsageError(f"{where} is damaged: its config's 'targets' {config['targets']!r} are not names")
    rng = checkpoint["rng"] if content else None
    if content and not (isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8
            and isinstance(rng.get("cuda"), list) and isinstance(rng.get("numpy"), list) and len(rng["numpy"]) == 5
            and isinstance(rng["numpy"][1], torch.Tensor) and isinstance(rng.get("python"), list)
            and len(rng["python"]) == 3):
        raise UsageError(f"{where} is damaged: its 'rng' does not hold the random generators' states")


@contextlib.contextmanager
def processes(config):
    """(rank, world size, device) of this process. Under torchrun: inside a process group (NCCL on
    GPUs, gloo on the CPU), each process on GPU LOCAL_RANK; without torchrun: (0, 1, --device)."""
    rank, world, local_rank = distributed_env()
    device = torch.device(config["device"])
    if "WORLD_SIZE" not in os.environ:
        yield 0, 1, device
        return
    if device.type == "cuda":
        if device.index is not None and world > 1:
            raise UsageError(f"--device {config['device']}: under torchrun each process takes GPU LOCAL_RANK; "
                             f"use --device cuda (or CUDA_VISIBLE_DEVICES to choose the GPUs)")
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"torchrun started process LOCAL_RANK={local_rank}, but this machine has "
                             f"{torch.cuda.device_count()} GPUs: use --nproc_per_node <= {torch.cuda.device_count()}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    try:
        yield rank, world, device
    finally:
        dist.destroy_process_group()


def fine_tune(config, args, checkpoint, counts, started, rank=0, world=1, device=torch.device("cpu")):
    """The run of main(), in process `rank` of `world`: data, model, optimizer, loop, outputs."""
    method, task = config["method"], TASKS[config["task"]]
    say = print if rank == 0 else (lambda *a, **k: None)  # process 0 speaks for all
    out = Path(config["out"])
    if rank == 0:
        hold_folder(out)  # before anything is written into it; refused while another run holds it
    if not checkpoint and (out / "checkpoint.pt").exists():
        raise UsageError(f"--out {out} already holds an earlier run's checkpoint.pt: continue it with "
                         f"--resume {out}, or choose another --out")
    torch.manual_seed(config["seed"]), random.seed(config["seed"]), np.random.seed(config["seed"])
    regression = task.num_labels == 1
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    say(f"train.py: {method} on {config['model']}, GLUE {task.name} (settings: {config['settings']}; flags override)")
    for key in ("hyperparameters", "targets", "epochs", "max_steps", "batch_size", "lr", "lr_head", "lr_locations",
                "weight_decay", "warmup_ratio", "max_length", "B_a", "B_l", "T_s", "precision", "device", "seed",
                "data_dir", "out", "save_every", "save_minutes", "eval_every", "micro_batch_size"):
        if config.get(key) is not None or (key == "T_s" and method == "loca"):
            say(f"  {key:<16}{'10% of the steps' if config[key] is None else config[key]}")
    if world > 1:
        say(f"  processes       {world} (torchrun), each {-(-config['batch_size'] // world)} examples of every batch")

    # ---- data: the task's TSVs; an explicit --data-dir must hold them, the default folder is downloaded into
    data_dir, download = config["data_dir"], config["data_dir"] is None
    files = sorted(set(task.splits.values()))
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a folder (it should hold {task.name}'s {', '.join(files)})")
    missing = [f for f in files if data_dir is not None and not (Path(data_dir) / f).is_file()]
    if missing:
        raise UsageError(f"--data-dir {data_dir} lacks {', '.join(missing)} (it should hold {task.name}'s "
                         f"{', '.join(files)}); leave out --data-dir to download them into {default_glue_dir(task)}/")
    dev_splits = [s for s in task.splits if s != "train"]  # mnli: dev (matched) and dev_mismatched

    def load_data():
        if download:
            try:
                download_glue(task.name)
            except OSError as e:
                raise DataDownloadError(f"could not download GLUE {task.name} into {default_glue_dir(task)}/ "
                                        f"({e.__cause__ or e}); put {', '.join(files)} there, or pass --data-dir "
                                        f"a folder that holds them, or set GLUE_URL to a mirror") from None
        return (load_glue(task.name, "train", data_dir, download=False),
                {s: load_glue(task.name, s, data_dir, download=False) for s in dev_splits})

    train_examples, dev_examples = rank0_first(rank, world, load_data)
    steps_per_epoch = math.ceil(len(train_examples) / config["batch_size"])
    total_steps = config["max_steps"] or config["epochs"] * steps_per_epoch
    warmup_steps = math.ceil(config["warmup_ratio"] * total_steps)
    if method == "loca" and config["T_s"] is None:
        config["T_s"] = max(1, round(0.1 * total_steps))  # LoCA §4.4: location search for ~10% of training
    say(f"  {len(train_examples)} training examples: {steps_per_epoch} steps/epoch, {total_steps} steps, "
        f"{warmup_steps} of warmup" + (f", T_s {config['T_s']}" if method == "loca" else ""))

    # ---- model and tokenizer: a pretrained checkpoint, or a tiny random BERT built from the data's words
    if config["model"] == "tiny":
        say("  --model tiny: a tiny randomly initialised BERT; this run checks the pipeline, not accuracy")
        every = train_examples + [e for split in dev_examples.values() for e in split]
        directory = out / "tiny-model"
        if rank == 0:
            build_tiny_model(every, directory, task.num_labels)
        if world > 1:
            dist.barrier()  # the others read what process 0 wrote
        model, tokenizer = load_pretrained(directory, task.num_labels)
    else:
        model, tokenizer = rank0_first(rank, world, lambda: load_pretrained(config["model"], task.num_labels))
    emb = model.embeddings
    limit = emb.max_positions - emb.position_offset
    if config["max_length"] > limit:
        if args.max_length is not None:
            raise UsageError(f"--max-length {config['max_length']} is more than {config['model']} takes: "
                             f"allowed at most {limit}")
        config["max_length"] = limit
    counts = count_parameters(prepare_model(model, config), method)
    say(f"  trainable: {counts['adapter']:,} outside the head" + (f" ({counts['adapter_during_search']:,} during "
        f"the location search)" if method == "loca" else "") + f", {counts['head']:,} in the head")
    model.to(device, torch.float64 if config["precision"] == "fp64" else None)

    # ---- optimizer: AdamW groups (adapter at lr, head at lr_head, LoCA locations at lr_locations without
    # weight decay), linear warmup then linear decay to 0, GradScaler only for float16
    head = set(model.head_parameter_names())
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    is_location = lambda n: method == "loca" and n.endswith(".locations")
    in_head = lambda n: n in head and method != "full"  # full: the head trains at --lr like the rest
    groups = [dict(name="adapter", params=[p for n, p in named if not in_head(n) and not is_location(n)], lr=config["lr"]),
              dict(name="head", params=[p for n, p in named if in_head(n)], lr=config["lr_head"]),
              dict(name="locations", params=[p for n, p in named if is_location(n)], lr=config["lr_locations"],
                   weight_decay=0.0)]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config["weight_decay"],
                                  **({"fused": True} if device.type == "cuda" else {}))  # one kernel, not dozens
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(total_steps, warmup_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=config["precision"] == "fp16")
    schedule = None if method != "loca" else spectral_ft.LoCASchedule(model, config["B_a"], config["B_l"], config["T_s"])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}[
        config["precision"]]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16))

    # ---- where we are: a fresh start, or exactly where the checkpoint left off
    state = dict(step=0, epoch=0, position=0, best=None, last=None, elapsed=0.0,
                 loss_sum=0.0, loss_count=0)  # training loss summed since the last evaluation
    saved_at = None  # the step of the checkpoint on disk
    if checkpoint:
        try:
            load_trainable_state(model, method, checkpoint["trainable"], f"--resume {args.resume}")
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            if checkpoint["scaler"] and scaler.is_enabled():
                scaler.load_state_dict(checkpoint["scaler"])
            if schedule:
                schedule.load_state_dict(checkpoint["loca"])
            set_rng_state(checkpoint["rng"])  # process 0's generators; the others reseed below
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as e:
            raise UsageError(f"--resume {args.resume}: the checkpoint does not fit this run: {e}") from None
        state.update({k: checkpoint[k] for k in state})
        saved_at = state["step"]
        say(f"  resumed from {args.resume} at step {state['step']} (epoch {state['epoch']}, "
            f"batch {state['position']})")

    if rank > 0:  # dropout masks differ between processes (process 0 draws exactly as a single process)
        torch.manual_seed(config["seed"] * 1_000_003 + rank * 7_919 + state["step"])

    # ---- tokenize once; batches are padded to their longest example as they are drawn
    encode = lambda examples: [tokenizer.encode(e.text_a, e.text_b, max_length=config["max_length"])
                               for e in tqdm(examples, desc="tokenize", leave=False, dynamic_ncols=True,
                                             disable=rank != 0)]
    train_encoded, train_labels = encode(train_examples), [e.label for e in train_examples]
    dev_encoded = {s: encode(v) for s, v in dev_examples.items()}
    def intact():
        return (f"{out / 'checkpoint.pt'} (step {saved_at}) is intact" if saved_at is not None
                else "no checkpoint was written")

    @contextlib.contextmanager
    def writing(path):  # a full disk (or any failed write) names the file and what is still safe
        try:
            yield
        except OSError as e:
            raise DiskError(f"cannot write {path} ({e.strerror or e}); stopped, {intact()}") from None

    log_path = out / "log.jsonl"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        kept = []  # log lines up to the checkpoint's step: a killed run may have logged past it
        if checkpoint and log_path.exists():
            for line in log_path.read_text().splitlines():
                try:
                    kept += [line] if json.loads(line)["step"] <= state["step"] else []
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut off by the kill
        with writing(log_path):
            with atomic_write(log_path, "w") as f:
                f.write("".join(line + "\n" for line in kept))

    last_save = time.time()

    def save_checkpoint():
        nonlocal saved_at, last_save
        trainable = trainable_state(model, method)  # the same in every process
        check_finite(trainable, f"checkpoint at step {state['step']}")
        if rank == 0:
            with writing(out / "checkpoint.pt"), atomic_write(out / "checkpoint.pt") as f:
                torch.save(dict(config=json.dumps(config), trainable=trainable, optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                                loca=schedule.state_dict() if schedule else None, rng=rng_state(),
                                **dict(state, elapsed=state["elapsed"] + time.time() - started)), f)
        saved_at, last_save = state["step"], time.time()

    def run_evaluation(train_loss):
        metrics = {s: evaluate(model, s, dev_examples[s], dev_encoded[s], config, tokenizer.pad_token_id, autocast,
                               device, micro_batch, rank, world, train_step) for s in dev_splits}
        value, epoch = metrics["dev"][main_metric(task.name)], state["step"] / steps_per_epoch
        state["last"] = dict(step=state["step"], epoch=epoch, metrics=metrics)
        if value == value and (state["best"] is None or value > state["best"]["value"]):  # nan never wins
            state["best"] = dict(value=value, step=state["step"], epoch=epoch, metrics=metrics)
        line = dict(step=state["step"], epoch=round(epoch, 4), metrics=metrics, loss=train_loss,  # mean since last
                    lr={g["name"]: g["lr"] for g in optimizer.param_groups},
                    time=round(state["elapsed"] + time.time() - started, 3))
        if rank != 0:
            return
        with writing(log_path), open(log_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        shown = ", ".join(f"{s} {k} {v:.4f}" for s in dev_splits for k, v in metrics[s].items())
        tqdm.write(f"step {state['step']} epoch {epoch:.2f}: {shown} (best {main_metric(task.name)} "
                   f"{state['best']['value'] if state['best'] else float('nan'):.4f}), train loss "
                   + ("-" if train_loss is None else f"{train_loss:.4f}"))

    # ---- the loop: one optimizer step per batch; the loss is read back from the GPU every LOG_EVERY
    # steps (every step on the CPU, where it costs nothing), which is also when non-finite losses are caught
    model.train()
    check_every = 1 if device.type == "cpu" else LOG_EVERY
    pending = []  # (step, this process's part of the batch's mean loss) not yet read back from the device
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"{method} {task.name}", dynamic_ncols=True,
               disable=rank != 0)
    n_train, batch_size = len(train_examples), config["batch_size"]
    micro_batch = config.get("micro_batch_size") or -(-batch_size // world)  # rows per forward pass
    # The step (TrainStep): CUDA graphs on a GPU unless --eager. Several processes: eager steps run in DDP,
    # which averages the gradients of every parameter that requires one when it is built (LoCA's locations
    # too: the schedule freezes them only later, so DDP must find per step which are in use), after copying
    # process 0's parameters and buffers (FourierFT / FoRA indices, VeRA's matrices) to every process;
    # graph steps broadcast those once and all-reduce the gradients themselves.
    mode = step_mode(device, config["precision"], config.get("eager"))
    train_step = TrainStep(model, optimizer, scheduler, scaler, schedule, device=device, dtype=dtype, mode=mode,
                           rows=min(micro_batch, -(-batch_size // world)), max_length=config["max_length"],
                           pad_id=tokenizer.pad_token_id, regression=regression, world=world,
                           find_unused_parameters=method == "loca", compile=config.get("compile") or "adapters")
    compiled = {"adapters": ", adapted layers compiled", "model": ", model compiled", "none": ""}[
        config.get("compile") or "adapters"]
    say(f"  step            {'CUDA graphs per length bucket' + compiled if mode == 'graph' else 'eager'}"
        + (" (fp16's GradScaler step is eager)" if config["precision"] == "fp16" and not config.get("eager") else ""))
    shard = None  # this process's positions of the epoch's order

    def read_losses():
        """Read the pending losses back (all-reduced over the processes), and return whether it is time
        to save by the clock (--save-minutes): process 0 decides, and its decision rides on the same
        all-reduce, so every process saves at the same step. Saving never changes the results."""
        nonlocal pending
        if not pending:
            return False
        due = bool(config.get("save_minutes")) and time.time() - last_save >= 60 * config["save_minutes"]
        parts = torch.stack([loss for _, loss in pending])
        parts = torch.cat([parts, parts.new_tensor([float(due and rank == 0)])])
        if world > 1:
            dist.all_reduce(parts)  # the processes' parts add up to each batch's mean loss
        *values, due = parts.tolist()
        for (step, _), value in zip(pending, values):
            if not math.isfinite(value):
                hint = "" if config["precision"] in ("fp32", "fp64") else ", or --precision fp32"
                raise NonFiniteError(f"loss is {value} at step {step} (epoch {step / steps_per_epoch:.2f}); "
                                     f"stopped, {intact()}; try a lower --lr{hint}")
        state["loss_sum"] += sum(values)
        state["loss_count"] += len(values)
        pending = []
        bar.set_postfix(loss=f"{values[-1]:.4f}")
        return due > 0

    try:
        while state["step"] < total_steps:
            if shard is None:
                shard = epoch_shard(config["seed"], state["epoch"], n_train, rank, world)
            position = state["position"]
            start, end = position * batch_size, min((position + 1) * batch_size, n_train)
            indices, weights = batch_share(shard, start, end, rank, world)
            parts = [(*pad_batch(train_encoded, train_labels, indices[first:first + micro_batch],
                                 tokenizer.pad_token_id, regression),
                      torch.tensor(weights[first:first + micro_batch]))  # (b,) 1, or 0 for filler rows
                     for first in range(0, len(indices), micro_batch)]  # gradient accumulation over micro-batches
            step_loss = train_step(parts, end - start)  # forward, backward, optimizer and schedules
            state["step"], state["position"] = state["step"] + 1, position + 1
            pending.append((state["step"], step_loss))
            bar.update(1)
            epoch_done, last = state["position"] == steps_per_epoch, state["step"] == total_steps
            if epoch_done:
                state["epoch"], state["position"], shard = state["epoch"] + 1, 0, None
            evaluate_now = (state["step"] % config["eval_every"] == 0) if config["eval_every"] else epoch_done
            save_now = epoch_done or last or bool(config["save_every"] and state["step"] % config["save_every"] == 0)
            if len(pending) >= check_every or evaluate_now or save_now or last:
                save_now = read_losses() or save_now
            if evaluate_now or (last and (state["last"] is None or state["last"]["step"] != state["step"])):
                run_evaluation(state["loss_sum"] / state["loss_count"] if state["loss_count"] else None)
                state["loss_sum"], state["loss_count"] = 0.0, 0
            if save_now:
                save_checkpoint()
    finally:
        bar.close()  # also when a non-finite loss stops the run

    # ---- outputs: the learned tensors, the results, a summary
    if state["last"] is None:  # resumed a finished run whose final evaluation was lost
        run_evaluation(None)
    trainable = trainable_state(model, method)
    check_finite(trainable, "final weights")
    results = dict(config=config, seed=config["seed"], main_metric=main_metric(task.name), best=state["best"],
                   final=state["last"], trainable_parameters=counts, processes=world,
                   wall_time_s=round(state["elapsed"] + time.time() - started, 3),
                   versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__),
                   device=(torch.cuda.get_device_name(device) if device.type == "cuda"
                           else platform.processor() or "cpu"))
    if rank != 0:
        return results
    metadata = dict(format="pt", method=method, hyperparameters=json.dumps(config["hyperparameters"]),
                    model=config["model"], task=task.name, targets=json.dumps(config["targets"]))
    with writing(out / "adapter.safetensors"):
        write_safetensors(out / "adapter.safetensors", {k: v.contiguous() for k, v in trainable.items()}, metadata)
    with writing(out / "results.json"), atomic_write(out / "results.json", "w") as f:
        f.write(json.dumps(results, indent=2) + "\n")
    best = state["best"]
    say(f"done: best dev {main_metric(task.name)} {best['value'] if best else float('nan'):.4f}"
        + (f" at epoch {best['epoch']:.2f} (step {best['step']})" if best else "")
        + f", final {state['last']['metrics']['dev'][main_metric(task.name)]:.4f}; wrote {out}/")
    if config["model"] == "tiny":
        say("note: --model tiny is a small random model: this run checked the pipeline, not accuracy")
    return results


def cli(argv=None):
    """The command line: main() with errors turned into one line and an exit status."""
    try:
        main(argv)
        return 0
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process finds the same bad input
            print(f"train.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the network (hub.HubOfflineError, DownloadError), a full disk
        print(f"train.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"train.py: interrupted; {e or 'nothing was written, so nothing can be resumed'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
