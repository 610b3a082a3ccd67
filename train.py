"""
Fine-tune a BERT / RoBERTa / DeBERTa-v3 classifier on a GLUE task with a spectral PEFT method, end to end.

    python train.py --method loca --model roberta-base --task rte    # LoCA's RTE run (GPU + internet)
    python train.py --model tiny                                      # offline pipeline check, CPU, < 1 min
    python train.py --method fora --n 250 --count-params              # trainable parameters, no download
    python train.py --method vera --model roberta-large --task mrpc --print-config   # the paper's row, as JSON
    python train.py --resume runs/loca-rte-roberta-base-s0-1a2b3c4d   # continue a stopped run in its folder
    torchrun --nproc_per_node=2 train.py --method loca --model roberta-large   # one process per GPU

One run, top to bottom: the flags and the one configuration they decide (run/config.py: the papers' row
for (method, model family, task) from run/paper_rows.py, then the flags), the data (GLUE TSVs, tokenized once,
padded per batch), the model (a pretrained encoder, encoder/, with spectral_ft adapters), the optimizer (AdamW
with adapter / head groups and a method's own group, linear warmup then linear decay), the loop (one optimizer
step per batch: each micro-batch's forward, loss and backward, then the optimizer and the method's schedule;
run/step.py makes those same passes fast: CUDA graphs per length bucket on a GPU; the training loss logged
every --log-every steps, dev evaluated every epoch or --eval-every steps, checkpoints), and the results. The
run folder (run/folder.py) holds log.jsonl, checkpoint.pt, adapter.safetensors and results.json; a run holds
its folder while it runs, so two runs never share one. Several processes: run/distributed.py.
Exit status: 0 done; 1 stopped (non-finite loss, network); 2 bad input or a failed write (a full disk), named
in one line; 130 interrupted by Ctrl-C, 143 by SIGTERM (both save the step reached first).
"""
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from data import TASKS, compute_metrics, load_task, main_metric, pad_batch, tokenize
from encoder.model import build_tiny_model, load_pretrained
from run.config import (RunConfig, build_parser, count_parameters, decide_config, describe, dry_inject, in_own_group,
                        method_schedule, prepare_model, print_counts)
from run.distributed import batch_share, epoch_shard, gather_interleaved, process_group, rank0_first
from run.errors import Interrupted, NonFiniteError, UsageError, command_line
from run.folder import (BEST_ADAPTER, LATER_PROGRESS, PROGRESS_TYPES, StopRequests, append_log, check_finite,
                        check_same_data, data_fingerprint, hold_folder, intact, interrupted_outside_the_loop,
                        read_run_checkpoint, release_folders, restore, results_of, save_checkpoint, start_log,
                        trainable_state, write_adapter, write_results)
from run.step import Speed, float_dtype

READ_EVERY = 10  # steps between reading the loss back from a GPU (progress bar, non-finite checks)


# -----------------------------------------------------------------------------
# the run: flags, configuration, then fine_tune in each process


def main(argv=None):
    started = time.time()
    args = build_parser(__doc__.split("\n")[1]).parse_args(argv)
    checkpoint = read_run_checkpoint(args.resume, content=not args.print_config) if args.resume else None
    saved = checkpoint and RunConfig.from_json(json.loads(checkpoint["config"]),
                                               f"--resume {args.resume}: {Path(args.resume) / 'checkpoint.pt'}")
    config = decide_config(args, saved, download=not (args.print_config or args.count_params))  # final, as it runs
    if args.print_config:  # settings only: no model, no data, nothing written
        print(json.dumps(config.to_json(), indent=2))
        return {"config": config.to_json()}
    if args.count_params:
        counts = dry_inject(config)
        print_counts(config, counts)
        return {"config": config.to_json(), "trainable_parameters": counts}
    try:
        data = load_task(config.task, config.data_dir)  # cheap checks first: the data is here (or downloads) ...
        dry_inject(config)  # ... then the method on the model's shapes, before any weights are read
        with process_group(config.device) as (rank, world, device):
            return fine_tune(config, data, checkpoint, started, rank, world, device)
    except Interrupted:  # in the loop: the step reached was saved
        raise
    except KeyboardInterrupt:  # before the loop, or a second Ctrl-C
        raise interrupted_outside_the_loop(Path(config.out), checkpoint is not None) from None
    finally:
        release_folders()


