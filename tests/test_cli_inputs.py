"""
Bad input on the command line is one clear line, exit status 2, naming the flag and what is allowed, found
before anything is written (no run folder, no empty runs/, no tiny model): flags out of range or empty, an
--out that cannot be a folder, an adapter too large to hold, --targets inside the classification head, a
--data-dir without the task's files, a failed download; bench.py's flags alike. A run whose loss turns NaN
exits 1 with a hint that fits it. Each command runs in the session's zygote (conftest.py's `cli`).
"""
import os
import shutil
import time

import pytest

from command_line import flags, one_line


# -----------------------------------------------------------------------------
# flags and --out: refused before the model or a folder is made


def test_out_that_cannot_be_a_folder_and_empty_flags_are_refused(cli, kit, tmp_path):
    (tmp_path / "a_file").write_text("")
    unwritable = "/sys/spectral-ft-test-out"  # sysfs: not even root may make a folder there
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        unwritable = str(tmp_path / "ro" / "out")
    for model in (["--model", "tiny"], ["--model", kit["model"], "--data-dir", kit["data"]]):
        code, _, err = cli([*model, "--out", tmp_path / "a_file"], tmp_path)
        one_line(code, err, 2, f"--out {tmp_path / 'a_file'} is a file, not a folder")
        code, _, err = cli([*model, "--out", tmp_path / "a_file" / "sub"], tmp_path)
        one_line(code, err, 2, f"--out {tmp_path / 'a_file' / 'sub'} cannot be written")
        code, _, err = cli([*model, "--out", unwritable], tmp_path)
        one_line(code, err, 2, f"--out {unwritable} cannot be written")
    for argv, expected in ((["--targets", ""], "--targets is empty"), (["--out", ""], "--out is empty"),
                           (["--model", ""], "--model is empty"), (["--targets", "query,"], "has an empty name")):
        code, _, err = cli(argv, tmp_path)
        one_line(code, err, 2, expected)
    assert not (tmp_path / "runs").exists()


def test_bad_hyperparameters_are_caught_before_the_tiny_model_is_written(cli, tmp_path):
    for argv in (["--max-length", "1000"], ["--method", "lora", "--r", "0"], ["--method", "lora", "--dropout", "2"],
                 ["--targets", "nothing_here"]):
        code, _, err = cli(["--model", "tiny", *argv, "--out", tmp_path / "out"], tmp_path)
        one_line(code, err, 2)
        assert not (tmp_path / "out").exists(), argv


def test_an_adapter_too_large_to_hold_is_refused_at_once_with_the_bound(cli, tmp_path):
    for argv, expected in (
            (["--method", "lora", "--r", "1000000000"], "--r 1000000000: lora on 4 layers of tiny would hold about "
                                                        "256,000,000,000 parameters"),
            (["--method", "vera", "--r", "100000000"], "--r 100000000: vera on 4 layers of tiny")):
        started = time.time()
        code, _, err = cli(["--model", "tiny", *argv, "--out", tmp_path / "out"], tmp_path)
        line = one_line(code, err, 2, expected, "at most 67,108,864", "choose a smaller --r")
        assert time.time() - started < 20 and not (tmp_path / "out").exists(), line
    code, _, err = cli(["--model", "roberta-base", "--method", "lora", "--r", "1000000", "--count-params"], tmp_path)
    one_line(code, err, 2, "lora on 24 layers of roberta-base", "the model's own 124,")


@pytest.mark.parametrize("targets", ["dense", "classifier", "pooler.dense,query"])
def test_targets_inside_the_head_are_refused_naming_the_flag_and_the_head(cli, kit, tmp_path, targets):
    code, _, err = cli(["--model", "tiny", "--method", "loca", "--targets", targets, "--max-steps", "1"], tmp_path)
    one_line(code, err, 2, f"--targets {targets}", "classification head (classifier, pooler.dense)")
    assert not (tmp_path / "runs").exists()


def test_adapter_seed_out_of_range_names_the_flag_and_fora_and_dfora_show_one_alpha(cli, tmp_path):
    code, _, err = cli(["--model", "tiny", "--method", "loca", "--adapter-seed", "-1"], tmp_path)
    one_line(code, err, 2, "--adapter-seed", "must be >= 0")
    shown = [cli(["--method", m, "--count-params"], tmp_path)[1].splitlines()[0] for m in ("fora", "dfora")]
    assert all("'alpha': 32.0" in line for line in shown), shown


# -----------------------------------------------------------------------------
# data: the folder, its files, the download


