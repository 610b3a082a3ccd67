"""
Check export.py against transformers and PEFT themselves (needs both installed: pip install transformers
peft==0.21.0; not the project's requirements). For each model family x method x format, the largest logit
difference between our adapted model and the export as transformers / PEFT load it, printed and written as JSON.

    python scripts/check_export.py                          # tiny random BERT, RoBERTa, DeBERTa-v2 checkpoints, no download
    python scripts/check_export.py --run RUN_DIR --which final   # real runs (train.py folders): both formats where possible
    python scripts/check_export.py --json check_export.json --tolerance 1e-4

Without --run it builds, in a temporary folder, a tiny random checkpoint of each family (model.py's classes and
save_pretrained), injects every method (FouRA without its gate) into q, v and the feed-forward layers (square
and non-square weights), sets random non-zero adapter and head tensors, writes a run folder as train.py does
(results.json's config, adapter.safetensors, best/adapter.safetensors), exports it with export.export, and loads
the exports with AutoModelForSequenceClassification.from_pretrained and PeftModel.from_pretrained on the base.
Exit status 1 if any difference exceeds --tolerance.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import export  # noqa: E402
import spectral_ft  # noqa: E402
from data import TASKS  # noqa: E402
from run.folder import trainable_state  # noqa: E402
from encoder.hub import write_safetensors  # noqa: E402
from encoder.model import DebertaV2Config, classifier_for, save_pretrained, tiny_config  # noqa: E402

from peft import PeftModel  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

FAMILIES = {  # family -> (config, GLUE task: 2 labels, 3 labels, regression)
    "bert": (lambda: tiny_config("bert", 60), "rte"),
    "roberta": (lambda: tiny_config("roberta", 60), "mnli"),
    "deberta-v2": (lambda: DebertaV2Config(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=64, relative_attention=True,
                                           pos_att_type=["p2c", "c2p"], share_att_key=True, position_buckets=8,
                                           norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0),
                   "stsb"),
}
SETTINGS = {  # small hyperparameters for a 32-wide model
    "lora": dict(r=4, alpha=8.0, dropout=0.1), "vera": dict(r=8, d_initial=0.1, seed=3),
    "fourierft": dict(n=64, scaling=150.0, seed=5), "fora": dict(n=40, r=4, alpha=None, seed=1),
    "dfora": dict(n=40, r=4, alpha=None, seed=1), "loca": dict(n=50, alpha=1.0, seed=2),
    "foura": dict(r=4, alpha=8.0, transform="dct", gate=False), "spectral_a": dict(r=4), "spectral_r": dict(r=4),
    "dora": dict(r=4, alpha=8.0, dropout=0.1), "oft": dict(r=4, block_share=False), "bitfit": {},
    "masked_lora": dict(n=40, r=4, alpha=None, seed=1), "full": {}, "head": {},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--run", action="append", default=[], help="a train.py run folder (repeatable); default: tiny ones")
    p.add_argument("--which", choices=("best", "final"), default="final", help="with --run: which tensors to export")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--tolerance", type=float, default=1e-4)
    return p.parse_args(argv)


def randomize(model, generator):
    """Every weight random and non-zero: 0.2 N(0, 1), LayerNorm weights 1 + that; padding rows stay zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.2 * torch.randn(p.shape, generator=generator)
            p.copy_(1 + noise if "LayerNorm" in name else noise)
    return model


def randomize_adapters(model, generator):
    """Adapter tensors random and non-zero (ΔW ≠ 0), LoCA locations anywhere on the grid, DFoRA magnitudes
    near the row norms."""
    with torch.no_grad():
        for _, adapter in spectral_ft.adapters(model):
            for name, p in adapter.named_parameters():
                if name.startswith("base."):
                    continue
                if name == "locations":
                    p.copy_(torch.rand(p.shape, generator=generator))
                elif name == "magnitude":
                    p.mul_(1 + 0.1 * torch.randn(p.shape, generator=generator))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=generator))


def batch(vocab_size, pad_id, generator):
    """(input_ids, attention_mask) (3, 12): rows of 12, 8 and 4 real tokens, padding after."""
    ids = torch.randint(3, vocab_size, (3, 12), generator=generator)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 8, 4])[:, None]).long()
    return ids.masked_fill(mask == 0, pad_id), mask


def targets_for(config):
    attention = ["query_proj", "value_proj"] if config.model_type == "deberta-v2" else ["query", "value"]
    return attention + ["intermediate.dense", "output.dense"]  # (32, 32), (64, 32), (32, 64) weights