class Training(NamedTuple):
    """What changes the weights: AdamW, its learning-rate schedule, fp16's GradScaler, the method's own schedule (LoCA's)."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    schedule: object  # the method's own (spectral_ft: its class's `schedule`), or None


@dataclass
class Run:
    """What one process knows of the run once it starts; nothing here changes while it trains."""
    config: RunConfig
    out: Path
    rank: int
    world: int
    device: torch.device
    started: float  # time.time() at the start of this session
    steps_per_epoch: int
    total_steps: int
    data: dict  # the fingerprint of the files read (runs.data_fingerprint): a resumed run must read the same

    def say(self, *text, **kwargs):  # process 0 speaks for all
        if self.rank == 0:
            print(*text, **kwargs)


@dataclass
class RunState:
    """Where the run is: what a checkpoint keeps (runs.PROGRESS_TYPES) and what this session adds."""
    step: int = 0
    epoch: int = 0
    position: int = 0  # batches done in this epoch
    best: dict = None  # the best dev evaluation: value (of the main metric), step, epoch, metrics
    last: dict = None  # the latest dev evaluation
    elapsed: float = 0.0  # seconds spent by earlier sessions of this run
    loss_sum: float = 0.0  # training loss summed since the last evaluation
    loss_count: int = 0
    log_sum: float = 0.0  # since the last log line
    log_count: int = 0
    saved_at: int = None  # the step of the checkpoint on disk
    last_save: float = field(default_factory=time.time)
    pending: list = field(default_factory=list)  # (step, loss on the device) not yet read back

    def progress(self, started):
        return {k: getattr(self, k) for k in [*PROGRESS_TYPES, *LATER_PROGRESS]} | {"elapsed": self.wall_time(started)}

    def wall_time(self, started):
        return self.elapsed + time.time() - started


def fine_tune(config, data, checkpoint, started, rank=0, world=1, device=torch.device("cpu")):
    """The run of main(), in process `rank` of `world`: the task's `data` (data.load_task), model, optimizer,
    loop, outputs."""
    out = Path(config.out)
    if rank == 0:
        hold_folder(out)  # before anything is written into it; refused while another run holds it
    if not checkpoint and (out / "checkpoint.pt").exists():
        raise UsageError(f"--out {out} already holds an earlier run's checkpoint.pt: continue it with "
                         f"--resume {out}, or choose another --out")
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    train_examples, dev_examples, files = data
    if checkpoint:
        check_same_data(checkpoint.get("data"), files, f"--resume {out}")
    steps_per_epoch = math.ceil(len(train_examples) / config.batch_size)
    run = Run(config, out, rank, world, device, started, steps_per_epoch,
              config.max_steps or config.epochs * steps_per_epoch, data_fingerprint(files))
    run.say(describe(config, world, len(train_examples), run.steps_per_epoch, run.total_steps))
    model, tokenizer = load_model(run, train_examples + [e for split in dev_examples.values() for e in split])
    counts = count_parameters(prepare_model(model, config.method, config.targets, config.hyperparameters))
    run.say(f"  trainable: {counts['adapter']:,} outside the head" + (f" ({counts['adapter_while_searching']:,} "
            f"while its own group trains too)" if "adapter_while_searching" in counts else "")
            + f", {counts['head']:,} in the head")
    model.to(device, torch.float64 if config.precision == "fp64" else None)
    training = build_optimizer(model, config, run.total_steps, device)
    state = RunState()
    if checkpoint:
        state = RunState(**restore(checkpoint, model, config.method, training, f"--resume {out}"))
        state.saved_at = state.step
        run.say(f"  resumed from {out} at step {state.step} (epoch {state.epoch}, batch {state.position})")
    if rank > 0:  # dropout masks differ between processes (process 0 draws exactly as a single process)
        torch.manual_seed(config.seed * 1_000_003 + rank * 7_919 + state.step)
    data = {split: tokenize(tokenizer, examples, config.max_length, rank)
            for split, examples in [("train", train_examples), *dev_examples.items()]}
    if rank == 0:
        start_log(out, state.step if checkpoint else None)
    speed, said = Speed.for_run(config, model, device, world, tokenizer.pad_token_id, TASKS[config.task].num_labels == 1)
    run.say(said)
    train_loop(run, state, model, training, speed, data)
    return finish(run, state, model, counts)


# -----------------------------------------------------------------------------
# data and model


def load_model(run, examples):
    """The pretrained encoder with a fresh classification head, and its tokenizer; --model tiny: a tiny
    random BERT whose vocabulary is the examples' words, built in the run folder."""
    num_labels = TASKS[run.config.task].num_labels
    if run.config.model != "tiny":
        return rank0_first(run.rank, run.world, lambda: load_pretrained(run.config.model, num_labels))
    run.say("  --model tiny: a tiny randomly initialised BERT; this run checks the pipeline, not accuracy")
    if run.rank == 0:
        build_tiny_model([t for e in examples for t in (e.text_a, e.text_b) if t], run.out / "tiny-model", num_labels)
    if run.world > 1:
        dist.barrier()  # the others read what process 0 wrote
    return load_pretrained(run.out / "tiny-model", num_labels)


