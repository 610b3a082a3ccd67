"""
config.py: the flags of train.py and the configuration they resolve to.

A run's configuration is, in this order: the paper's row for (method, model family, task) from
settings.py (or its GENERIC settings), then the flags; a resumed run keeps its checkpoint's
configuration and only RESUME_MAY_CHANGE may differ. Also here, because they judge a configuration
without training: the default adapted layers and output folder, `--print-config`, and the dry inject
(the method on the model's shapes, on the meta device) behind `--count-params` and the early checks of
--targets and the hyperparameters.
"""
import argparse
import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn as nn

import spectral_ft
from data import RTE_SAMPLE_DIR, TASKS
from hub import hf_hub_download
from model import (KNOWN_CONFIGS, TINY_SPECIAL_TOKENS, DebertaV2Config, classifier_for, config_from_json, read_config,
                   tiny_config)
from settings import PAPER_SETTINGS, lookup
from step import COMPILE_SCOPES

TRAINING_KEYS = ("epochs", "batch_size", "lr", "lr_head", "lr_locations", "weight_decay", "warmup_ratio",
                 "max_length", "B_a", "B_l", "T_s")
HYPERPARAMETER_FLAGS = ("r", "n", "alpha", "scaling", "dropout", "d_initial", "transform", "gate", "adapter_seed")
SPECTRAL_FT_NAME = {"adapter_seed": "seed"}  # a flag whose spectral_ft keyword differs (--seed is the run's)
RESUME_MAY_CHANGE = ("resume", "device", "precision", "save_every", "save_minutes", "eval_every", "log_every",
                     "micro_batch_size", "eager", "compile")
NOT_IN_RUN_NAME = ("out", "save_every", "save_minutes", "log_every", "eager", "compile")  # left out of the hash
ADAPTER_FLOOR = 2**26  # parameters an adapter may always hold (256 MiB in float32), whatever the model's size


class UsageError(Exception):
    """Bad input. Reported as one line naming the argument and what is allowed; exit status 2."""


# -----------------------------------------------------------------------------
# the flags


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; main() callers get an exception
        raise UsageError(message)


def bounded(kind, low, high=None, strict=False):
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


def spectral_ft_name(dest):
    return SPECTRAL_FT_NAME.get(dest, dest)


def flag(dest):
    return "--gate/--no-gate" if dest == "gate" else "--" + dest.replace("_", "-")


