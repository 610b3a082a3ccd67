"""
Export a fine-tuned model (a train.py run folder) for use outside this project.

    python export.py runs/lora-rte-roberta-base-s0-1a2b3c4d exported/    # the best dev evaluation, transformers
    python export.py RUN_DIR OUT_DIR --which final --format peft          # the last step, as a PEFT adapter

--which best (default): RUN_DIR/best/adapter.safetensors, the trained tensors of the best dev evaluation;
--which final: RUN_DIR/adapter.safetensors, those after the last step. Either is put back on the run's base
checkpoint as train.py built it (results.json's config: model, method, targets, hyperparameters), then written
in one of two formats:

--format hf (default): the base checkpoint with every adapter merged into its weight (spectral_ft.merge), in
    Hugging Face's layout: config.json, model.safetensors and the tokenizer files the base came with, for
    transformers' AutoModelForSequenceClassification.from_pretrained(OUT_DIR) (or model.load_pretrained).
    Every method whose ΔW is fixed (all but FouRA with its input-dependent gate), and full and head.
--format peft: adapter_config.json and adapter_model.safetensors as PEFT 0.21 saves them, for
    peft.PeftModel.from_pretrained(base_model, OUT_DIR): LoRA, VeRA and FourierFT, whose conventions PEFT
    shares (LoRA's alpha / r; VeRA's frozen pair from projection_prng_key; FourierFT's entries from
    random_loc_seed), with the trained head as PEFT's modules_to_save.

An unfinished run (interrupted: checkpoint.pt, no results.json yet) exports its best evaluation so far with
--which best, the configuration read from checkpoint.pt; `python train.py --resume RUN_DIR` finishes it.

OUT_DIR must not exist, or be empty. It is built in a temporary folder beside it and renamed at the end, so it
never holds half an export. Exit status: 0 done; 1 stopped by what no other command line fixes (the network,
a full disk); 2 bad input (a run folder, a flag, an OUT_DIR that cannot be made), named in one line.
"""
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import spectral_ft
from data import TASKS
from encoder.hub import atomic_write, read_safetensors, read_safetensors_metadata, write_safetensors
from run.config import flag
from run.errors import Parser, UsageError
from encoder.model import checkpoint_folder, hf_key, load_classifier, save_pretrained
from run.folder import load_trainable_state

ADAPTER_FILES = {"best": Path("best") / "adapter.safetensors", "final": Path("adapter.safetensors")}
TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spm.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")
NOT_ADAPTERS = ("full", "head")  # train.py's methods without adapters: every weight trains, or the head alone

# PEFT 0.21: each method's class in spectral_ft says its peft_type and {our tensor: PEFT's key after the layer's
# name} (`peft`), its adapter_config.json fields (`peft_fields`) and what PEFT saves once (`peft_shared`). Saving
# drops the adapter name ("default") from each key (tuners/tuners_utils.py, _remove_adapter_name_from_state_dict_key).
PEFT_TUNERS = {method: spectral_ft.declared(method, "peft") for method in spectral_ft.METHODS
               if spectral_ft.declared(method, "peft")}
PEFT_VERSION = "0.21.0"  # the format written: key names and config fields as this version saves them
PEFT_PREFIX = "base_model.model."  # PeftModel.base_model (the tuner) .model (the transformers model)


def build_parser():
    p = Parser(prog="export.py", description=__doc__.split("\n")[1])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a train.py run folder: a finished one (results.json), or for --which best an "
                        "unfinished one (checkpoint.pt)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write; must not exist, or be empty")
    p.add_argument("--which", choices=tuple(ADAPTER_FILES), default="best",
                   help="best: the best dev evaluation's tensors (best/adapter.safetensors, the default); "
                        "final: those after the last step (adapter.safetensors)")
    p.add_argument("--format", choices=("hf", "peft"), default="hf", dest="fmt",
                   help="hf: the merged model for transformers (default); peft: a PEFT adapter (lora, vera, fourierft)")
    return p