# -----------------------------------------------------------------------------
# optimizer and step


def build_optimizer(model, config, total_steps, device):
    """AdamW groups (adapter at lr, head at lr_head, and a method's own group, e.g. LoCA's locations, at its
    rate without weight decay), linear warmup then linear decay to 0, a GradScaler for float16 only, and the
    method's own schedule (spectral_ft: LoCA's alternation)."""
    head, own = set(model.head_parameter_names()), in_own_group(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    in_head = lambda n: n in head and config.method != "full"  # full: the head trains at --lr like the rest
    groups = [dict(name="adapter", params=[p for n, p in named if not in_head(n) and n not in own], lr=config.lr),
              dict(name="head", params=[p for n, p in named if in_head(n)], lr=config.lr_head),
              *[dict(name=group, params=[p for n, p in named if own.get(n) == (group, rate)],
                     lr=config.method_settings[rate], weight_decay=0.0) for group, rate in dict.fromkeys(own.values())]]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay,
                                  **({"fused": True} if device.type == "cuda" else {}))  # one kernel, not dozens
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(total_steps, warmup_steps))
    return Training(optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
                    method_schedule(model, config))


def linear_warmup_decay(total_steps, warmup_steps):
    """LambdaLR factor: 0 -> 1 linearly over warmup_steps, then linearly to 0 at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def weighted_loss(logits, y, weight, regression):
    """Σ_i weight_i · loss_i over a micro-batch, in at least float32: cross-entropy, or the squared error for
    regression; weight 1 for an example, 0 for a filler row (step.pad_to_shape) or another process's."""
    logits = logits.to(float_dtype(logits))  # (b, num_labels)
    losses = (F.mse_loss(logits.squeeze(-1), y.to(logits.dtype), reduction="none") if regression
              else F.cross_entropy(logits, y, reduction="none"))  # (b,)
    return (losses * weight).sum()


# -----------------------------------------------------------------------------
# the loop: one optimizer step per batch; the loss is read back from the GPU every READ_EVERY steps (every
# step on the CPU, where it costs nothing), which is also when non-finite losses are caught


