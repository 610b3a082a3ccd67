"""
run/config.py: the flags of train.py and the one configuration they decide, RunConfig.

A run's configuration is decided once, by `decide_config`: the paper's row for (method, model family, task)
from run/paper_rows.py (or its generic settings), then the flags; a resumed run keeps its checkpoint's configuration
and only RESUME_MAY_CHANGE may differ. Everything the run uses is final there (max_length cut to the model's
positions, the method's schedule settings for the run's length), so `--print-config` prints what the run uses
and results.json records the same. RunConfig's fields are the one list of keys that checkpoints, results.json
and `--resume` read. What a method adds (its own settings, parameter groups, schedule) comes from its class in
spectral_ft.py. Also here, because they judge a configuration without training: the default adapted layers
and output folder, and the dry inject (the method on the model's shapes, on the meta device) behind
`--count-params` and the early checks of --targets and the hyperparameters.
"""
import argparse
import dataclasses
import hashlib
import inspect
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

import spectral_ft
from data import RTE_SAMPLE_DIR, TASKS, load_glue, load_task
from run.errors import TYPE_NAMES, Parser, UsageError, bounded, fits
from encoder.hub import hf_hub_download
from encoder.model import (KNOWN_CONFIGS, TINY_SPECIAL_TOKENS, DebertaV2Config, classifier_for, config_from_json, read_config,
                   tiny_config)
from run.paper_rows import HEADLINE, PAPER_SETTINGS, lookup, named_rows
from run.step import COMPILE_SCOPES

NO_ADAPTER = ("full", "head")  # train.py's runs without adapters: every weight trains, or the head alone
METHODS = (*spectral_ft.METHODS, *NO_ADAPTER)
TRAINING_KEYS = ("epochs", "batch_size", "lr", "lr_head", "weight_decay", "warmup_ratio", "max_length")
SPECTRAL_FT_NAME = {"adapter_seed": "seed"}  # a flag whose spectral_ft keyword differs (--seed is the run's)
HYPERPARAMETER_FLAGS = tuple({{"seed": "adapter_seed"}.get(name, name): None for method in spectral_ft.METHODS
                              for name in spectral_ft.hyperparameters(method)})  # every method's keywords, as flags
HYPERPARAMETER_DEFAULTS = {{"seed": "adapter_seed"}.get(name, name): default for method in spectral_ft.METHODS
                           for name, default in spectral_ft.hyperparameters(method).items()}
RESUME_MAY_CHANGE = ("resume", "device", "precision", "save_every", "save_minutes", "eval_every", "log_every",
                     "micro_batch_size", "eager", "compile")
NOT_IN_RUN_NAME = ("out", "save_every", "save_minutes", "log_every", "eager", "compile")  # left out of the hash
# Runs of at least this many optimizer steps compile each transformer layer (--compile layers); shorter ones compile
# nothing (--compile none: CUDA graphs alone). On one H100 (REPRODUCE §3l) 'layers' makes roberta-base's step at
# 32 x 128 1.46 ms (17%) shorter than 'none' for 10.9 s more before the first step, one length bucket alone: ~7,500
# steps to break even, more with each further bucket, and far more on a small model (a MiniLM SST-2 epoch of 2,105
# steps: 8.2 s with 'none', 26.3 s with 'layers'; an RTE epoch, 78 steps: 16.5 s against 32.7 s, the whole process).
# Those are first runs on a machine: with Inductor's caches warm from an earlier run of the same model, 'layers' costs
# ~1.6 s more and repays from ~1,000 steps on roberta-base (REPRODUCE §3m); the rule does not guess at the caches.
LAYERS_FROM_STEPS = 10_000
ADAPTER_FLOOR = 2**26  # parameters an adapter may always hold (256 MiB in float32), whatever the model's size


def method_settings_declared():
    """{setting: (type, default, help)} of every method's own training settings (spectral_ft's `settings`)."""
    declared = {}
    for cls in spectral_ft.METHODS.values():
        declared.update(spectral_ft.declared(cls, "settings"))
    return declared