def write_run(folder, base, task, method, targets, model):
    """A train.py-like run folder: results.json's config, adapter.safetensors and best/adapter.safetensors."""
    hyperparameters = dict(SETTINGS[method])
    config = dict(method=method, model=str(base), task=task, targets=None if method in export.NOT_ADAPTERS
                  else targets, hyperparameters=hyperparameters, precision="fp32")
    (folder / "best").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(dict(config=config)))
    state = {k: v.contiguous() for k, v in trainable_state(model, method).items()}
    metadata = dict(format="pt", method=method, hyperparameters=json.dumps(hyperparameters), model=str(base),
                    task=task, targets=json.dumps(config["targets"]))
    write_safetensors(folder / "adapter.safetensors", state, metadata)
    write_safetensors(folder / "best" / "adapter.safetensors", state, dict(metadata, step="7", metrics="{}"))


def compare(ours, theirs):
    return dict(max_abs_diff=(ours - theirs).abs().max().item(), max_abs_logit=ours.abs().max().item())


def check_folder(run, base, ours_model, which, work, generator, tag):
    """Export `run` in both formats (PEFT where the method has a tuner), load each with transformers / PEFT,
    compare with `ours_model` on one padded batch. Returns the rows."""
    ids, mask = batch(ours_model.config.vocab_size, ours_model.config.pad_token_id, generator)
    with torch.no_grad():
        ours = ours_model(ids, mask).float()
    (config, _), rows = export.read_run(run), []
    for fmt in ("hf", "peft"):
        out = work / f"{tag}-{fmt}"
        try:
            export.export(run, out, which, fmt)
        except export.UsageError as e:
            rows.append(dict(run=tag, format=fmt, refused=str(e)))
            continue
        if fmt == "hf":
            loaded = AutoModelForSequenceClassification.from_pretrained(out)
        else:
            hf_base = AutoModelForSequenceClassification.from_pretrained(base, num_labels=TASKS[config["task"]].num_labels)
            loaded = PeftModel.from_pretrained(hf_base, out)
        with torch.no_grad():
            theirs = loaded.eval()(input_ids=ids, attention_mask=mask).logits.float()
        rows.append(dict(run=tag, format=fmt, **compare(ours, theirs)))
    return rows


def tiny_rows(work):
    """Every family x method on tiny random checkpoints."""
    rows, generator = [], torch.Generator().manual_seed(0)
    for family, (make_config, task) in FAMILIES.items():
        base_config = make_config()
        base = work / f"base-{family}"
        save_pretrained(randomize(classifier_for(base_config, TASKS[task].num_labels), generator), base,
                        labels=TASKS[task].labels)
        for method in SETTINGS:
            model = export.load_classifier(base, TASKS[task].num_labels)
            if method not in export.NOT_ADAPTERS:
                spectral_ft.inject(model, method, targets=targets_for(base_config), **SETTINGS[method])
                randomize_adapters(model, generator)
            if method == "full":
                randomize(model, generator)
            with torch.no_grad():  # a trained head
                for name, p in model.named_parameters():
                    if name in model.head_parameter_names():
                        p.copy_(0.2 * torch.randn(p.shape, generator=generator))
            run = work / f"run-{family}-{method}"
            write_run(run, base, task, method, targets_for(base_config), model)
            found = check_folder(run, base, model.eval(), "best", work, generator, f"{family}-{method}")
            rows += [dict(row, family=family, method=method) for row in found]
    return rows


def run_rows(runs, which, work):
    """Real train.py runs: our adapted model rebuilt by export.py's own loader, against both exports."""
    rows, generator = [], torch.Generator().manual_seed(0)
    for i, run in enumerate(map(Path, runs)):
        config, _ = export.read_run(run, which)
        source = export.adapter_file(run, which)
        state, _ = export.read_trained(source, config["method"])
        base = export.base_folder(config, run)
        model = export.adapted_model(config, base, state, source).float()
        found = check_folder(run, base, model, which, work, generator, f"run{i}")
        rows += [dict(row, run=str(run), method=config["method"], family=model.config.model_type) for row in found]
    return rows


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="check-export-") as work:
        rows = run_rows(args.run, args.which, Path(work)) if args.run else tiny_rows(Path(work))
    bad = [r for r in rows if r.get("max_abs_diff", 0.0) > args.tolerance]
    for r in rows:
        result = (f"refused: {r['refused']}" if "refused" in r else
                  f"max |Δlogit| {r['max_abs_diff']:.3g} (max |logit| {r['max_abs_logit']:.3g})")
        print(f"{r['family']:<11}{r['method']:<11}{r['format']:<5}{result}")
    compared = [r["max_abs_diff"] for r in rows if "max_abs_diff" in r]
    summary = dict(rows=rows, largest=max(compared, default=None), tolerance=args.tolerance, failed=len(bad),
                   versions=dict(torch=torch.__version__, transformers=__import__("transformers").__version__,
                                 peft=__import__("peft").__version__))
    print(f"largest |Δlogit| {summary['largest']:.3g} over {len(compared)} exports; "
          f"{len(bad)} above {args.tolerance:g}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
