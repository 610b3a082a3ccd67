"""
The command line under test: `train.py` and `bench.py` run as a user runs them, each command in a child
process whose working directory is a temporary folder, judged by its exit status and its one
`train.py: ...` / `bench.py: ...` line on stderr.

A "zygote" imports torch, train.py and bench.py once, then forks one child per command (a fresh
`python train.py` costs seconds of imports). A child may run in the background (to be stopped with a
signal) and may first run a `prelude`: test-only Python that simulates a full disk or slow data.
conftest.py makes one zygote for the whole session (the `cli` fixture) and the `kit` the tests run on.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = "red blue green cat dog bird runs sits eats big small old".split()

ZYGOTE = r"""
import json, os, signal, sys, traceback
sys.path.insert(0, os.environ["SPECTRAL_FT_REPO"])
import torch._dynamo  # imported lazily by meta-device code; once here, not in every child
import bench, train  # torch and the project, imported once; nothing has run, so forking is safe
for line in sys.stdin:
    request = json.loads(line)
    if request["kind"] == "wait":
        print(os.waitstatus_to_exitcode(os.waitpid(request["pid"], 0)[1]), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises, as at a terminal (even when
        os.chdir(request["cwd"])                                    # the suite was started with SIGINT ignored)
        os.environ.update(request["env"])
        for fd, path in ((1, request["out"]), (2, request["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        try:
            exec(request["prelude"])
            code = (bench if request["kind"] == "bench" else train).cli(request["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    print(pid if request["background"] else os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Zygote:
    """cli(argv, cwd) -> (exit status, stdout, stderr); cli.start(..., background=True) -> (pid, out, err paths)."""

    def __init__(self, logs):
        self.logs, self.count = logs, 0
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(logs / "hf"), HF_HUB_OFFLINE="1",
                   SPECTRAL_FT_REPO=str(REPO), GLUE_DIR=str(logs / "glue-cache"))
        env.pop("GLUE_URL", None)
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=logs, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _send(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def start(self, argv, cwd, kind="train", background=False, prelude="", **env):
        self.count += 1
        out, err = self.logs / f"{self.count}.out", self.logs / f"{self.count}.err"
        value = self._send(dict(kind=kind, argv=list(map(str, argv)), cwd=str(cwd), env=env, prelude=prelude,
                                out=str(out), err=str(err), background=background))
        return value, out, err

    def __call__(self, argv, cwd, kind="train", prelude="", **env):
        """(exit status, stdout, stderr) of `train.py argv` (or bench.py) run in `cwd`."""
        code, out, err = self.start(argv, cwd, kind, False, prelude, **env)
        return code, out.read_text(), err.read_text()

    def wait(self, pid):
        return self._send(dict(kind="wait", pid=pid))

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def one_line(code, err, status, *expected, prefix="train.py:"):
    """The promise: exit `status`, one line starting with `prefix` that holds every `expected` text."""
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert code == status and len(lines) == 1 and "Traceback" not in err, (code, err[-2000:])
    assert all(text in lines[0] for text in expected), (expected, lines[0])
    return lines[0]


def write_rte(folder, sizes, second_word=True):
    """RTE-format TSVs in `folder` ({file name: rows}) over WORDS; sentence2 is 'yes'/'no' (and a word)."""
    folder.mkdir()
    for name, n in sizes.items():
        rows = ["index\tsentence1\tsentence2\tlabel"] + [
            f"{i}\t{WORDS[i % 12]} {WORDS[(i * 5) % 12]}\t{'yes' if i % 2 else 'no'}"
            f"{' ' + WORDS[(i * 7) % 12] if second_word else ''}\t"
            f"{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)]
        (folder / name).write_text("\n".join(rows) + "\n")


def flags(kit, *more):
    """A LoRA run on the kit's model and data, batch size 8, with `more` flags."""
    return ["--model", kit["model"], "--data-dir", kit["data"], "--method", "lora", "--batch-size", "8", *more]


def run(cli, kit, model, tmp_path, *more, prelude=""):
    """(exit status, stderr) of a short LoRA run on `model`; the run's folder is tmp_path / 'out'."""
    argv = ["--model", model, "--data-dir", kit["data"], "--method", "lora", "--batch-size", "8", "--max-steps", "2",
            "--out", tmp_path / "out", *more]
    code, _, err = cli(argv, tmp_path, prelude=prelude)
    return code, err


def log_lines(out):
    """The records of a run folder's log.jsonl."""
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