def method_class(method):
    return spectral_ft.METHODS.get(method)  # None for full and head


# -----------------------------------------------------------------------------
# the configuration


@dataclass(frozen=True)
class RunConfig:
    """Everything one run uses, decided once (decide_config) and recorded in checkpoint.pt and results.json."""
    method: str  # a spectral_ft method, or full / head
    model: str  # hub id, local folder, or 'tiny'
    task: str
    targets: Optional[list]  # suffixes of the adapted linear layers (None: full, head)
    hyperparameters: dict  # the method's keywords (spectral_ft.hyperparameters)
    method_settings: dict  # the method's own training settings (its class's `settings`), final for this run
    settings: str  # where the values come from: the paper row and its fallbacks, or the generic defaults
    data_dir: Optional[str]
    max_steps: Optional[int]
    seed: int
    epochs: int
    batch_size: int
    lr: Optional[float]  # adapter rate (every weight for full; None for head)
    lr_head: Optional[float]
    weight_decay: float
    warmup_ratio: float
    max_length: int
    device: str
    precision: str
    out: str
    save_every: Optional[int] = None
    save_minutes: float = 10.0
    eval_every: Optional[int] = None
    log_every: int = 50
    micro_batch_size: Optional[int] = None
    eager: bool = False
    compile: str = "adapters"

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved, where):
        """A RunConfig from a checkpoint's or results.json's mapping, every field's type checked (UsageError naming
        `where`). Runs recorded before `method_settings` kept those settings at the top level."""
        if not isinstance(saved, dict):
            raise UsageError(f"{where} is damaged: its config is {type(saved).__name__}, not a mapping")
        saved = dict(saved)
        if "method_settings" not in saved:
            cls = method_class(saved.get("method"))
            declared = spectral_ft.declared(cls, "settings") if cls else {}
            saved["method_settings"] = {k: saved.get(k) for k in declared}
        saved = {k: v for k, v in saved.items() if k in FIELD_TYPES}
        for name, kinds in FIELD_TYPES.items():
            if name not in saved and dataclasses.fields(cls)[FIELD_ORDER[name]].default is dataclasses.MISSING:
                raise UsageError(f"{where} is damaged: its config lacks {name!r}")
            if name in saved and not fits(saved[name], kinds):
                raise UsageError(f"{where} is damaged: its config's {name!r} is {saved[name]!r}, not "
                                 f"{' or '.join(TYPE_NAMES[k] for k in kinds)}")
        for name, allowed in dict(method=METHODS, task=sorted(TASKS), precision=["bf16", "fp16", "fp32", "fp64"],
                                  compile=COMPILE_SCOPES).items():
            if name in saved and saved[name] not in allowed:
                raise UsageError(f"{where} is damaged: its config's {name!r} is {saved[name]!r}, not one of {list(allowed)}")
        if saved["targets"] is not None and not all(isinstance(t, str) and t for t in saved["targets"]):
            raise UsageError(f"{where} is damaged: its config's 'targets' {saved['targets']!r} are not names")
        return cls(**saved)


def _kinds(annotation):
    """(type, ...) an annotation allows, None for Optional's None."""
    args = typing.get_args(annotation)
    return tuple(None if a is type(None) else a for a in args) if args else (annotation,)


FIELD_TYPES = {f.name: _kinds(f.type) for f in dataclasses.fields(RunConfig)}
FIELD_ORDER = {f.name: i for i, f in enumerate(dataclasses.fields(RunConfig))}