def train_loop(run, state, model, training, speed, data):
    """One optimizer step per batch: each micro-batch's forward, loss and backward (the gradients add up), then
    the optimizer step and the schedules; logs, evaluations and checkpoints in between (after_step)."""
    config, regression, world = run.config, TASKS[run.config.task].num_labels == 1, run.world
    bar = tqdm(total=run.total_steps, initial=state.step, desc=f"{config.method} {TASKS[config.task].name}",
               dynamic_ncols=True, disable=run.rank != 0)
    model.train()
    shard = None  # this process's positions of the epoch's order
    with StopRequests() as stop, bar:  # Ctrl-C, SIGTERM: the loop stops after the step in flight, and saves
        while state.step < run.total_steps:
            if shard is None:
                shard = epoch_shard(config.seed, state.epoch, len(data["train"][0]), run.rank, world)
            parts, examples = next_batch(run, state, shard, data["train"], speed.pad_id, regression)
            step_loss = 0.0
            for network, (input_ids, mask, types, y, weight) in speed.micro_batches(parts):
                with speed.autocast:
                    logits = network(input_ids, mask, types)  # (b, num_labels)
                loss = weighted_loss(logits, y, weight, regression) * (world / examples)  # its share of the mean
                training.scaler.scale(loss).backward()
                step_loss = step_loss + loss.detach() / world
            speed.reduce_gradients()  # several processes: each holds the batch's mean gradient
            training.scaler.step(training.optimizer)
            training.scaler.update()
            training.scheduler.step()
            if training.schedule:
                training.schedule.step()  # the method's own: LoCA's phases, then its locations freeze
            training.optimizer.zero_grad(set_to_none=True)
            state.step, state.position = state.step + 1, state.position + 1
            state.pending.append((state.step, step_loss))
            bar.update(1)
            if state.position == run.steps_per_epoch:
                state.epoch, state.position, shard = state.epoch + 1, 0, None
            after_step(run, state, model, training, speed, data, bar, stop.signum)
    if state.last is None:  # resumed a finished run whose final evaluation was lost
        state.loss_sum, state.loss_count = 0.0, 0
        evaluate_and_log(run, state, model, training.optimizer, speed, data)


def next_batch(run, state, shard, train, pad_id, regression):
    """This process's micro-batches of the next batch [(input_ids, mask, types, y, weight)] (CPU tensors; at most
    --micro-batch-size rows each: gradient accumulation) and the number of examples in the whole batch."""
    (encoded, labels), batch_size = train, run.config.batch_size
    micro_batch = run.config.micro_batch_size or math.ceil(batch_size / run.world)  # rows per forward pass
    start, end = state.position * batch_size, min((state.position + 1) * batch_size, len(encoded))
    indices, weights = batch_share(shard, start, end, run.rank, run.world)
    parts = [(*pad_batch(encoded, labels, indices[first:first + micro_batch], pad_id, regression),
              torch.tensor(weights[first:first + micro_batch]))  # (b,) 1, or 0 for another process's filler rows
             for first in range(0, len(indices), micro_batch)]
    return parts, end - start


def after_step(run, state, model, training, speed, data, bar, stop_signal):
    """What follows a step: the losses read back (every READ_EVERY steps, and before anything below), a log line
    every --log-every steps, an evaluation every epoch (or --eval-every steps) and at the end, a checkpoint each
    epoch, every --save-every steps or --save-minutes, and at a stop request (Ctrl-C, SIGTERM), which ends here."""
    config, epoch_done, last = run.config, state.position == 0, state.step == run.total_steps
    evaluate_now = (state.step % config.eval_every == 0) if config.eval_every else epoch_done
    log_now = state.step % config.log_every == 0
    save_now = epoch_done or last or bool(config.save_every and state.step % config.save_every == 0)
    stopping = False  # several processes agree on it when they read the losses (one process: any step)
    read_every = 1 if run.device.type == "cpu" else READ_EVERY
    if len(state.pending) >= read_every or evaluate_now or log_now or save_now or (stop_signal and run.world == 1):
        due, stopping = read_losses(run, state, bar, stop_signal)
        save_now = save_now or due or stopping
    if log_now:
        log_loss(run, state, training.optimizer)
    if evaluate_now or (last and (state.last is None or state.last["step"] != state.step)):
        evaluate_and_log(run, state, model, training.optimizer, speed, data)
    if save_now:
        save(run, state, model, training)
    if stopping:
        raise Interrupted(f"stopped at step {state.step}, saved in {run.out / 'checkpoint.pt'}; continue with "
                          f"--resume {run.out} (from step {state.step})", stop_signal or signal.SIGINT)