# -----------------------------------------------------------------------------
# reading the run: results.json's config, the adapter file, the base checkpoint


def config_problem(config):
    """What keeps results.json's config from describing a run export.py can rebuild, or None."""
    if not isinstance(config, dict):
        return "config is not an object"
    methods = (*spectral_ft.METHODS, *NOT_ADAPTERS)
    targets = config.get("targets")
    if config.get("method") not in methods:
        return f"method {config.get('method')!r} is not one of {', '.join(methods)}"
    if not isinstance(config.get("model"), str):
        return "model is not a string (a hub id, a folder, or 'tiny')"
    if config.get("task") not in TASKS:
        return f"task {config.get('task')!r} is not one of {', '.join(sorted(TASKS))}"
    if not isinstance(config.get("hyperparameters"), dict):
        return "hyperparameters is not an object"
    if config["method"] not in NOT_ADAPTERS and not (isinstance(targets, list) and targets
                                                    and all(isinstance(t, str) for t in targets)):
        return "targets is not a list of layer names"
    return None


def read_run(run_dir, which="best"):
    """(config, results) of RUN_DIR: results.json (train.py writes it when a run finishes) and its "config",
    checked for what export needs; for an unfinished run (checkpoint.pt, no results.json yet), checkpoint.pt's
    config and results None (unfinished_run_config)."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not run_dir.is_dir():
        raise UsageError(f"RUN_DIR {run_dir} is not a folder: give a train.py run folder")
    if not path.is_file() and (run_dir / "checkpoint.pt").is_file():
        return unfinished_run_config(run_dir, which), None
    if not path.is_file():
        raise UsageError(f"{path} does not exist: RUN_DIR must be a finished train.py run (results.json is "
                         f"written at its end)")
    try:
        results = json.loads(path.read_bytes().decode("utf-8"))
        config = results["config"]
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text: not a train.py results file") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): not a train.py results file") from None
    except (KeyError, TypeError):
        raise UsageError(f"{path} has no \"config\" object: not a train.py results file") from None
    problem = config_problem(config)
    if problem:
        raise UsageError(f"{path}: {problem}; not a train.py results file")
    return config, results


def unfinished_run_config(run_dir, which):
    """The config of a run that has not finished (checkpoint.pt, no results.json): checkpoint.pt's, the one the
    run finishes with, for --which best once the run has evaluated; otherwise how to finish the run."""
    path = run_dir / "checkpoint.pt"
    try:  # mmap: the config and step alone are read, not every tensor
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        config, step = json.loads(checkpoint["config"]), int(checkpoint["step"])
    except Exception as e:
        raise UsageError(f"{path} is not a checkpoint written by train.py ({type(e).__name__}) and {run_dir} "
                         f"holds no results.json: not a train.py run folder") from None
    problem = config_problem(config)
    if problem:
        raise UsageError(f"{path}: {problem}; not a train.py checkpoint")
    unfinished = (f"RUN_DIR {run_dir} is an unfinished train.py run (checkpoint.pt at step {step}, no results.json "
                  f"yet): finish it with `python train.py --resume {run_dir}`")
    has_best = (run_dir / ADAPTER_FILES["best"]).is_file()
    if which == "final":
        raise UsageError(f"{unfinished}, then export its final tensors"
                         + (", or export its best evaluation so far with --which best" if has_best else ""))
    if not has_best:
        raise UsageError(f"{unfinished}; it has not evaluated yet, so there is no best/adapter.safetensors to export")
    return config


def check_exportable(config, fmt):
    """Refuse, before anything is read, a method the format cannot carry."""
    method = config["method"]
    if fmt == "peft" and method not in PEFT_TUNERS:
        raise UsageError(f"--format peft: PEFT has no tuner for --method {method} (only for {', '.join(PEFT_TUNERS)}); "
                         f"use --format hf, the merged model")
    chosen = {**spectral_ft.hyperparameters(method), **config["hyperparameters"]} if method in spectral_ft.METHODS else {}
    for name, value in (spectral_ft.declared(method, "unmergeable") if chosen else {}).items():
        if chosen[name] == value:
            raise UsageError(f"--method {method} with {name}={value} has no fixed ΔW to merge, so it cannot be exported; "
                             f"train without it ({flag(name)}) to export")


def adapter_file(run_dir, which):
    path = Path(run_dir) / ADAPTER_FILES[which]
    if path.is_file():
        return path
    if which == "best":
        raise UsageError(f"{path} does not exist (the run kept no best evaluation); --which final exports "
                         f"{Path(run_dir) / ADAPTER_FILES['final']}, the tensors after the last step")
    raise UsageError(f"{path} does not exist: RUN_DIR must be a finished train.py run")


NOTHING_WRITTEN = "nothing was written"
# Making OUT_DIR's folders: another OUT_DIR avoids these (exit 2); a full disk or a failing device stays exit 1
ANOTHER_OUT_DIR_FIXES = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EEXIST,
                         errno.ENAMETOOLONG, errno.ELOOP)


def check_out_dir(out_dir):
    """Refuse, before anything is read, an OUT_DIR that cannot be made: one that holds files, or lies under a
    file, or in a folder this user may not write (export.py creates the missing folders above OUT_DIR)."""
    out = Path(out_dir)
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"OUT_DIR {out} exists and is not an empty folder: choose a new one (export.py never "
                             f"overwrites); {NOTHING_WRITTEN}")
        existing = next(p for p in out.absolute().parents if p.exists())  # where the first folder is made
    except OSError as e:
        raise UsageError(f"OUT_DIR {out}: {e.strerror or e}; {NOTHING_WRITTEN}") from None
    if not existing.is_dir():
        raise UsageError(f"OUT_DIR {out}: {existing} is a file, not a folder; {NOTHING_WRITTEN}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"OUT_DIR {out}: cannot create a folder in {existing} ({os.strerror(errno.EACCES)}); "
                         f"{NOTHING_WRITTEN}")


def read_trained(path, method):
    """The tensors of a train.py adapter file and its metadata, whose method must be the run's."""
    try:
        state, metadata = read_safetensors(path), read_safetensors_metadata(path)
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        detail = str(e) if str(path) in str(e) else f"{path}: {e}"  # hub.py's messages name the file already
        raise UsageError(f"{detail} (a damaged adapter file)") from None
    saved = metadata.get("method")
    if saved is not None and saved != method:
        raise UsageError(f"{path} holds a --method {saved} adapter, but the run's config says {method}")
    return state, metadata


