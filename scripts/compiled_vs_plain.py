"""
Inductor's kernels against the plain model, in float64, dropout on: run/step.py's compile_in_place with a --scope
(default 'layers', long runs' default) on the tests' tiny BERT and tiny DeBERTa-v3, each method adapting the
query and value projections, three batches of different lengths and padding (a static program, then the
dynamic-length one), the same seed before each forward, LoCA through its coefficient and location phases. Prints
per model and method the largest difference in the logits and the largest relative difference in a gradient,
then all of it as JSON; a compiled scope must change nothing but rounding.

    python scripts/compiled_vs_plain.py                      (the CPU: Inductor's C++ kernels; REPRODUCE §3g)
    python scripts/compiled_vs_plain.py --device cuda        (Inductor's Triton kernels)
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import torch  # noqa: E402

import spectral_ft  # noqa: E402
from encoder.model import SequenceClassifier, tiny_config  # noqa: E402
from run.config import prepare_model  # noqa: E402
from run.step import COMPILE_SCOPES, compile_in_place  # noqa: E402
from test_compile import SMALL, logits_and_gradients, nonzero  # noqa: E402
from test_deberta import V3_TINY, padded_batch, tiny_deberta  # noqa: E402
from test_step import VOCAB  # noqa: E402

DROPOUT = 0.1
BATCHES = [([9, 6, 4], 9), ([12, 5, 3], 12), ([7, 7, 2], 7)]  # (lengths, padded length) of three rows each


def build(kind, method):
    """A tiny float64 model of `kind` on the CPU with dropout DROPOUT, `method` on its query and value projections."""
    torch.manual_seed(0)
    if kind == "deberta":
        model = tiny_deberta(dict(V3_TINY, hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT))
        targets = ["query_proj", "value_proj"]
    else:
        config = tiny_config("bert", VOCAB)
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = DROPOUT
        model, targets = SequenceClassifier(config, 2), ["query", "value"]
    return prepare_model(model.double().train(), method, targets, SMALL.get(method, {}))


def compare(kind, method, scope, device):
    """{logits, gradient: largest differences over BATCHES, seconds} of the model compiled in `scope` against
    the plain one from the same weights."""
    plain = nonzero(build(kind, method), 5).to(device)  # nonzero draws on the CPU: before the move
    compiled = build(kind, method)
    compiled.load_state_dict(plain.state_dict())
    compiled.to(device)
    torch._dynamo.reset()
    compile_in_place(compiled, scope)
    schedules = ([spectral_ft.LoCASchedule(m, B_a=1, B_l=1, T_s=len(BATCHES)) for m in (plain, compiled)]
                 if method == "loca" else [])
    y = torch.tensor([0, 1, 1], device=device)
    started, logits_diff, gradient_diff = time.time(), 0.0, 0.0
    for step, (lengths, T) in enumerate(BATCHES):
        tensors = [t.to(device) for t in padded_batch(lengths, T, vocab=VOCAB, seed=step)]  # ids in [1, VOCAB)
        torch.manual_seed(step)
        want_logits, want = logits_and_gradients(plain, *tensors, y)
        torch.manual_seed(step)
        got_logits, got = logits_and_gradients(compiled, *tensors, y)
        logits_diff = max(logits_diff, (got_logits - want_logits).abs().max().item())
        for name in want:
            scale = want[name].abs().max().clamp(min=1e-300)
            gradient_diff = max(gradient_diff, ((got[name] - want[name]).abs().max() / scale).item())
        for schedule in schedules:
            schedule.step()
    return dict(logits=logits_diff, gradient=gradient_diff, seconds=round(time.time() - started, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--scope", default="layers", choices=[s for s in COMPILE_SCOPES if s != "none"])
    p.add_argument("--models", default="bert,deberta")
    p.add_argument("--methods", default="lora,fourierft,loca,foura")
    args = p.parse_args()
    report = {}
    for kind in args.models.split(","):
        for method in args.methods.split(","):
            try:
                report[f"{kind}/{method}"] = compare(kind, method, args.scope, torch.device(args.device))
            except Exception as e:  # one row's failure is reported, the others still run
                report[f"{kind}/{method}"] = dict(error=f"{type(e).__name__}: {str(e)[:300]}")
            print(f"{kind}/{method}", report[f"{kind}/{method}"], flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
