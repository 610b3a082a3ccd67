"""
The layout's promises, checked on the source: a method is one class (no module of the pipeline names one), the
configuration is decided once (--print-config is what the run records), the loop shows the step, and the folders
import downwards only.
"""
import ast
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import spectral_ft
import train
from run.step import COMPILE_SCOPES

REPO = Path(__file__).resolve().parent.parent
# Where a method may be named: its own module, the papers' rows, bench.py's row list, tests and scripts.
MAY_NAME_METHODS = ("spectral_ft.py", "run/paper_rows.py", "bench.py")
# Each part of the layout imports only the parts before it (README "Layout").
LAYERS = [("spectral_ft",), ("encoder",), ("data",), ("run",), ("train",), ("export", "bench")]


def sources():
    """{path relative to the repository: syntax tree} of the project's modules (not tests, scripts)."""
    files = [*REPO.glob("*.py"), *REPO.glob("encoder/*.py"), *REPO.glob("run/*.py"), *REPO.glob("data/*.py")]
    return {str(f.relative_to(REPO)): ast.parse(f.read_text()) for f in files}


def imported(tree):
    """The project modules a syntax tree imports, as dotted names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer(module):
    top = module.split(".")[0].split("/")[0].removesuffix(".py")
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def test_no_module_of_the_pipeline_names_a_method():
    """What a method needs is declared on its class; the pipeline asks the class (spectral_ft.METHODS)."""
    named = [f"{path}:{node.lineno} {node.value!r}" for path, tree in sources().items() if path not in MAY_NAME_METHODS
             for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in spectral_ft.METHODS]
    assert not named


def test_the_cli_offers_exactly_spectral_ft_s_methods():
    choices = next(a.choices for a in train.build_parser("")._actions if a.dest == "method")
    assert list(choices) == [*spectral_ft.METHODS, "full", "head"]


def test_each_part_imports_only_the_parts_before_it_and_the_run_folder_not_the_configuration():
    for path, tree in sources().items():
        own = layer(path)
        for module in imported(tree):
            other = layer(module)
            assert other is None or other < own or other == own and module.split(".")[0] == path.split("/")[0], \
                f"{path} imports {module}"
    for path in ("run/folder.py", "run/distributed.py"):
        assert "run.config" not in imported(sources()[path]) and "config" not in imported(sources()[path])


def test_the_training_loop_s_body_is_the_step_forward_loss_backward_optimizer():
    loop = next(node for node in ast.walk(ast.parse(Path(train.__file__).read_text()))
                if isinstance(node, ast.FunctionDef) and node.name == "train_loop")
    body = ast.unparse(next(node for node in ast.walk(loop) if isinstance(node, ast.While)))
    for call in ("network(input_ids, mask, types)", "weighted_loss(", ".backward()", "training.scaler.step(training.optimizer)",
                 "training.scheduler.step()", "training.schedule.step()", "zero_grad("):
        assert call in body, call


def test_print_config_is_the_configuration_the_run_records(tmp_path, capsys):
    """A LoCA run whose T_s comes from its length and whose max_length is cut to the model's: --print-config
    prints, field for field, what results.json records."""
    from test_golden import write_task

    data = write_task(tmp_path / "data", "rte")
    flags = ["--model", "tiny", "--method", "loca", "--task", "rte", "--data-dir", str(data), "--device", "cpu",
             "--epochs", "3", "--batch-size", "8", "--max-length", "64", "--out", str(tmp_path / "run")]
    printed = train.main([*flags, "--print-config"])["config"]
    assert json.loads(capsys.readouterr().out) == printed
    assert printed["method_settings"]["T_s"] == round(0.1 * 3 * 5)  # 40 examples: 5 steps an epoch, 3 epochs
    train.main(flags)
    recorded = json.loads((tmp_path / "run" / "results.json").read_text())["config"]
    assert recorded == printed
    past_the_end = train.main([*flags, "--T-s", "1000", "--print-config"])["config"]  # Table 5's V2
    capsys.readouterr()
    assert past_the_end["method_settings"]["T_s"] == 3 * 5  # capped at the run's length, as the run uses it


@settings(max_examples=20, deadline=None)
@given(total=st.one_of(st.none(), st.integers(1, 10**6)), scope=st.sampled_from(COMPILE_SCOPES), given_=st.booleans())
def test_the_compile_scope_follows_the_run_s_length_unless_given(total, scope, given_):
    """--compile wins; without it a run of LAYERS_FROM_STEPS steps or more compiles each layer, a shorter run (or
    one whose length is unknown) nothing: CUDA graphs alone."""
    from run.config import LAYERS_FROM_STEPS, decide_compile

    long_run = total is not None and total >= LAYERS_FROM_STEPS
    assert decide_compile(scope, given_, total) == (scope if given_ else "layers" if long_run else "none")


def test_print_config_shows_the_compile_scope_the_run_s_length_decides(capsys):
    from run.config import LAYERS_FROM_STEPS

    flags = ["--model", "tiny", "--method", "lora", "--device", "cpu", "--print-config"]
    decided = {steps: train.main([*flags, "--max-steps", str(steps)])["config"]["compile"]
               for steps in (LAYERS_FROM_STEPS - 1, LAYERS_FROM_STEPS)}
    given = train.main([*flags, "--max-steps", str(LAYERS_FROM_STEPS), "--compile", "adapters"])["config"]["compile"]
    capsys.readouterr()
    assert decided == {LAYERS_FROM_STEPS - 1: "none", LAYERS_FROM_STEPS: "layers"} and given == "adapters"


def test_a_row_s_max_length_is_cut_to_the_model_s_positions_and_a_flag_beyond_them_refused():
    from run.config import decide_max_length
    from run.errors import UsageError

    assert decide_max_length(dict(model="tiny", max_length=512), given=False) == 128  # the tiny BERT's positions
    with pytest.raises(UsageError, match="--max-length 512 is more than tiny takes: allowed at most 128"):
        decide_max_length(dict(model="tiny", max_length=512), given=True)