def base_folder(config, run_dir):
    """The local folder of the run's base checkpoint: RUN_DIR/tiny-model for --model tiny, else the config's
    folder or hub id (downloaded into the cache if it is not there)."""
    if config["model"] == "tiny":
        folder = Path(run_dir) / "tiny-model"
        if not (folder / "config.json").is_file():
            raise UsageError(f"{folder / 'config.json'} does not exist: a --model tiny run keeps its model there")
        return folder
    try:
        return checkpoint_folder(config["model"])
    except FileNotFoundError as e:
        raise UsageError(f"the run's base model (results.json's config.model): {e}") from None

# -----------------------------------------------------------------------------
# the run's model, rebuilt


def adapted_model(config, folder, state, source):
    """The run's model as train.py evaluated it, in eval mode: the base checkpoint in `folder`, the method
    injected as train.py injects it (in float32, then cast: float64 for --precision fp64, else float32, bf16
    and fp16 runs keeping float32 master weights), the trained tensors of `state` loaded."""
    model = load_classifier(folder, TASKS[config["task"]].num_labels)
    method = config["method"]
    try:
        if method not in NOT_ADAPTERS:
            spectral_ft.inject(model, method, targets=config["targets"], **config["hyperparameters"])
    except (ValueError, TypeError) as e:
        raise UsageError(f"results.json's targets and hyperparameters do not build a {method} model: {e}") from None
    model.to(torch.float64 if config.get("precision") == "fp64" else torch.float32)
    load_trainable_state(model, method, state, source)
    return model.eval()

