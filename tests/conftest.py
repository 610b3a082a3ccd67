"""Shared test settings: a test run leaves the checkout as it found it. Hypothesis keeps no example
database, and its home (where it caches Unicode tables) is a temporary folder removed at the end;
pytest.ini turns pytest's own cache off.

Under CI (the environment variable CI set, as .ci/run and most CI services do) hypothesis runs
derandomized: every run draws the same examples, so a test's verdict depends on the code alone. A
property must still hold for every draw (tests state it only where it must hold), and a local run
keeps drawing new examples to find the ones that break it.

`cli` is tests/test_robust.py's zygote (torch and train.py imported once, a fork per command),
shared by every test file that runs the command line."""
import os
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

_home = tempfile.mkdtemp(prefix="hypothesis-")
set_hypothesis_home_dir(_home)
settings.register_profile("no-database", database=None)
settings.register_profile("ci-derandomized", settings.get_profile("no-database"), derandomize=True)
settings.load_profile("ci-derandomized" if os.environ.get("CI") else "no-database")


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    from test_robust import Zygote
    zygote = Zygote(tmp_path_factory.mktemp("zygote"))
    yield zygote
    zygote.process.stdin.close()
    zygote.process.wait()


def pytest_unconfigure(config):
    shutil.rmtree(_home, ignore_errors=True)