def build_parser(description):
    rows = {}  # method -> family -> tasks with a paper row
    for m, family, t in PAPER_SETTINGS:
        rows.setdefault(m, {}).setdefault(family, []).append(t)
    p = Parser(description=description, epilog="Paper rows (settings.py; see --print-config): " + "; ".join(
                   f"{m} on {family} ({' '.join(tasks)})" for m, by in rows.items() for family, tasks in by.items())
               + ". Other combinations use generic defaults. Every flag overrides.")
    a = p.add_argument
    a("--method", choices=[*spectral_ft.METHODS, "full", "head"],
      help="default loca; full: every weight trains, head: classifier only")
    a("--targets", help="comma-separated suffixes of the linear layers to adapt "
                        "(default query,value; DeBERTa: query_proj,value_proj)")
    types = dict(r=int, n=int, alpha=float, scaling=float, dropout=float, d_initial=float, transform=str,
                 adapter_seed=bounded(int, 0, 2**64))
    for dest in HYPERPARAMETER_FLAGS:  # the methods' keywords, named as in spectral_ft
        takes = ", ".join(m for m in spectral_ft.METHODS if spectral_ft_name(dest) in spectral_ft.hyperparameters(m))
        kind = dict(action=argparse.BooleanOptionalAction) if dest == "gate" else dict(type=types[dest])
        if dest == "adapter_seed":
            a("--adapter-seed", **kind, help=f"the adapter's own seed: {takes} (default: --seed for "
              f"{', '.join(sorted(spectral_ft.SEED_FOLLOWS_RUN))}, whose authors draw from the run's generator; "
              f"the reference's fixed seed for the others)")
            continue
        a(flag(dest).split("/")[0], **kind, help=f"{takes} (default: the paper's)")
    a("--model", help="hub id or local checkpoint folder (default roberta-base); 'tiny': a tiny random BERT, offline")
    a("--task", choices=sorted(TASKS), help="GLUE task (default rte)")
    a("--data-dir", help="folder holding the task's TSVs (default data/glue/<FOLDER>, or $GLUE_DIR/<FOLDER>, "
      "downloaded if missing)")
    a("--epochs", type=bounded(int, 1)), a("--max-steps", type=bounded(int, 1), help="overrides --epochs")
    a("--batch-size", type=bounded(int, 1), help="examples per optimizer step, over all processes of a torchrun")
    a("--micro-batch-size", type=bounded(int, 1), help="most examples one process puts through one forward pass; "
      "the rest of its share of the batch accumulates gradients (default: its whole share)")
    a("--max-length", type=bounded(int, 4))
    a("--lr", type=bounded(float, 0, strict=True), help="adapter learning rate (every weight for --method full)")
    a("--lr-head", type=bounded(float, 0, strict=True)), a("--lr-locations", type=bounded(float, 0))
    a("--weight-decay", type=bounded(float, 0)), a("--warmup-ratio", type=bounded(float, 0, 1))
    a("--B-a", type=bounded(int, 0), help="LoCA: coefficient steps per cycle")
    a("--B-l", type=bounded(int, 0), help="LoCA: location steps per cycle")
    a("--T-s", type=bounded(int, 0), help="LoCA: steps of location search, then locations freeze")
    a("--precision", choices=["bf16", "fp16", "fp32", "fp64"],
      help="default bf16 on a GPU that has it, else fp32; fp64: every weight in float64, for exact comparisons")
    a("--device", help="cpu, cuda, cuda:1, ... (default cuda if available)")
    a("--eager", action="store_true", default=None, help="on a GPU, run steps and evaluation eagerly instead of as "
      "CUDA graphs (graphs pad batches to lengths of multiples of 32; fp16 always runs eager; the CPU always does)")
    a("--compile", choices=COMPILE_SCOPES, help="inside the CUDA graphs, torch.compile the adapted layers "
      "(adapters, the default), the whole model (model: faster steps, a longer start) or nothing (none)")
    a("--seed", type=bounded(int, 0, 2**32), help="the run's seed (default 0)")
    a("--out", help="output folder (default runs/<method>-<task>-<model>-s<seed>-<hash of the settings>)")
    a("--save-every", type=bounded(int, 1), help="checkpoint every N steps (always at each epoch end)")
    a("--save-minutes", type=bounded(float, 0), help="also checkpoint when this many minutes have passed since "
      "the last checkpoint (default 10; 0: never by time)")
    a("--eval-every", type=bounded(int, 1), help="evaluate every N steps (default: each epoch)")
    a("--log-every", type=bounded(int, 1), help="log the mean training loss of the last N steps to log.jsonl "
      "(default 50)")
    a("--resume", help="continue the run whose checkpoint.pt is in this folder, writing there and nowhere else")
    a("--count-params", action="store_true", default=None, help="print trainable parameters and exit")
    a("--print-config", action="store_true", default=None,
      help="print the resolved configuration (the paper row, then the flags) as JSON and exit; downloads nothing")
    return p


# -----------------------------------------------------------------------------
# the configuration: a paper row, then the flags; or a resumed run's own


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
        return finish_device(resumed_config(args, explicit, saved), explicit)
    config = finish_device(new_config(args, explicit), explicit)
    config["out"] = args.out or default_out(config)
    return config


def resumed_config(args, explicit, saved):
    """The checkpoint's configuration, with the flags a resumed run may change."""
    if "out" in explicit and Path(explicit["out"]).resolve() != Path(args.resume).resolve():
        raise UsageError(f"--out {explicit['out']} with --resume {args.resume}: a resumed run reads and writes its "
                         f"own folder and nothing else; copy the folder to continue it elsewhere")
    for key, value in explicit.items():
        if key == "out" or key in RESUME_MAY_CHANGE:
            continue
        old = saved["hyperparameters"].get(spectral_ft_name(key)) if key in HYPERPARAMETER_FLAGS else saved.get(key)
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
    config.setdefault("save_minutes", 10.0)  # checkpoints of older runs lack these
    config.setdefault("log_every", 50)
    return config