# -----------------------------------------------------------------------------
# the two formats


def write_hf(model, folder, base, task):
    """The merged model in Hugging Face's layout (model.save_pretrained), with the base's tokenizer files."""
    spectral_ft.merge(model)
    tokenizer = [base / name for name in TOKENIZER_FILES if (base / name).is_file()]
    save_pretrained(model.float(), folder, tokenizer, labels=TASKS[task].labels)


def peft_config(model, config, base_name):
    """adapter_config.json: the fields PEFT 0.21 writes for the method (its LoraConfig, VeraConfig, ...: the
    class's `peft_fields`), from the adapters as built. modules_to_save: the trained head, listed as PEFT lists it for
    SEQ_CLS (the user's modules, then "classifier", "score": peft_model.py, PeftModelForSequenceClassification)."""
    method = config["method"]
    adapter = spectral_ft.adapters(model)[0][1]
    head = [name for name in model.head_modules if name != "classifier"] + ["classifier", "score"]
    common = dict(peft_type=PEFT_TUNERS[method][0], task_type="SEQ_CLS", base_model_name_or_path=base_name,
                  revision=None, inference_mode=True, target_modules=list(config["targets"]), modules_to_save=head,
                  bias="none", fan_in_fan_out=False, layers_to_transform=None, layers_pattern=None,
                  peft_version=PEFT_VERSION)
    return dict(common, **adapter.peft_fields())


def check_peft_layout(model, method):
    """What PEFT rebuilds must be what the run used: no adapter inside the head (PEFT would train that module
    whole, as modules_to_save), and each adapter as PEFT rebuilds it (spectral_ft's `peft_problem`)."""
    in_head = [name for name, _ in spectral_ft.adapters(model) if name.split(".")[0] in model.head_modules]
    if in_head:
        raise UsageError(f"--format peft: the run adapted layers of the head ({', '.join(in_head)}), which PEFT saves "
                         f"whole as modules_to_save; use --format hf")
    for name, adapter in spectral_ft.adapters(model):
        problem = spectral_ft.declared(adapter, "peft_problem")()
        if problem:
            raise UsageError(f"--format peft: layer {name}: {problem}; use --format hf")


def peft_tensors(model, method):
    """adapter_model.safetensors: each adapter's trained tensors, what the method shares once at the top (VeRA's pair
    (vera/model.py, _get_adapter_state_dict: "base_model.vera_A", "base_model.vera_B"), the head's tensors
    under their module's own names (utils/other.py, ModulesToSaveWrapper.adapter_state_dict), in float32."""
    config, names = model.config, PEFT_TUNERS[method][1]
    tensors = {}
    for layer, adapter in spectral_ft.adapters(model):
        for ours, theirs in names.items():
            tensors[f"{PEFT_PREFIX}{hf_key(config, layer)}.{theirs}"] = getattr(adapter, ours)
    tensors.update({f"base_model.{key}": t for key, t in spectral_ft.declared(spectral_ft.adapters(model)[0][1], "peft_shared")().items()})
    for name, tensor in model.state_dict().items():
        if name.split(".")[0] in model.head_modules:
            tensors[PEFT_PREFIX + hf_key(config, name)] = tensor
    return {key: t.detach().to(torch.float32).contiguous() for key, t in tensors.items()}


def write_peft(model, config, folder, base_name):
    check_peft_layout(model, config["method"])
    write_safetensors(folder / "adapter_model.safetensors", peft_tensors(model, config["method"]), {"format": "pt"})
    with atomic_write(folder / "adapter_config.json", "w") as f:
        f.write(json.dumps(peft_config(model, config, base_name), indent=2, sort_keys=True) + "\n")

# -----------------------------------------------------------------------------
# the whole export