def decide_config(args, saved=None, download=True):
    """The run's RunConfig: a paper row (or the generic defaults), then the flags; with `saved` (a checkpoint's
    configuration) the run keeps it, and only RESUME_MAY_CHANGE flags may differ. Final: max_length is cut to
    the model's positions, and a method's schedule settings follow the run's length (counted from the task's
    training split; download=False, as for --print-config: only when the data is already here)."""
    explicit = {k: v for k, v in vars(args).items() if v is not None and k not in ("print_config", "count_params")}
    for key in ("model", "targets", "out", "data_dir", "resume", "device"):  # "" is a mistake, not "the default"
        if explicit.get(key) is not None and not explicit[key].strip():
            raise UsageError(f"{flag(key)} is empty: give a value, or leave the flag out for the default")
    if "targets" in explicit and not all(t.strip() for t in explicit["targets"].split(",")):
        raise UsageError(f"--targets {explicit['targets']!r} has an empty name: give comma-separated suffixes "
                         f"like query,value")
    if saved is not None:
        return RunConfig(**finish_device(resumed_config(args, explicit, saved), explicit))
    config = finish_device(new_config(args, explicit), explicit)
    config["max_length"] = decide_max_length(config, "max_length" in explicit, download)
    total = planned_steps(config, download)
    config["method_settings"] = decide_method_settings(config, total)
    config["compile"] = decide_compile(config["compile"], "compile" in explicit, total)
    config["out"] = args.out or default_out(config)
    return RunConfig(**config)


def resumed_config(args, explicit, saved):
    """The checkpoint's configuration (a RunConfig), with the flags a resumed run may change."""
    if "out" in explicit and Path(explicit["out"]).resolve() != Path(args.resume).resolve():
        raise UsageError(f"--out {explicit['out']} with --resume {args.resume}: a resumed run reads and writes its "
                         f"own folder and nothing else; copy the folder to continue it elsewhere")
    saved = saved.to_json()
    for key, value in explicit.items():
        if key in ("out", "row") or key in RESUME_MAY_CHANGE:
            continue
        old = (saved["hyperparameters"].get(spectral_ft_name(key)) if key in HYPERPARAMETER_FLAGS
               else saved["method_settings"].get(key) if key in method_settings_declared() else saved.get(key))
        if key == "targets":
            same = value.split(",") == old
        elif key == "data_dir":
            same = old is not None and Path(value).resolve() == Path(old).resolve()
        else:
            same = value == old
        if not same:
            raise UsageError(f"{flag(key)} {value} differs from the run being resumed ({old}); a resumed run keeps "
                             f"its settings (you may change {', '.join(map(flag, RESUME_MAY_CHANGE[1:]))})")
    config = dict(saved, **{k: explicit[k] for k in RESUME_MAY_CHANGE[1:] if k in explicit})
    config["out"] = args.resume  # never the folder the checkpoint was written in: it may have moved
    return config


def new_config(args, explicit):
    """The paper row for (method, model, task) over the generic defaults, then the flags, checked against the
    method; its own settings from its class, the row, then the flags."""
    method, model, task = (args.method or HEADLINE["method"], args.model or HEADLINE["model"],
                           args.task or HEADLINE["task"])
    cls = method_class(method)
    try:
        settings, described = lookup(method, model, task, args.row)  # the paper row over GENERIC (paper_rows.py)
    except KeyError as e:
        raise UsageError(f"--row {args.row}: {e.args[0]}") from None
    takes = {} if cls is None else spectral_ft.hyperparameters_of(cls)
    check_method_flags(method, takes, explicit)
    given = {spectral_ft_name(d): v for d, v in explicit.items() if d in HYPERPARAMETER_FLAGS}
    hyperparameters = {name: given.get(name, settings.get(name, default)) for name, default in takes.items()}
    if hyperparameters.get("alpha", 0) is None:  # FoRA and DFoRA: alpha defaults to r (scale 1), shown as such
        hyperparameters["alpha"] = float(hyperparameters["r"])
    if cls is not None and spectral_ft.declared(cls, "seed_follows_run") and "adapter_seed" not in explicit:  # as the authors' code draws it
        hyperparameters["seed"] = args.seed or 0
    own = {} if cls is None else {k: explicit.get(k, settings.get(k, default)) for k, (_, default, _) in spectral_ft.declared(cls, "settings").items()}
    if model not in ("tiny", *KNOWN_CONFIGS) and Path(model).is_dir():
        model = str(Path(model).resolve())  # a local folder: found again from any directory (--resume)
    data_dir = None if args.data_dir is None else str(Path(args.data_dir).expanduser().resolve())
    if model == "tiny" and data_dir is None and task == "rte":
        data_dir = str(RTE_SAMPLE_DIR)
    config = dict(method=method, model=model, task=task, targets=None, hyperparameters=hyperparameters,
                  method_settings=own, settings=described, data_dir=data_dir, max_steps=args.max_steps,
                  seed=args.seed or 0, save_every=args.save_every,
                  save_minutes=10.0 if args.save_minutes is None else args.save_minutes, eval_every=args.eval_every,
                  log_every=args.log_every or 50, micro_batch_size=args.micro_batch_size, eager=bool(args.eager),
                  compile=args.compile or "adapters")
    config.update({k: explicit.get(k, settings[k]) for k in TRAINING_KEYS})
    config["lr"] = None if method == "head" else config["lr"]  # head: the head alone, at lr_head
    config["lr_head"] = None if method == "full" else config["lr_head"]  # full: every weight at lr
    if method not in NO_ADAPTER:
        row_targets = ",".join(settings["targets"]) if "targets" in settings else None
        config["targets"] = (args.targets or row_targets or default_targets(model, cls)).split(",")
    return dict(config, out=args.out)