def read_losses(run, state, bar, stop_signal=None):
    """Read the pending losses back (all-reduced over the processes) -> (whether it is time to save by the
    clock (--save-minutes), whether to stop (a process got Ctrl-C or SIGTERM)). Process 0 decides the first,
    any process the second, and both ride on the same all-reduce, so every process saves and stops at the
    same step. Saving never changes the results."""
    minutes = run.config.save_minutes
    due = bool(minutes) and time.time() - state.last_save >= 60 * minutes
    parts = torch.stack([loss for _, loss in state.pending]) if state.pending else torch.zeros(0, device=run.device)
    parts = torch.cat([parts, parts.new_tensor([float(due and run.rank == 0), float(stop_signal is not None)])])
    if run.world > 1:
        dist.all_reduce(parts)  # the processes' parts add up to each batch's mean loss
    *values, due, stopping = parts.tolist()
    for (step, _), value in zip(state.pending, values):
        if not math.isfinite(value):
            hint = "" if run.config.precision in ("fp32", "fp64") else ", or --precision fp32"
            raise NonFiniteError(f"loss is {value} at step {step} (epoch {step / run.steps_per_epoch:.2f}); "
                                 f"stopped, {intact(run.out, state.saved_at)}; try a lower --lr{hint}")
    state.loss_sum, state.loss_count = state.loss_sum + sum(values), state.loss_count + len(values)
    state.log_sum, state.log_count = state.log_sum + sum(values), state.log_count + len(values)
    state.pending = []
    if values:
        bar.set_postfix(loss=f"{values[-1]:.4f}")
    return due > 0, stopping > 0


def log_loss(run, state, optimizer):
    """A log.jsonl line every --log-every steps: the mean training loss since the previous one."""
    log_line(run, state, optimizer, state.log_sum / state.log_count if state.log_count else None)
    state.log_sum, state.log_count = 0.0, 0


def log_line(run, state, optimizer, loss, metrics=None):
    """One log.jsonl line (process 0 writes): step, epoch, dev metrics (at evaluations), the mean training
    loss, the learning rates, the time."""
    if run.rank == 0:
        append_log(run.out, dict(step=state.step, epoch=round(state.step / run.steps_per_epoch, 4),
                                 **({"metrics": metrics} if metrics else {}), loss=loss,
                                 lr={g["name"]: g["lr"] for g in optimizer.param_groups},
                                 time=round(state.wall_time(run.started), 3)), state.saved_at)


def evaluate_and_log(run, state, model, optimizer, speed, data):
    """Every dev split's metrics; the best so far (by the task's main metric) and the last kept in `state`;
    one log.jsonl line with the mean training loss since the previous evaluation."""
    config, metric = run.config, main_metric(TASKS[run.config.task].name)
    metrics = {split: evaluate(model, config.task, config.batch_size, *data[split], speed.pad_id, speed,
                               run.rank, run.world, split) for split in data if split != "train"}
    value, epoch = metrics["dev"][metric], state.step / run.steps_per_epoch
    loss = state.loss_sum / state.loss_count if state.loss_count else None  # mean since the last evaluation
    state.loss_sum, state.loss_count = 0.0, 0
    state.last = dict(step=state.step, epoch=epoch, metrics=metrics)
    if value == value and (state.best is None or value > state.best["value"]):  # nan never wins
        state.best = dict(value=value, step=state.step, epoch=epoch, metrics=metrics, adapter=BEST_ADAPTER)
        if run.rank == 0:
            write_adapter(run.out / BEST_ADAPTER, trainable_state(model, config.method), config, run.out,
                          state.saved_at, step=state.step, metrics=metrics)
    log_line(run, state, optimizer, loss, metrics)
    if run.rank != 0:
        return
    shown = ", ".join(f"{s} {k} {v:.4f}" for s, m in metrics.items() for k, v in m.items())
    best = state.best["value"] if state.best else float("nan")
    tqdm.write(f"step {state.step} epoch {epoch:.2f}: {shown} (best {metric} {best:.4f}), train loss "
               + ("-" if loss is None else f"{loss:.4f}"))


