"""Shared test settings: a test run leaves the checkout as it found it. Hypothesis keeps no example
database, and its home (where it caches Unicode tables) is a temporary folder removed at the end;
pytest.ini turns pytest's own cache off."""
import shutil
import tempfile

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

_home = tempfile.mkdtemp(prefix="hypothesis-")
set_hypothesis_home_dir(_home)
settings.register_profile("no-database", database=None)
settings.load_profile("no-database")


def pytest_unconfigure(config):
    shutil.rmtree(_home, ignore_errors=True)