def check_method_flags(method, takes, explicit):
    """Refuse flags the method does not take, naming what it does take."""
    for dest in HYPERPARAMETER_FLAGS:
        if dest in explicit and spectral_ft_name(dest) not in takes:
            allowed = ", ".join(flag(d) for d in HYPERPARAMETER_FLAGS if spectral_ft_name(d) in takes)
            raise UsageError(f"{flag(dest)} is not a hyperparameter of --method {method}: it takes "
                             f"{allowed or 'no adapter hyperparameters'}")
    own = spectral_ft.declared(method_class(method), "settings") if method_class(method) else {}
    for key in method_settings_declared():
        if key in explicit and key not in own:
            takers = ", ".join(m for m in spectral_ft.METHODS if key in spectral_ft.declared(m, "settings"))
            raise UsageError(f"{flag(key)} does not apply to --method {method}: only {takers} take it")
    unused = {"lr": method == "head" and "it trains the head alone, at --lr-head",
              "lr_head": method == "full" and "every weight trains at --lr",
              "targets": method in NO_ADAPTER and "it adapts no layers"}
    for key, why in unused.items():
        if why and key in explicit:
            raise UsageError(f"{flag(key)} does not apply to --method {method}: {why}")


def decide_max_length(config, given, download=True):
    """The longest input the run takes: the row's or --max-length, cut to the model's positions (a --max-length
    beyond them is refused). A hub id that is neither known nor downloaded keeps its value (download=False)."""
    if not download and config["model"] not in ("tiny", *KNOWN_CONFIGS) and not Path(config["model"]).is_dir():
        return config["max_length"]
    limit = max_length_allowed(model_config_without_weights(config["model"]))
    if config["max_length"] > limit and given:
        raise UsageError(f"--max-length {config['max_length']} is more than {config['model']} takes: "
                         f"allowed at most {limit}")
    return min(config["max_length"], limit)


def planned_steps(config, download=True):
    """The run's number of optimizer steps: --max-steps, or the epochs over the task's training split (None if
    the data is not here and download is False)."""
    if config["max_steps"] is not None:
        return config["max_steps"]
    n_train = count_training_examples(config["task"], config["data_dir"], download)
    return None if n_train is None else config["epochs"] * math.ceil(n_train / config["batch_size"])


def decide_method_settings(config, total):
    """The method's own settings for this run: its schedule's (spectral_ft: `schedule.decide`) for the run's
    `total` steps (unchanged where that is unknown, None)."""
    cls = method_class(config["method"])
    settings = dict(config["method_settings"])
    decide = getattr(spectral_ft.declared(cls, "schedule"), "decide", None) if cls else None
    return settings if decide is None or total is None else decide(settings, total)