def test_bad_input_found_after_the_folder_was_made_leaves_no_empty_runs_folder(cli, kit, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(["--model", "tiny", "--method", "lora", "--data-dir", empty], tmp_path)
    one_line(code, err, 2, f"--data-dir {empty}")
    assert not (tmp_path / "runs").exists()


def test_data_errors_speak_of_flags_and_a_failed_download_leaves_no_folder(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(["--model", "tiny", "--data-dir", empty], tmp_path)
    line = one_line(code, err, 2, f"--data-dir {empty} lacks dev.tsv, train.tsv", "leave out --data-dir")
    assert "data_dir=" not in line and "download=False" not in line
    header = tmp_path / "header_only"
    header.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (header / name).write_text("index\tsentence1\tsentence2\tlabel\n")
    code, _, err = cli(["--model", "tiny", "--data-dir", header], tmp_path)
    line = one_line(code, err, 2, f"{header / 'train.tsv'} holds no rte examples")
    assert "delete" not in line.lower()
    cache = tmp_path / "glue"  # the default folder ($GLUE_DIR), with a cached file cut to its header
    (cache / "RTE").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(header / name, cache / "RTE" / name)
    code, _, err = cli(["--model", "tiny", "--task", "rte", "--data-dir", cache / "RTE"], tmp_path)
    assert "delete" not in err.lower()
    code, _, err = cli(["--model", "roberta-base", "--task", "rte", "--method", "lora", "--out", tmp_path / "o"],
                       tmp_path, GLUE_DIR=str(cache))
    one_line(code, err, 2, "holds no rte examples", "delete it to download it again")
    code, _, err = cli(["--model", "tiny", "--task", "cola", "--out", tmp_path / "o"], tmp_path, GLUE_DIR=str(cache),
                       GLUE_URL="http://127.0.0.1:9")  # nothing listens on the discard port
    line = one_line(code, err, 1, f"could not download GLUE cola into {cache / 'CoLA'}/", "--data-dir")
    assert "data_dir=" not in line and "url=" not in line
    assert not (cache / "CoLA").exists() and not (tmp_path / "o").exists()


# -----------------------------------------------------------------------------
# a run that diverges: exit 1, a hint that fits the run


def test_fp32_hint_only_when_the_run_is_not_already_fp32(cli, kit, tmp_path):
    for precision, hinted in (("fp32", False), ("bf16", True)):
        code, _, err = cli(flags(kit, "--lr", "1e30", "--max-steps", "20", "--precision", precision, "--device", "cpu",
                                 "--out", tmp_path / precision), tmp_path)
        line = one_line(code, err, 1, "loss is nan at step", "try a lower --lr", prefix="train.py:")
        assert ("--precision fp32" in line) == hinted, line


# -----------------------------------------------------------------------------
# bench.py


BENCH_CASES = [
    (["--hidden", "-5"], "argument --hidden: must be >= 0"),
    (["--hidden", "15", "--device", "cpu"], "--hidden 15: must be even"),
    (["--steps", "0"], "argument --steps: must be >= 1"),
    (["--batch", "two"], "argument --batch: expected an integer, got 'two'"),
    (["--seq", "100000", "--device", "cpu"], "--seq 100000: roberta-base takes at most 512 tokens"),
    (["--delta-sizes", "64,x"], "argument --delta-sizes: expected comma-separated integers"),
    (["--methods", "lora,bogus", "--device", "cpu"], "--methods: unknown bogus"),
    (["--device", "banana"], "--device 'banana' is not a device"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--compile", "all"], "argument --compile: invalid choice: 'all'"),
]


def test_bad_bench_flags_and_no_gpu_are_one_line(cli, tmp_path):
    for argv, expected in BENCH_CASES:
        code, _, err = cli(argv, tmp_path, kind="bench")
        one_line(code, err, 2, expected, prefix="bench.py:")
    code, _, err = cli([], tmp_path, kind="bench", CUDA_VISIBLE_DEVICES="")  # a machine without a GPU
    one_line(code, err, 2, "no CUDA GPU on this machine", "--device cpu", prefix="bench.py:")
    code, out, err = cli(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "1", "--seq", "4",
                          "--steps", "1", "--warmup", "0", "--methods", "lora", "--delta-sizes", ""], tmp_path,
                         kind="bench")
    assert code == 0, err
    assert out.splitlines()[0].startswith("# roberta-base shape (hidden 16, 1 layers")


# -----------------------------------------------------------------------------
# cheap checks before expensive ones, and where the defaults come from


def test_missing_data_is_found_before_the_method_is_built_on_the_model_s_shapes(monkeypatch, tmp_path):
    """A dry run of an expensive method (Spectral Adapter A computes every layer's SVD) waits until the data is
    known to be there: the "no data" line comes first, and the dry inject never starts."""
    import train

    def never(config):
        raise AssertionError("the dry inject ran before the data was checked")
    monkeypatch.setattr(train, "dry_inject", never)
    with pytest.raises(ValueError, match="--data-dir .* lacks"):
        train.main(["--method", "spectral_a", "--model", "tiny", "--task", "rte", "--data-dir", str(tmp_path),
                    "--device", "cpu", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_help_says_which_defaults_come_from_the_paper_s_row():
    import train

    helps = {a.dest: a.help or "" for a in train.build_parser("")._actions}
    for dest in ("epochs", "batch_size", "max_length", "lr", "lr_head", "weight_decay", "warmup_ratio", "r", "n",
                 "alpha", "lr_locations", "T_s"):
        assert "the paper's row" in helps[dest], dest
    for dest in ("seed", "log_every", "save_minutes"):  # not from a row: their own default, said
        assert "default" in helps[dest] and "paper's row" not in helps[dest], dest
