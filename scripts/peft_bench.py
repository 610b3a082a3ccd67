"""
Our training step against transformers + PEFT's LoRA, in one process (the default step must not be slower
than PEFT's LoRA under torch.compile(model, mode="reduce-overhead") in the same call; aim: 10% faster).

    python scripts/peft_bench.py --json out/peft.json                                        # the bench
    python scripts/peft_bench.py --minilm .minilm --sst2 .sst2 --rows ''                      # the real run only
    python scripts/peft_bench.py --device cpu --layers 2 --hidden 64 --steps 2 --warmup 1 --seq 16 --batches 4   # smoke

The bench: roberta-base's shape with random weights (transformers' RobertaConfig defaults; ours: bench.build),
random tokens, batch x --seq, bf16 autocast, fused AdamW (lr 1e-4), the median optimizer step (CUDA events) of
    peft-lora-ro      PEFT LoRA r=8 alpha=8 on query,value, the classifier trained (modules_to_save), the whole
                      model under torch.compile(model, mode="reduce-overhead"): one line for a PEFT user
    peft-floor-ro     the transformers model frozen but its classifier, the gradient still flowing down to the
                      embeddings' output (a forward hook makes it require grad, as bench.py's floor), same compile
    peft-lora-eager   PEFT LoRA, eager
    ours-lora, ours-floor               bench.TrainStep (train.py's step), mode 'graph', the adapted layers compiled (the default;
                                        the floor has none: CUDA graphs alone)
    ours-lora-model, ours-floor-model   the same with the whole model compiled (--compile model)
each after torch._dynamo.reset(), on a fresh model. The real run (--minilm, --sst2): one SST-2 epoch of MiniLM,
batch 32, max length 64, LoRA as above (the pooler trained too, as our head's), in epoch_permutation(0, 0, n)
order, wall clock with compilation: transformers' BertForSequenceClassification + PEFT, eager and under
reduce-overhead (each batch at its own padded length, as a PEFT user runs it), and ours
(capture_vs_reduce_overhead.epoch_row). Without transformers or peft the PEFT rows are skipped (one line says so).
"""
import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import torch

import bench
import capture_vs_reduce_overhead as cvr
from run.errors import Parser, UsageError, bounded

ROWS = ("peft-lora-ro", "peft-floor-ro", "peft-lora-eager", "ours-lora", "ours-floor", "ours-lora-model",
        "ours-floor-model")
EPOCH_ROWS = ("peft-eager", "peft-reduce-overhead", "ours")
BASELINE = {"lora": "peft-lora-ro", "floor": "peft-floor-ro"}  # what each of our rows is compared with


def hf_libraries():
    """(transformers, peft), or None with one line saying why when either is missing."""
    try:
        import peft
        import transformers
    except ImportError as error:
        print(f"peft_bench.py: {error.name} is not installed (the PEFT rows need transformers and peft): skipping them")
        return None
    return transformers, peft


def lora_config(peft, modules_to_save):
    """PEFT's LoRA at the paper setting: r=8, alpha=8 on query and value, no dropout (spectral_ft.LoRA's)."""
    return peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=8, lora_dropout=0.0,
                           target_modules=["query", "value"], modules_to_save=modules_to_save)


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


def hf_bench_model(libraries, args, kind, device):
    """transformers' RoBERTa classifier (RobertaConfig's defaults: roberta-base's shape), random weights (seed 0),
    with PEFT's LoRA (kind 'lora') or frozen but the classifier, the embeddings' output requiring grad ('floor')."""
    transformers, peft = libraries
    torch.manual_seed(0)
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    if args.hidden:  # as bench.py narrows its smoke-test model
        overrides.update(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_attention_heads=2,
                         vocab_size=1000)
    config = transformers.RobertaConfig(num_labels=2, problem_type="single_label_classification", **overrides)
    model = transformers.RobertaForSequenceClassification(config)
    if kind == "lora":
        model = peft.get_peft_model(model, lora_config(peft, ["classifier"]))
    else:
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
        model.roberta.embeddings.register_forward_hook(lambda module, inputs, output: output.requires_grad_())
    return model.to(device).train()


def bench_row(libraries, args, row, batch, device):
    """One row: a fresh model (ours: bench.build via capture_vs_reduce_overhead.fresh), timed by cvr.time_step."""
    kind = "floor" if "floor" in row else "lora"
    if row.startswith("ours"):
        model, train_step = cvr.fresh(args, kind, "ours-model" if row.endswith("-model") else "ours", batch, device)
    else:
        torch._dynamo.reset()
        model = hf_bench_model(libraries, args, kind, device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                      **({"fused": True} if device.type == "cuda" else {}))
        train_step = HFStep(model, optimizer, device=device, compiled=row.endswith("-ro"),
                            options=compile_options(device))
    vocab = model.config.vocab_size
    result = dict(row=row, batch=batch, mode=train_step.mode, **cvr.time_step(
        train_step, cvr.random_parts(vocab, batch, args.seq), batch, args.warmup, args.steps, device))
    print(f"  {row:<17} batch {batch:<4} {result['ms']:8.3f} ms  (first step {result['first_step_s']:6.1f} s, "
          f"loss {result['loss']:.4f}, {result['mode']})", flush=True)
    return result