def decide_compile(scope, given, total):
    """What mode 'graph' compiles (run/step.py's compile_in_place): --compile, or by the run's `total` steps:
    'layers' from LAYERS_FROM_STEPS on, where the faster step repays its compilation; below, or where the length is
    unknown, 'none' (CUDA graphs alone), which starts soonest (REPRODUCE §3g, §3l)."""
    if given:
        return scope
    return "layers" if total is not None and total >= LAYERS_FROM_STEPS else "none"


def count_training_examples(task, data_dir, download=True):
    """The number of examples in the task's training split (data.load_task: downloading it if allowed), or None
    where download is False and the split is not here."""
    if download:
        return len(load_task(task, data_dir)[0])
    try:
        return len(load_glue(task, "train", data_dir, download=False))
    except (FileNotFoundError, ValueError):
        return None


def default_out(config):
    """runs/<method>-<task>-<model>-s<seed>-<8 hex>: the hex is a hash of every setting that changes
    the results, so unrelated runs (another model, another --lr) never share a folder and the same
    command twice finds its earlier run (and is told to --resume it or choose another --out)."""
    settings = json.dumps({k: v for k, v in config.items() if k not in NOT_IN_RUN_NAME}, sort_keys=True)
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(config["model"]).name) or "model"
    return (f"runs/{config['method']}-{config['task']}-{stem}-s{config['seed']}-"
            f"{hashlib.sha256(settings.encode()).hexdigest()[:8]}")


def finish_device(config, explicit):
    """The device (default cuda when there is one) and the precision (default bf16 where the GPU has it)."""
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


def default_targets(model, cls=None):
    """The method's own default targets where its class names some (spectral_ft: `default_targets`), else the
    query and value projections: "query,value" (BERT, RoBERTa), "query_proj,value_proj" (DeBERTa). Read from the
    config of known names and local folders; a hub id is judged by its name (no download)."""
    own = spectral_ft.declared(cls, "default_targets") if cls else spectral_ft.DEFAULT_TARGETS
    if own != spectral_ft.DEFAULT_TARGETS:
        return ",".join(own)
    if model != "tiny" and (model in KNOWN_CONFIGS or Path(model).is_dir()):
        deberta = isinstance(model_config_without_weights(model), DebertaV2Config)
    else:
        deberta = "deberta" in Path(str(model)).name.lower()
    return "query_proj,value_proj" if deberta else "query,value"


def model_config_without_weights(name):
    """The config of --model (model.config_from_json), downloading at most its config.json (nothing for
    known names)."""
    if name == "tiny":
        return tiny_config("bert", len(TINY_SPECIAL_TOKENS))
    if name in KNOWN_CONFIGS:
        return config_from_json(KNOWN_CONFIGS[name])
    if not Path(name).is_dir() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"--model {name} is not a directory, nor a hub id like 'FacebookAI/roberta-base'")
    path = Path(name) / "config.json" if Path(name).is_dir() else hf_hub_download(name, "config.json")
    return read_config(path)


def max_length_allowed(model_config):
    """The most tokens the model's position embeddings take (RoBERTa's start after the padding index)."""
    offset = model_config.pad_token_id + 1 if model_config.model_type == "roberta" else 0
    return model_config.max_position_embeddings - offset


# -----------------------------------------------------------------------------
# the flags


def spectral_ft_name(dest):
    return SPECTRAL_FT_NAME.get(dest, dest)


def flag(dest):
    if isinstance(HYPERPARAMETER_DEFAULTS.get(dest), bool):
        return f"--{dest.replace('_', '-')}/--no-{dest.replace('_', '-')}"
    return "--" + (dest if dest in method_settings_declared() and "_" in dest and dest[1] == "_" else dest).replace("_", "-")


