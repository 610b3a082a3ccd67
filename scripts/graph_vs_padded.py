"""
On a GPU: run/step.py's graphed passes (mode 'graph', torch.cuda.make_graphed_callables) against the same steps in
mode 'padded' (no graphs), through bench.TrainStep (train.py's loop body), on a tiny float32 BERT without dropout:
LoRA, DoRA, OFT, full and LoCA through its phases. Prints, per method, the mode the step ended in (a failed
capture falls back to 'padded'), the largest loss and weight differences over 9 steps, then all of it as JSON.

    python scripts/graph_vs_padded.py          (REPRODUCE §3f)
"""
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import torch
import spectral_ft, train
from bench import TrainStep
from test_step import batches, nn_model, optimizer_of

def run(model, method, mode, data, micro, schedule_args):
    optimizer = optimizer_of(model, method)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, train.linear_warmup_decay(len(data), 1))
    schedule = spectral_ft.LoCASchedule(model, *schedule_args) if schedule_args else None
    step = TrainStep(model, optimizer, scheduler, None, schedule, device=torch.device("cuda"), mode=mode,
                     rows=micro, max_length=32, compile="none")
    losses = [step(parts, n).item() for parts, n in data]
    return losses, step.mode

rows = [("lora", {}, None), ("dora", {}, None), ("oft", {}, None), ("full", {}, None), ("loca", {"n": 64}, (2, 2, 6))]
report = {}
for method, hp, sched in rows:
    try:
        data = batches(seed=1, steps=9, batch=7, micro=3)
        base = nn_model(method, **hp).float().cuda()
        padded_model, graph_model = copy.deepcopy(base), copy.deepcopy(base)
        l_pad, _ = run(padded_model, method, "padded", data, 3, sched)
        l_graph, mode = run(graph_model, method, "graph", data, 3, sched)
        wdiff = max((a - b).abs().max().item() for a, b in zip(padded_model.parameters(), graph_model.parameters()))
        ldiff = max(abs(a - b) for a, b in zip(l_pad, l_graph))
        report[method] = dict(mode=mode, loss_diff=ldiff, weight_diff=wdiff)
    except Exception as e:
        report[method] = dict(error=f"{type(e).__name__}: {str(e)[:300]}")
    print(method, report[method], flush=True)
print(json.dumps(report))
