"""
spectral_ft.py stands alone: README's "Ten lines, any torch model" snippet, run where a user outside
this repository runs it, in an empty folder holding only a copy of spectral_ft.py (README: copy the one file
next to your code). A fresh interpreter with -E -s (no PYTHONPATH, no user site-packages) has no path into the
repository but that copy: the snippet fails with ModuleNotFoundError if it or spectral_ft.py imports another
module of the repository, and the test fails if any module the interpreter loaded lies in the repository.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Ten lines, any torch model"

# Runs the snippet, then prints (last line) the file of every module loaded, as JSON.
DRIVER = """
import json, runpy, sys
runpy.run_path("snippet.py", run_name="__main__")
print(json.dumps(sorted(str(getattr(m, "__file__", None) or "") for m in list(sys.modules.values()))))
"""


def readme_snippet():
    """The one ```python block of README's section SECTION."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count(SECTION) == 1, f"README.md has no single {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, f"{SECTION!r} holds {len(blocks)} python blocks, not 1"
    return blocks[0]


def test_the_readme_snippet_runs_beside_a_copy_of_spectral_ft_alone(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(REPO / "spectral_ft.py", work / "spectral_ft.py")
    (work / "snippet.py").write_text(readme_snippet(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([sys.executable, "-E", "-s", "-c", DRIVER], cwd=work, capture_output=True, text=True,
                          env=dict(env, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    *printed, modules = done.stdout.splitlines()
    assert printed, "the snippet printed nothing"  # its print(names, count_trainable(model))
    files = [(work / f).resolve() for f in json.loads(modules) if f]  # relative ones: to the interpreter's folder
    assert (work / "spectral_ft.py").resolve() in files
    assert [f for f in files if f.is_relative_to(REPO)] == []