def build_parser(description):
    rows = {}  # method -> family -> tasks with a paper row
    for m, family, t, *_ in PAPER_SETTINGS:
        rows.setdefault(m, {}).setdefault(family, []).append(t)
    p = Parser(description=description, epilog="Paper rows (run/paper_rows.py; see --print-config): " + "; ".join(
                   f"{m} on {family} ({' '.join(dict.fromkeys(tasks))})" for m, by in rows.items()
                   for family, tasks in by.items()) + ". Other combinations use generic defaults. Every flag overrides.")
    a, row = p.add_argument, "(default: the paper's row, see --print-config)"
    a("--method", choices=METHODS, help=f"default {HEADLINE['method']}; full: every weight trains, head: classifier only")
    named = {}  # name -> (method, family) -> tasks with a row of that name
    for m, family, t, name in named_rows():
        named.setdefault(name, {}).setdefault((m, family), []).append(t)
    a("--row", help="a named variant of the paper's row for this method, model and task (default: the paper's row; "
      "--print-config says which is in force): " + ("; ".join(
          f"{name} for " + ", ".join(f"{m} on {family} ({' '.join(tasks)})" for (m, family), tasks in by.items())
          for name, by in named.items()) or "none yet"))
    a("--targets", help="comma-separated suffixes of the linear layers to adapt "
                        "(default query,value; DeBERTa: query_proj,value_proj; or the paper row's)")
    for dest in HYPERPARAMETER_FLAGS:  # the methods' keywords, named as in spectral_ft, typed by their defaults
        takes = ", ".join(m for m in spectral_ft.METHODS if spectral_ft_name(dest) in spectral_ft.hyperparameters(m))
        default = HYPERPARAMETER_DEFAULTS[dest]
        kind = (dict(action=argparse.BooleanOptionalAction) if isinstance(default, bool)
                else dict(type=bounded(int, 0, 2**64)) if dest == "adapter_seed"
                else dict(type=float if default is None else type(default)))
        if dest == "adapter_seed":
            a("--adapter-seed", **kind, help=f"the adapter's own seed: {takes} (default: --seed for "
              f"{', '.join(sorted(spectral_ft.SEED_FOLLOWS_RUN))}, whose authors draw from the run's generator; "
              f"the reference's fixed seed for the others)")
            continue
        a(flag(dest).split("/")[0], **kind, help=f"{takes} {row}")
    for dest, (kind, default, text) in method_settings_declared().items():  # what a method adds (spectral_ft)
        takers = ", ".join(m for m in spectral_ft.METHODS if dest in spectral_ft.declared(m, "settings"))
        a(flag(dest), dest=dest, type=bounded(kind, 0) if kind in (int, float) else kind,
          help=f"{takers}: {text} (default {default}, or the paper's row)")
    a("--model", help=f"hub id or local checkpoint folder (default {HEADLINE['model']}); 'tiny': a tiny random BERT, "
                      f"offline")
    a("--task", choices=sorted(TASKS), help=f"GLUE task (default {HEADLINE['task']})")
    a("--data-dir", help="folder holding the task's TSVs (default data/glue/<FOLDER>, or $GLUE_DIR/<FOLDER>, "
      "downloaded if missing)")
    a("--epochs", type=bounded(int, 1), help=row)
    a("--max-steps", type=bounded(int, 1), help="overrides --epochs")
    a("--batch-size", type=bounded(int, 1), help=f"examples per optimizer step, over all processes of a torchrun {row}")
    a("--micro-batch-size", type=bounded(int, 1), help="most examples one process puts through one forward pass; "
      "the rest of its share of the batch accumulates gradients (default: its whole share)")
    a("--max-length", type=bounded(int, 4), help=f"tokens per example, at most the model's positions {row}")
    a("--lr", type=bounded(float, 0, strict=True), help=f"adapter learning rate (every weight for --method full) {row}")
    a("--lr-head", type=bounded(float, 0, strict=True), help=f"learning rate of the classification head {row}")
    a("--weight-decay", type=bounded(float, 0), help=f"AdamW's weight decay {row}")
    a("--warmup-ratio", type=bounded(float, 0, 1), help=f"fraction of the steps of linear warmup {row}")
    a("--precision", choices=["bf16", "fp16", "fp32", "fp64"],
      help="default bf16 on a GPU that has it, else fp32; fp64: every weight in float64, for exact comparisons")
    a("--device", help="cpu, cuda, cuda:1, ... (default cuda if available)")
    a("--eager", action="store_true", default=None, help="on a GPU, run steps and evaluation eagerly instead of as "
      "CUDA graphs (graphs pad batches to lengths of multiples of 32; fp16 always runs eager; the CPU always does)")
    a("--compile", choices=COMPILE_SCOPES, help="inside the CUDA graphs, torch.compile the adapted layers "
      "(adapters), each transformer layer (layers: the backbone fused too, one program for all), the whole model "
      f"(model: the longest start) or nothing (none); default: layers for a run of {LAYERS_FROM_STEPS:,} steps or "
      "more, else none")
    a("--seed", type=bounded(int, 0, 2**32), help="the run's seed (default 0)")
    a("--out", help="output folder (default runs/<method>-<task>-<model>-s<seed>-<hash of the settings>)")
    a("--save-every", type=bounded(int, 1), help="checkpoint every N steps (always at each epoch end)")
    a("--save-minutes", type=bounded(float, 0), help="also checkpoint when this many minutes have passed since "
      "the last checkpoint (default 10; 0: never by time)")
    a("--eval-every", type=bounded(int, 1), help="evaluate every N steps (default: each epoch)")
    a("--log-every", type=bounded(int, 1), help="log the mean training loss of the last N steps to log.jsonl "
      "(default 50)")
    a("--resume", help="continue the run whose checkpoint.pt is in this folder, writing there and nothing else")
    a("--count-params", action="store_true", default=None, help="print trainable parameters and exit")
    a("--print-config", action="store_true", default=None,
      help="print the configuration the run would use (the paper row, then the flags) as JSON and exit; downloads "
           "nothing")
    return p