def remove_folders(made):
    """Remove the folders export.py made above OUT_DIR, innermost first (each is empty again)."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def building(out):
    """A temporary folder beside `out`, renamed onto it when the block succeeds (an empty `out` is replaced;
    one filled meanwhile makes the rename fail), removed when it does not, with the folders made above `out`.
    Errors name `out`, the user's path, never the temporary folder: a folder that cannot be made there is a
    UsageError (another OUT_DIR fixes it), any other failure an OSError."""
    made = [p for p in reversed(out.parents) if not p.exists()]  # outermost first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as e:
        remove_folders(made)
        where = Path(e.filename).parent if e.filename else out.parent
        if e.errno in ANOTHER_OUT_DIR_FIXES:
            raise UsageError(f"OUT_DIR {out}: cannot create a folder in {where} ({e.strerror}); "
                             f"{NOTHING_WRITTEN}") from None
        raise OSError(f"OUT_DIR {out}: {e.strerror or e}") from None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual permissions
        os.rename(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_folders(made)
        if isinstance(e, OSError):
            raise OSError(f"OUT_DIR {out}: {e.strerror or e}") from None
        raise


def exported_evaluation(which, results, metadata):
    """{"step": ..., "metrics": ...} of the tensors exported, as far as the files say: results.json's "final"
    entry for --which final (the final adapter file keeps neither), the best adapter's metadata (JSON strings)
    for --which best."""
    if which == "final":
        final = (results or {}).get("final")
        return {key: final[key] for key in ("step", "metrics") if key in final} if isinstance(final, dict) else {}
    found = {}
    for key in ("step", "metrics"):
        with contextlib.suppress(KeyError, ValueError):
            found[key] = json.loads(metadata[key])
    return found


def describe(evaluation, run_dir, finished):
    """' (step 120, metrics {...})', and for an unfinished run what it is and how to finish it."""
    parts = [f"{key} {json.dumps(value, separators=(', ', ': '))}" for key, value in evaluation.items()]
    said = f" ({', '.join(parts)})" if parts else ""
    return said if finished else (f"{said}, the best evaluation so far of an unfinished run (finish it with "
                                  f"`python train.py --resume {run_dir}`)")


def export(run_dir, out_dir, which="best", fmt="hf"):
    """Write RUN_DIR's trained model into OUT_DIR in format `fmt`; every input is checked before anything is
    written. Returns (the adapter file read, its step and metrics as cli's line says them, the files written)."""
    run_dir, out = Path(run_dir), Path(out_dir)
    config, results = read_run(run_dir, which)
    check_exportable(config, fmt)
    source = adapter_file(run_dir, which)
    check_out_dir(out)
    state, metadata = read_trained(source, config["method"])
    base = base_folder(config, run_dir)
    model = adapted_model(config, base, state, source)
    base_name = str(base.resolve()) if config["model"] == "tiny" else config["model"]
    with building(out) as folder:
        if fmt == "hf":
            write_hf(model, folder, base, config["task"])
        else:
            write_peft(model, config, folder, base_name)
        written = sorted(p.name for p in folder.iterdir())
    return source, describe(exported_evaluation(which, results, metadata), run_dir, results is not None), written


def cli(argv=None):
    """The command line: export() with errors turned into one line and an exit status."""
    try:
        args = build_parser().parse_args(argv)
        source, what, written = export(args.run_dir, args.out_dir, args.which, args.fmt)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"export.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # the network (a hub download), a full disk
        print(f"export.py: error: {' '.join(str(e).split())}; {NOTHING_WRITTEN}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("export.py: interrupted; nothing was written", file=sys.stderr)
        return 130
    load = ("transformers.AutoModelForSequenceClassification.from_pretrained" if args.fmt == "hf"
            else "peft.PeftModel.from_pretrained(base_model, ...)")
    print(f"export.py: wrote {args.out_dir}/ ({', '.join(written)}) from {source}{what}; "
          f"load it with {load}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