def new_config(args, explicit):
    """The paper row for (method, model, task) over GENERIC, then the flags, checked against the method."""
    method, model, task = args.method or "loca", args.model or "roberta-base", args.task or "rte"
    settings, described = lookup(method, model, task)  # the paper row over GENERIC (settings.py)
    takes = {} if method in ("full", "head") else spectral_ft.hyperparameters(method)
    unused = check_method_flags(method, takes, explicit)
    given = {spectral_ft_name(d): v for d, v in explicit.items() if d in HYPERPARAMETER_FLAGS}
    hyperparameters = {name: given.get(name, settings.get(name, default)) for name, default in takes.items()}
    if hyperparameters.get("alpha", 0) is None:  # FoRA and DFoRA: alpha defaults to r (scale 1), shown as such
        hyperparameters["alpha"] = float(hyperparameters["r"])
    if method in spectral_ft.SEED_FOLLOWS_RUN and "adapter_seed" not in explicit:  # as the authors' code draws it
        hyperparameters["seed"] = args.seed or 0
    if model not in ("tiny", *KNOWN_CONFIGS) and Path(model).is_dir():
        model = str(Path(model).resolve())  # a local folder: found again from any directory (--resume)
    data_dir = None if args.data_dir is None else str(Path(args.data_dir).expanduser().resolve())
    if model == "tiny" and data_dir is None and task == "rte":
        data_dir = str(RTE_SAMPLE_DIR)
    config = dict(method=method, model=model, task=task, targets=None, hyperparameters=hyperparameters,
                  settings=described, data_dir=data_dir, max_steps=args.max_steps, seed=args.seed or 0,
                  save_every=args.save_every, save_minutes=10.0 if args.save_minutes is None else args.save_minutes,
                  eval_every=args.eval_every, log_every=args.log_every or 50, micro_batch_size=args.micro_batch_size,
                  eager=bool(args.eager), compile=args.compile or "adapters")
    config.update({k: None if k in unused else explicit.get(k, settings[k]) for k in TRAINING_KEYS})
    if method not in ("full", "head"):
        row_targets = ",".join(settings["targets"]) if "targets" in settings else None
        config["targets"] = (args.targets or row_targets or default_targets(model)).split(",")
    return dict(config, out=args.out)


def check_method_flags(method, takes, explicit):
    """Refuse flags the method does not take, naming what it does take. -> the training keys it leaves unused."""
    for dest in HYPERPARAMETER_FLAGS:
        if dest in explicit and spectral_ft_name(dest) not in takes:
            allowed = ", ".join(flag(d) for d in HYPERPARAMETER_FLAGS if spectral_ft_name(d) in takes)
            raise UsageError(f"{flag(dest)} is not a hyperparameter of --method {method}: it takes "
                             f"{allowed or 'no adapter hyperparameters'}")
    loca_only = "only loca has locations (and --lr-locations, --B-a, --B-l, --T-s)"
    unused = {"lr_locations": method != "loca" and loca_only, "B_a": method != "loca" and loca_only,
              "B_l": method != "loca" and loca_only, "T_s": method != "loca" and loca_only,
              "lr": method == "head" and "it trains the head alone, at --lr-head",
              "lr_head": method == "full" and "every weight trains at --lr",
              "targets": method in ("full", "head") and "it adapts no layers"}
    for key, why in unused.items():
        if why and key in explicit:
            raise UsageError(f"{flag(key)} does not apply to --method {method}: {why}")
    return {key for key, why in unused.items() if why and key != "targets"}


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


def default_targets(model):
    """The query and value projections: "query,value" (BERT, RoBERTa), "query_proj,value_proj" (DeBERTa).
    Read from the config of known names and local folders; a hub id is judged by its name (no download)."""
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
# what trains, judged on the model's shapes before any weight is read


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


def count_parameters(model, method):
    """Trainable parameters outside the head (LoCA: coefficients only, as after T_s) and in the head."""
    head = set(model.head_parameter_names())
    outside = [(name, p) for name, p in model.named_parameters() if p.requires_grad and name not in head]
    counts = {"adapter": sum(p.numel() for name, p in outside if not is_location(method, name)),
              "head": sum(p.numel() for name, p in model.named_parameters() if name in head)}
    if method == "loca":
        counts["adapter_during_search"] = sum(p.numel() for _, p in outside)  # coefficients + locations
    return counts