# -----------------------------------------------------------------------------
# what trains, judged on the model's shapes before any weight is read


def prepare_model(model, method, targets=None, hyperparameters=None):
    """Adapters in, everything else frozen but the head (or nothing frozen for full)."""
    if method == "full":
        return model.requires_grad_(True)
    model.requires_grad_(False)
    if method != "head":
        spectral_ft.inject(model, method, targets=targets, **(hyperparameters or {}))
    head = set(model.head_parameter_names())
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad_(True)
    return model


def method_schedule(model, config):
    """The method's own schedule (its class's `schedule`, given the settings it takes), or None."""
    schedule = spectral_ft.declared(config.method, "schedule") if config.method in spectral_ft.METHODS else None
    if schedule is None:
        return None
    takes = inspect.signature(schedule).parameters
    return schedule(model, **{k: v for k, v in config.method_settings.items() if k in takes})


def in_own_group(model):
    """{parameter name: (group name, rate setting)} of the tensors that train in a group of their own (a method's
    `own_group`, e.g. LoCA's {'....locations': ('locations', 'lr_locations')})."""
    return {f"{name}.{group[0]}": group for name, a in spectral_ft.adapters(model)
            if (group := spectral_ft.declared(a, "own_group"))}


def count_parameters(model):
    """Trainable parameters outside the head, as the papers count them (not the tensors in a group of their own,
    e.g. LoCA's locations, which stop training), and in the head; `adapter_while_searching`: with those tensors."""
    head, own = set(model.head_parameter_names()), in_own_group(model)
    outside = [(name, p) for name, p in model.named_parameters() if p.requires_grad and name not in head]
    counts = {"adapter": sum(p.numel() for name, p in outside if name not in own),
              "head": sum(p.numel() for name, p in model.named_parameters() if name in head)}
    if own:
        counts["adapter_while_searching"] = sum(p.numel() for _, p in outside)
    return counts


