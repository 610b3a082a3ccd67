"""Shared test settings: a test run leaves the checkout as it found it. Hypothesis keeps no example
database, and its home (where it caches Unicode tables) is a temporary folder removed at the end;
pytest.ini turns pytest's own cache off.

Under CI (the environment variable CI set, as .ci/run and most CI services do) hypothesis runs
derandomized: every run draws the same examples, so a test's verdict depends on the code alone. A
property must still hold for every draw (tests state it only where it must hold), and a local run
keeps drawing new examples to find the ones that break it.

`cli` runs the command line: one zygote for the session (tests/command_line.py: torch and train.py
imported once, a fork per command), shared by every test file that runs `train.py` or `bench.py`. `kit` is
what those tests run on: RTE-format data, a tiny BERT checkpoint folder and a finished two-step LoRA run.
Both are built once; a test that changes one of their files changes a copy."""
import os
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from command_line import WORDS, Zygote, write_rte

_home = tempfile.mkdtemp(prefix="hypothesis-")
set_hypothesis_home_dir(_home)
settings.register_profile("no-database", database=None)
settings.register_profile("ci-derandomized", settings.get_profile("no-database"), derandomize=True)
settings.load_profile("ci-derandomized" if os.environ.get("CI") else "no-database")


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    zygote = Zygote(tmp_path_factory.mktemp("zygote"))
    yield zygote
    zygote.close()


@pytest.fixture(scope="session")
def kit(tmp_path_factory):
    """Built once: RTE-format data, a tiny BERT checkpoint folder, and a two-step LoRA run to resume."""
    import torch
    import train
    from encoder.model import TINY_SPECIAL_TOKENS, SequenceClassifier, save_pretrained, tiny_config

    root = tmp_path_factory.mktemp("kit")
    data, big = root / "rte", root / "big"  # big: an epoch of 512 steps at batch size 1
    write_rte(data, {"train.tsv": 16, "dev.tsv": 8})
    write_rte(big, {"train.tsv": 512, "dev.tsv": 8})
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(TINY_SPECIAL_TOKENS + ["yes", "no"] + WORDS) + "\n")
    torch.manual_seed(0)
    model = root / "model"
    save_pretrained(SequenceClassifier(tiny_config("bert", len(TINY_SPECIAL_TOKENS) + 14), 2), model, [vocab])
    run = root / "run"
    train.main(["--model", str(model), "--data-dir", str(data), "--method", "lora", "--max-steps", "2",
                "--batch-size", "8", "--out", str(run)])
    return dict(root=root, data=data, big=big, model=model, run=run)


def pytest_unconfigure(config):
    shutil.rmtree(_home, ignore_errors=True)