@torch.no_grad()
def evaluate(model, task, batch_size, encoded, labels, pad_id, step=None, rank=0, world=1, split="dev"):
    """Metrics of one dev split (data.metrics.compute_metrics), in batches of the step's rows through
    step.logits() (padded, and a CUDA graph in mode 'graph'), or without a step through the model itself.
    With several processes each predicts examples rank, rank + world, ...; the predictions are gathered
    and every process computes the metrics of the whole split (each example counted once)."""
    was_training = model.training
    model.eval()
    regression, batch_size = TASKS[task].num_labels == 1, step.rows if step else batch_size
    mine = list(range(rank, len(encoded), world))
    device = step.device if step else next(model.parameters()).device
    preds = [torch.zeros(0, dtype=torch.float32 if regression else torch.long, device=device)]
    for start in tqdm(range(0, len(mine), batch_size), desc=f"eval {split}", leave=False, dynamic_ncols=True,
                      disable=rank != 0):
        input_ids, mask, types, _ = pad_batch(encoded, labels, mine[start:start + batch_size], pad_id, regression)
        logits = step.logits(input_ids, mask, types) if step else model(input_ids, mask, types)  # (B, num_labels)
        preds.append(logits.to(float_dtype(logits)).squeeze(-1) if regression else logits.argmax(-1))
    model.train(was_training)
    predictions = gather_interleaved(torch.cat(preds), len(encoded), rank, world)
    return compute_metrics(task, predictions.cpu().numpy(), np.asarray(labels))


# -----------------------------------------------------------------------------
# checkpoints and results


def save(run, state, model, training):
    """checkpoint.pt at the step reached (runs.save_checkpoint): every process checks its weights are finite,
    process 0 writes."""
    trainable = trainable_state(model, run.config.method)  # the same in every process
    check_finite(trainable, f"checkpoint at step {state.step}")
    if run.rank == 0:
        save_checkpoint(run.out, run.config.to_json(), trainable, training, state.progress(run.started), run.data,
                        state.saved_at)
    state.saved_at, state.last_save = state.step, time.time()


def finish(run, state, model, counts):
    """adapter.safetensors and results.json (runs.write_results), and a summary line."""
    trainable = trainable_state(model, run.config.method)
    check_finite(trainable, "final weights")
    metric = main_metric(TASKS[run.config.task].name)
    results = results_of(run.config, state.best, state.last, counts, run.world, state.wall_time(run.started),
                         run.device)
    if run.rank != 0:
        return results
    write_results(run.out, trainable, run.config, results, state.saved_at)
    best = state.best
    run.say(f"done: best dev {metric} {best['value'] if best else float('nan'):.4f}"
            + (f" at epoch {best['epoch']:.2f} (step {best['step']})" if best else "")
            + f", final {state.last['metrics']['dev'][metric]:.4f}; wrote {run.out}/")
    if run.config.model == "tiny":
        run.say("note: --model tiny is a small random model: this run checked the pipeline, not accuracy")
    return results


def cli(argv=None):
    """The command line: main() with its errors as one line and an exit status (run/errors.py)."""
    return command_line(main, argv, "train.py")


if __name__ == "__main__":
    sys.exit(cli())