def is_location(method, name):
    """LoCA's locations: searched for T_s steps at --lr-locations, without weight decay, then frozen."""
    return method == "loca" and name.endswith(".locations")


def adapted_layers(model, targets):
    """The linear layers whose dotted name ends with one of `targets` (as spectral_ft.inject matches)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets or ())]


def check_adapter_size(model, config):
    """Refuse, before allocating anything, an adapter larger than the model it adapts (and than
    ADAPTER_FLOOR): e.g. --r 1000000000 for LoRA would ask for terabytes. Its size is estimated from the
    adapted layers' shapes: r (in + out) per layer for the methods with a rank (VeRA: its shared pair
    once), plus the spectral coefficients."""
    hp, method = config["hyperparameters"], config["method"]
    shapes = [(m.out_features, m.in_features) for _, m in adapted_layers(model, config["targets"])]
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


def check_targets_outside_head(model, targets):
    """--targets adapt the encoder: a target inside the classification head (trained whole, at --lr-head)
    would be trained twice."""
    head = sorted({n.rsplit(".", 1)[0] for n in model.head_parameter_names()})
    inside = [name for name, _ in adapted_layers(model, targets) if name in head]
    if inside:
        raise UsageError(f"--targets {','.join(targets)} names {', '.join(inside)}, in the classification head "
                         f"({', '.join(head)}), which trains whole at --lr-head: name encoder layers only")


def dry_inject(config, max_length_given=True):
    """The method on the model's shapes without its weights: built on the meta device, but for the
    adapted layers (random CPU weights: some methods read them). A --max-length the model cannot take,
    bad targets and hyperparameters fail here, before any download (a paper row's max length is cut to
    the model's, unless given as a flag); and parameters are counted without one (--count-params)."""
    model_config = model_config_without_weights(config["model"])
    limit = max_length_allowed(model_config)
    if config["max_length"] > limit and max_length_given:
        raise UsageError(f"--max-length {config['max_length']} is more than {config['model']} takes: "
                         f"allowed at most {limit}")
    config["max_length"] = min(config["max_length"], limit)
    with torch.device("meta"):
        model = classifier_for(model_config, TASKS[config["task"]].num_labels)
    if config["method"] not in ("full", "head"):
        check_targets_outside_head(model, config["targets"])
        check_adapter_size(model, config)
    for _, module in adapted_layers(model, config["targets"]):
        model._init_weights(module.to_empty(device="cpu"))
    return count_parameters(prepare_model(model, config), config["method"])


def describe(config, world, n_train, steps_per_epoch, total_steps):
    """The settings a run prints at its start, one a line."""
    lines = [f"train.py: {config['method']} on {config['model']}, GLUE {TASKS[config['task']].name} (settings: "
             f"{config['settings']}; flags override)"]
    for key in ("hyperparameters", "targets", "epochs", "max_steps", "batch_size", "lr", "lr_head", "lr_locations",
                "weight_decay", "warmup_ratio", "max_length", "B_a", "B_l", "T_s", "precision", "device", "seed",
                "data_dir", "out", "save_every", "save_minutes", "eval_every", "micro_batch_size"):
        if config.get(key) is not None:
            lines.append(f"  {key:<16}{config[key]}")
    if world > 1:
        lines.append(f"  processes       {world} (torchrun), each {math.ceil(config['batch_size'] / world)} "
                     f"examples of every batch")
    warmup = math.ceil(config["warmup_ratio"] * total_steps)
    lines.append(f"  {n_train} training examples: {steps_per_epoch} steps/epoch, {total_steps} steps, {warmup} "
                 f"of warmup" + (f", T_s {config['T_s']}" if config["method"] == "loca" else ""))
    return "\n".join(lines)


def print_counts(config, counts):
    """--count-params: the trainable parameters as the papers count them (outside the head)."""
    print(f"{config['method']} on {config['model']} ({config['task']}, targets {config['targets']}, "
          f"{config['hyperparameters']}):\n  trainable outside the head: {counts['adapter']:,}")
    if config["method"] == "loca":
        print(f"  during LoCA's location search (coefficients + locations): {counts['adapter_during_search']:,}")
    print(f"  classification head: {counts['head']:,} (not counted in the papers' tables)")
