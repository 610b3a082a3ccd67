"""
The numbers of a fixed tiny run, pinned bit for bit (issue 17): for every method, a tiny BERT trained in
float64 on the CPU for a few steps gives exactly the logged losses and dev metrics and exactly the adapter
tensors recorded in tests/golden/train_fp64.json. A refactoring of train.py and its modules must leave
them unchanged; a change that is meant to change the numbers rewrites the file, and says why, with

    python tests/test_golden.py --write
"""
import hashlib
import json
import random
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import spectral_ft  # noqa: E402
import train  # noqa: E402
from hub import read_safetensors  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "train_fp64.json"
METHODS = [*spectral_ft.METHODS, "full", "head"]
TASKS = ("rte", "stsb")
WORDS = "red blue green cat dog bird runs sits eats big small old".split()
FLAGS = ["--model", "tiny", "--precision", "fp64", "--device", "cpu", "--max-steps", "6", "--eval-every", "2",
         "--batch-size", "8", "--seed", "3"]
LOCA_FLAGS = ["--T-s", "4", "--B-a", "1", "--B-l", "1"]  # coefficient and location phases, then frozen


def write_task(directory, task):
    """RTE- or STS-B-format TSVs whose label follows the first word of sentence2 ('yes': entailment, a high
    score). STS-B's dev metrics are continuous, so that any change in the predictions shows."""
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", 40), ("dev.tsv", 16)):
        rows = ["index\tsentence1\tsentence2\tlabel" if task == "rte" else "index\tgenre\tsentence1\tsentence2\tscore"]
        for i in range(n):
            yes = i % 2 == 0
            s1 = " ".join(rng.choice(WORDS) for _ in range(5))
            s2 = ("yes " if yes else "no ") + " ".join(rng.choice(WORDS) for _ in range(3))
            label = ("entailment" if yes else "not_entailment") if task == "rte" else f"{rng.uniform(2.5 * yes, 2.5 + 2.5 * yes):.3f}"
            rows.append(f"{i}\t{s1}\t{s2}\t{label}" if task == "rte" else f"{i}\tmain\t{s1}\t{s2}\t{label}")
        (directory / name).write_text("\n".join(rows) + "\n")
    return directory


def fingerprint(method, task, root):
    """The run's evaluations (step, mean training loss, dev metrics, floats as hex) and the sha256 of each
    tensor of its adapter.safetensors."""
    data, out = write_task(root / "data", task), root / method
    rate = ["--lr-head" if method == "head" else "--lr", "1e-2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order
    try:
        train.main([*FLAGS, "--method", method, "--task", task, "--data-dir", str(data), "--out", str(out), *rate,
                    *(LOCA_FLAGS if method == "loca" else [])])
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    hexed = lambda v: v.hex() if isinstance(v, float) else v
    log = [[line["step"], hexed(line["loss"]), {s: {k: hexed(v) for k, v in m.items()}
                                               for s, m in line["metrics"].items()}]
           for line in lines if "metrics" in line]
    tensors = {name: hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
               for name, t in sorted(read_safetensors(out / "adapter.safetensors").items())}
    return {"log": log, "adapter": tensors}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", METHODS)
def test_a_fixed_tiny_fp64_run_gives_the_recorded_losses_metrics_and_adapter_bit_for_bit(method, task, tmp_path):
    expected = json.loads(GOLDEN.read_text())[f"{method} {task}"]
    assert fingerprint(method, task, tmp_path) == expected


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        golden = {f"{m} {t}": fingerprint(m, t, Path(root) / f"{m}-{t}") for m in METHODS for t in TASKS}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