def hf_epoch_row(libraries, args, row, train, dev, pad_id, device):
    """One SST-2 epoch of transformers' BertForSequenceClassification (MiniLM's weights) + PEFT LoRA, eager or
    under reduce-overhead, each batch at its own padded length; dev accuracy eager."""
    transformers, peft = libraries
    steps = cvr.epoch_steps(args, len(train[0]))
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(args.minilm, num_labels=2, dtype=torch.float32)
    model.config.problem_type = "single_label_classification"
    model = peft.get_peft_model(model, lora_config(peft, ["classifier", "pooler"])).to(device).train()
    optimizer, scheduler = cvr.lora_optimizer(model.named_parameters(), lambda name: "modules_to_save" in name,
                                              args, device, steps)
    train_step = HFStep(model, optimizer, scheduler, device=device, compiled=row == "peft-reduce-overhead",
                        options=compile_options(device))
    wall, losses = cvr.timed_epoch(train_step, train, steps, args.batch, pad_id, device)
    forward = lambda input_ids, mask, types: model(input_ids=input_ids, attention_mask=mask,
                                                   token_type_ids=types).logits
    accuracy = cvr.accuracy(model, *dev, pad_id, device, args.batch, forward=forward)
    return cvr.epoch_summary(row, wall, losses, accuracy, train_step.mode)


def bench_table(rows):
    """Each row's ms ('failed' where it raised), and ours / PEFT's under reduce-overhead (LoRA rows against
    peft-lora-ro, floor rows against peft-floor-ro). -> {batch: the default step (ours-lora) / peft-lora-ro}."""
    print(f"\n# bench: median optimizer step, ms\n{'row':<17} {'batch':>5} {'ms':>8} {'x peft-ro':>9}")
    verdicts = {}
    for batch in dict.fromkeys(r["batch"] for r in rows):
        ms = {r["row"]: r.get("ms") for r in rows if r["batch"] == batch}
        for row, value in ms.items():
            baseline = ms.get(BASELINE["floor" if "floor" in row else "lora"])
            ratio = value / baseline if value and baseline and row.startswith("ours") else None
            print(f"{row:<17} {batch:>5} " + (f"{value:8.3f}" if value else f"{'failed':>8}")
                  + (f" {ratio:9.3f}" if ratio else ""))
        if ms.get("ours-lora") and ms.get("peft-lora-ro"):
            verdicts[batch] = ms["ours-lora"] / ms["peft-lora-ro"]
            print(f"batch {batch}: the default step (ours-lora) takes {verdicts[batch]:.3f} x PEFT LoRA under "
                  f"reduce-overhead: {'not slower' if verdicts[batch] <= 1 else 'SLOWER'}"
                  f"{', at least 10% faster' if verdicts[batch] <= 0.9 else ''}")
    return verdicts


def parse_args(argv):
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
    p.set_defaults(model="roberta-base")  # the shape of our rows (bench.build)
    args = p.parse_args(argv)
    return cvr.check_args(p, args, args.rows)


def run(args):
    device, name = cvr.setup(args)
    default_threads = cvr.inductor_threads(1)  # no compile workers starting beside the timed steps (as bench.py)
    libraries = hf_libraries()
    versions = {"torch": torch.__version__, **{lib.__name__: lib.__version__ for lib in libraries or ()}}
    print(f"# {name}, {', '.join(f'{k} {v}' for k, v in versions.items())}" + (
        f"; roberta-base shape, seq {args.seq}, bf16 autocast, fused AdamW, median of {args.steps} steps after "
        f"{args.warmup} (and the first)" if args.rows else ""), flush=True)
    report = dict(args=vars(args), device=name, versions=versions, bench=[], epoch=[])
    for batch, row in ((b, r) for b in args.batches for r in args.rows if libraries or r.startswith("ours")):
        report["bench"].append(cvr.attempt(dict(row=row, batch=batch), bench_row, libraries, args, row, batch, device))
        cvr.save(report, args.json)
    if args.minilm:
        cvr.inductor_threads(default_threads, warm=True)  # the real run compiles as a user's run does
        train, dev, pad_id = cvr.load_sst2(args)
        for row in (r for r in args.epoch_rows if libraries or r == "ours"):
            report["epoch"].append(
                cvr.attempt(dict(variant=row), cvr.epoch_row, args, "ours", train, dev, pad_id, device) if row == "ours"
                else cvr.attempt(dict(variant=row), hf_epoch_row, libraries, args, row, train, dev, pad_id, device))
            cvr.save(report, args.json)
    report["default_vs_peft_ro"] = bench_table(report["bench"]) if report["bench"] else {}
    if report["epoch"]:
        cvr.epoch_table(report["epoch"], against="peft-reduce-overhead")
    cvr.save(report, args.json)
    return report


def cli(argv=None):
    try:
        run(parse_args(argv))
        return 0
    except UsageError as e:
        print(f"peft_bench.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
