"""
On a GPU: run/step.py's graphed passes (mode 'graph', GraphedPasses) against the same steps in
mode 'padded' (no graphs), through bench.TrainStep (train.py's loop body), on a tiny float32 BERT without dropout:
LoRA, DoRA, OFT, full and LoCA through its phases. Prints, per method, the mode the step ended in (a failed
capture falls back to 'padded'), the largest loss and weight differences over 9 steps, then all of it as JSON.
Last, a capture made to fail (`capture_fails`): the step must go on in mode 'padded' with dropout drawing eagerly.

    python scripts/graph_vs_padded.py          (REPRODUCE §3f)
"""
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import torch  # noqa: E402

import spectral_ft  # noqa: E402
import train  # noqa: E402
from bench import TrainStep  # noqa: E402
from test_step import batches, nn_model, optimizer_of  # noqa: E402

ROWS = [("lora", {}, None), ("dora", {}, None), ("oft", {}, None), ("full", {}, None),
        ("loca", {"n": 64}, (2, 2, 6))]  # LoCA: coefficients 0-1, locations 2-3, coefficients 4-5, frozen 6-


def losses_of(model, method, mode, data, micro, schedule_args):
    """The step's losses over `data` in `mode`, and the mode it ended in."""
    optimizer = optimizer_of(model, method)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, train.linear_warmup_decay(len(data), 1))
    schedule = spectral_ft.LoCASchedule(model, *schedule_args) if schedule_args else None
    step = TrainStep(model, optimizer, scheduler, None, schedule, device=torch.device("cuda"), mode=mode,
                     rows=micro, max_length=32, compile="none")
    return [step(parts, n).item() for parts, n in data], step.mode


def compare(method, hyperparameters, schedule_args):
    data = batches(seed=1, steps=9, batch=7, micro=3)
    base = nn_model(method, **hyperparameters).float().cuda()
    padded, graphed = copy.deepcopy(base), copy.deepcopy(base)
    padded_losses, _ = losses_of(padded, method, "padded", data, 3, schedule_args)
    graph_losses, mode = losses_of(graphed, method, "graph", data, 3, schedule_args)
    return dict(mode=mode, loss_diff=max(abs(a - b) for a, b in zip(padded_losses, graph_losses)),
                weight_diff=max((a - b).abs().max().item() for a, b in zip(padded.parameters(), graphed.parameters())))


def capture_fails():
    """LoRA with its dropout on (0.1), a host synchronization inside every capture (a forward hook), so that each
    capture fails: the step says so, ends in mode 'padded' and trains; its dropout then draws eagerly, which a
    generator left in capture mode would refuse ("Offset increment outside graph capture")."""
    data = batches(seed=1, steps=4, batch=7, micro=3)
    model = nn_model("lora", dropout=0.1).float().cuda()
    model.register_forward_hook(lambda *_: torch.cuda.synchronize() if torch.cuda.is_current_stream_capturing()
                                else None)
    losses, mode = losses_of(model, "lora", "graph", data, 3, None)
    return dict(mode=mode, losses=losses)


def main():
    report = {}
    for method, hyperparameters, schedule_args in [*ROWS, ("capture_fails", None, None)]:
        try:
            report[method] = (capture_fails() if method == "capture_fails" else
                              compare(method, hyperparameters, schedule_args))
        except Exception as e:  # one method's failure is reported, the others still run
            report[method] = dict(error=f"{type(e).__name__}: {str(e)[:300]}")
        print(method, report[method], flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