def adapted_layers(model, targets):
    """The linear layers whose dotted name ends with one of `targets` (as spectral_ft.inject matches)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets or ())]


def check_adapter_size(model, config):
    """Refuse, before allocating anything, an adapter larger than the model it adapts (and than
    ADAPTER_FLOOR): e.g. --r 1000000000 for LoRA would ask for terabytes. Its size is estimated from the
    adapted layers' shapes: r (in + out) per layer for the methods with a rank, plus the coefficients."""
    hp = config.hyperparameters
    shapes = [(m.out_features, m.in_features) for _, m in adapted_layers(model, config.targets)]
    r, n = hp.get("r"), hp.get("n")
    r = r if isinstance(r, int) and not isinstance(r, bool) and r > 0 else 0
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
    if not shapes or not (r or n):
        return
    size = sum(r * (o + i) + 2 * n for o, i in shapes)
    own = sum(p.numel() for p in model.parameters())
    bound = max(own, ADAPTER_FLOOR)
    if size > bound:
        what = f"--r {r}" if r else f"--n {n}"
        raise UsageError(f"{what}: {config.method} on {len(shapes)} layers of {config.model} would hold about {size:,} "
                         f"parameters ({size * 4 / 2**30:,.1f} GiB in float32), more than allowed: at most "
                         f"{bound:,} (the model's own {own:,}, or {ADAPTER_FLOOR:,}); choose a smaller {what.split()[0]}")


def check_targets_outside_head(model, targets):
    """--targets adapt the encoder: a target inside the classification head (trained whole, at --lr-head)
    would be trained twice."""
    head = sorted({n.rsplit(".", 1)[0] for n in model.head_parameter_names()})
    inside = [name for name, _ in adapted_layers(model, targets) if name in head]
    if inside:
        raise UsageError(f"--targets {','.join(targets)} names {', '.join(inside)}, in the classification head "
                         f"({', '.join(head)}), which trains whole at --lr-head: name encoder layers only")


def dry_inject(config):
    """The method on the model's shapes without its weights: built on the meta device, but for the adapted
    layers (random CPU weights: some methods read them). Bad targets and hyperparameters fail here, before
    any download of weights; and parameters are counted without one (--count-params): count_parameters's, and
    `model`: the model's own parameters (head included, no adapter), which the papers' percentages divide by."""
    with torch.device("meta"):
        model = classifier_for(model_config_without_weights(config.model), TASKS[config.task].num_labels)
    own = sum(p.numel() for p in model.parameters())
    if config.method not in NO_ADAPTER:
        check_targets_outside_head(model, config.targets)
        check_adapter_size(model, config)
    for _, module in adapted_layers(model, config.targets):
        model._init_weights(module.to_empty(device="cpu"))
    return dict(count_parameters(prepare_model(model, config.method, config.targets, config.hyperparameters)), model=own)


def describe(config, world, n_train, steps_per_epoch, total_steps):
    """The settings a run prints at its start, one a line."""
    lines = [f"train.py: {config.method} on {config.model}, GLUE {TASKS[config.task].name} (settings: "
             f"{config.settings}; flags override)"]
    for key in ("hyperparameters", "targets", "epochs", "max_steps", "batch_size", "lr", "lr_head", "weight_decay",
                "warmup_ratio", "max_length", "method_settings", "precision", "device", "seed", "data_dir", "out",
                "save_every", "save_minutes", "eval_every", "micro_batch_size"):
        if getattr(config, key) not in (None, {}):
            lines.append(f"  {key:<16}{getattr(config, key)}")
    if world > 1:
        lines.append(f"  processes       {world} (torchrun), each {math.ceil(config.batch_size / world)} "
                     f"examples of every batch")
    warmup = math.ceil(config.warmup_ratio * total_steps)
    lines.append(f"  {n_train} training examples: {steps_per_epoch} steps/epoch, {total_steps} steps, {warmup} "
                 f"of warmup")
    return "\n".join(lines)


def print_counts(config, counts):
    """--count-params: the trainable parameters as the papers count them (outside the head), and their share of
    the model's own parameters (dry_inject's `model`), as the papers' percentages."""
    share = f"{100 * counts['adapter'] / counts['model']:.2f}% of the model's {counts['model']:,}"
    print(f"{config.method} on {config.model} ({config.task}, targets {config.targets}, "
          f"{config.hyperparameters}):\n  trainable outside the head: {counts['adapter']:,} ({share})")
    if "adapter_while_searching" in counts:
        print(f"  while tensors of a group of their own also train (LoCA's location search): "
              f"{counts['adapter_while_searching']:,}")
    print(f"  classification head: {counts['head']:,} (not counted in the papers' tables)")
