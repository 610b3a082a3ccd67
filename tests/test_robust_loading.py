"""
Nothing lost, round three (issue 20): a checkpoint whose files do not fit together, or that the disk cannot
hold, is one clear line, not a run that trains silently wrong or a traceback. Checked as tests/test_robust.py
does: `train.py` forked from a zygote in a temporary folder, its exit status and its one `train.py: ...`
line; and, below, the library functions that make the promise (model.check_vocabulary, model.read_config,
model.load_hf_state_dict, hub.atomic_write).
"""
import errno
import json
import os
import shutil

import pytest
import torch
from hypothesis import given, settings, strategies as st

import hub
import train
from model import TINY_SPECIAL_TOKENS as SPECIAL_TOKENS
from model import (DebertaV2Config, SequenceClassifier, check_vocabulary, load_hf_state_dict, read_config,
                   save_pretrained, tiny_config)
from test_robust import WORDS, one_line
from tokenization import SentencePieceTokenizer, WordPieceTokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ROWS = len(SPECIAL_TOKENS) + 2 + len(WORDS)  # the tiny checkpoint's embedding: one row per vocab.txt line


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """RTE-format data and a tiny BERT checkpoint folder whose vocab.txt fills its embedding."""
    root = tmp_path_factory.mktemp("kit")
    data = root / "rte"
    data.mkdir()
    for name, n in (("train.tsv", 16), ("dev.tsv", 8)):
        rows = ["index\tsentence1\tsentence2\tlabel"] + [
            f"{i}\t{WORDS[i % 12]} {WORDS[(i * 5) % 12]}\t{'yes' if i % 2 else 'no'}\t"
            f"{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)]
        (data / name).write_text("\n".join(rows) + "\n")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + ["yes", "no"] + WORDS) + "\n")
    torch.manual_seed(0)
    save_pretrained(SequenceClassifier(tiny_config("bert", ROWS), 2), root / "model", [vocab])
    return dict(data=data, model=root / "model")


def changed(kit, where, config=None, vocab=None, tensors=None, drop=()):
    """A copy of the kit's checkpoint at `where`: config.json entries changed, vocab.txt's lines replaced,
    tensors of model.safetensors changed ({name: function of the tensor}), files dropped."""
    shutil.copytree(kit["model"], where)
    if config:
        (where / "config.json").write_text(json.dumps(dict(json.loads((where / "config.json").read_text()), **config)))
    if vocab is not None:
        (where / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if tensors:
        state = hub.read_safetensors(where / "model.safetensors")
        hub.write_safetensors(where / "model.safetensors", {k: tensors.get(k, lambda t: t)(v) for k, v in state.items()})
    for name in drop:
        (where / name).unlink()
    return where


def run(cli, kit, model, tmp_path, *more, prelude=""):
    """(exit status, stderr) of a short LoRA run on `model`; the run's folder is tmp_path / 'out'."""
    argv = ["--model", model, "--data-dir", kit["data"], "--method", "lora", "--batch-size", "8", "--max-steps", "2",
            "--out", tmp_path / "out", *more]
    code, _, err = cli(argv, tmp_path, prelude=prelude)
    return code, err

# -----------------------------------------------------------------------------
# the checkpoint's files do not fit together: refused before anything trains


@pytest.mark.parametrize("layers, expected", [
    (1, "holds 16 tensors that the bert model its config.json describes (num_hidden_layers=1, hidden_size=32) "
        "has no place for: bert.encoder.layer.1.attention.output.LayerNorm.bias, bert.encoder.layer.1."),
    (3, "lacks 16 backbone tensors of the bert model its config.json describes (num_hidden_layers=3, "
        "hidden_size=32): encoder.layer.2.attention.self.query.weight")])
def test_a_config_json_that_does_not_describe_the_weights_is_one_line(cli, kit, tmp_path, layers, expected):
    """Issue 20: `num_hidden_layers: 1` over 2-layer weights trained, with a warning about 16 ignored keys;
    3 over 2 was a ValueError that did not name the file. Now both name model.safetensors and its first keys."""
    model = changed(kit, tmp_path / "m", config=dict(num_hidden_layers=layers))
    code, err = run(cli, kit, model, tmp_path)
    one_line(code, err, 2, f"{model / 'model.safetensors'}: {expected}")
    assert not (tmp_path / "out" / "results.json").exists()


def test_nan_or_inf_in_the_pretrained_weights_is_named_when_loading(cli, kit, tmp_path):
    """Issue 20: a NaN in the weights surfaced as "loss is nan at step 1 ... try a lower --lr"."""
    query = "bert.encoder.layer.0.attention.self.query.weight"
    poison = {query: lambda t: t.index_fill(0, torch.tensor([3]), float("nan")),
              "bert.embeddings.LayerNorm.weight": lambda t: t.index_fill(0, torch.tensor([0]), float("-inf"))}
    model = changed(kit, tmp_path / "m", tensors=poison)
    code, err = run(cli, kit, model, tmp_path)
    line = one_line(code, err, 2, f"{model / 'model.safetensors'}: 2 tensors hold NaN or Inf values:",
                    f"{query} (NaN)", "bert.embeddings.LayerNorm.weight (Inf)", "download it again")
    assert "--lr" not in line


def test_a_folder_without_config_json_is_one_line_in_our_words(cli, kit, tmp_path):
    """Issue 20: it was Python's own "[Errno 2] No such file or directory: '.../config.json'"."""
    model = changed(kit, tmp_path / "m", drop=["config.json"])
    code, err = run(cli, kit, model, tmp_path)
    line = one_line(code, err, 2, f"{model} holds no config.json: a checkpoint folder needs config.json, "
                                  f"model.safetensors (or pytorch_model.bin)")
    assert "Errno" not in line
    with pytest.raises(FileNotFoundError, match=f"^{model} holds no config.json"):
        read_config(model / "config.json")


@pytest.mark.parametrize("lines, expected", [
    (ROWS + 800, f"holds {ROWS + 800:,} token ids, but {{config}} gives the embedding {ROWS} rows "
                 f"(vocab_size={ROWS}): ids {ROWS} to {ROWS + 799} have no embedding"),
    (ROWS - 3, f"holds {ROWS - 3} token ids, but {{config}} gives the embedding {ROWS} rows (vocab_size={ROWS}): "
               f"a bert checkpoint's tokenizer fills its embedding exactly")], ids=["larger", "smaller"])
def test_a_vocabulary_that_does_not_fit_the_embedding_is_refused_before_training(cli, kit, tmp_path, lines, expected):
    """Issue 20: a vocab.txt longer or shorter than the embedding's rows trained without a word (ids past the
    rows are an IndexError at the first batch that meets one). Both files and both sizes, exit 2."""
    words = SPECIAL_TOKENS + ["yes", "no"] + WORDS
    vocab = (words + [f"extra{i}" for i in range(lines - len(words))])[:lines]
    model = changed(kit, tmp_path / "m", vocab=vocab)
    code, err = run(cli, kit, model, tmp_path)
    one_line(code, err, 2, f"{model / 'vocab.txt'} " + expected.format(config=model / "config.json"))
    assert not (tmp_path / "out" / "results.json").exists()


def test_only_a_deberta_config_may_pad_its_embedding_beyond_the_tokenizer(tmp_path):
    """check_vocabulary's rule: DeBERTa-v3's config pads vocab_size (128,100 rows for 128,001 ids); BERT's
    and RoBERTa's fill it exactly; ids past the rows are refused for every model type."""
    spm = SentencePieceTokenizer(os.path.join(FIXTURES, "spm.model"))  # 3,000 pieces and [MASK] at 3,000
    ids = max(spm.vocab.values()) + 1
    deberta = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    for rows in (ids, ids + 99):
        check_vocabulary(spm, DebertaV2Config(vocab_size=rows, **deberta), tmp_path)
    with pytest.raises(ValueError, match=f"spm.model holds 3,001 token ids, but .*config.json gives the embedding "
                                         f"3,000 rows"):
        check_vocabulary(spm, DebertaV2Config(vocab_size=ids - 1, **deberta), tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + WORDS) + "\n")
    wordpiece = WordPieceTokenizer(tmp_path / "vocab.txt")
    check_vocabulary(wordpiece, tiny_config("bert", len(SPECIAL_TOKENS) + len(WORDS)), tmp_path)
    for model_type in ("bert", "roberta"):
        with pytest.raises(ValueError, match=f"a {model_type} checkpoint's tokenizer fills its embedding exactly"):
            check_vocabulary(wordpiece, tiny_config(model_type, len(SPECIAL_TOKENS) + len(WORDS) + 1), tmp_path)


def test_the_head_of_a_fresh_classifier_is_the_only_part_that_may_be_missing(kit):
    """The counterpart of the refusals above: a checkpoint without a head loads, the head left fresh."""
    state = hub.read_safetensors(kit["model"] / "model.safetensors")
    backbone = {k: v for k, v in state.items() if not k.startswith(("classifier.", "bert.pooler."))}
    model = SequenceClassifier(tiny_config("bert", ROWS), 3)
    assert sorted(load_hf_state_dict(model, backbone, "x")) == sorted(model.head_parameter_names())
    del backbone["bert.encoder.layer.1.output.LayerNorm.bias"]
    with pytest.raises(ValueError, match="^x: lacks 1 backbone tensors .*: encoder.layer.1.output.LayerNorm.bias$"):
        load_hf_state_dict(model, backbone, "x")

# -----------------------------------------------------------------------------
# a disk that cannot hold the file: one OSError, the temporary file removed, the old file intact

FILE_SIZE_LIMIT = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel refuses the write (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def test_a_checkpoint_the_disk_cannot_hold_is_one_line_naming_it(cli, kit, tmp_path):
    """Issue 20: torch's zip writer turns a failed write into `RuntimeError: [enforce fail at
    inline_container.cc:672] unexpected pos ...`, which train.py's `except OSError` missed: a traceback.
    Here the kernel refuses every file past 4 KiB (RLIMIT_FSIZE): log.jsonl fits, checkpoint.pt does not."""
    out = tmp_path / "out"
    code, err = run(cli, kit, kit["model"], tmp_path, "--save-every", "1", prelude=FILE_SIZE_LIMIT)
    one_line(code, err, 2, f"could not write {out / 'checkpoint.pt'} (File too large); no checkpoint was written")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["log.jsonl"]  # no *.tmp left


class FullDisk:
    """A file whose disk holds `room` more bytes: a write past them raises ENOSPC, as on a full tmpfs."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def full_disk(monkeypatch, room):
    """hub.atomic_write's files, from now on, on a disk with `room` bytes left."""
    fdopen = os.fdopen
    monkeypatch.setattr(hub.os, "fdopen", lambda fd, *args, **kwargs: FullDisk(fdopen(fd, *args, **kwargs), room))


def writers():
    """(name, function of a path) for each way the project writes a file through atomic_write."""
    tensors = {"weight": torch.arange(600, dtype=torch.float32).reshape(20, 30), "step": torch.tensor(7)}

    def torch_save(path):
        with hub.atomic_write(path) as f:
            torch.save(tensors, f)

    return [("torch.save", torch_save), ("write_safetensors", lambda path: hub.write_safetensors(path, tensors))]


@settings(max_examples=30, deadline=None)
@given(room=st.integers(0, 2000), which=st.sampled_from([name for name, _ in writers()]))
def test_any_failed_write_is_a_write_error_and_leaves_the_old_file(tmp_path_factory, room, which):
    """Whatever byte the disk fills at, and whatever the writer on top makes of it (torch's zip writer: a
    RuntimeError), atomic_write raises hub.WriteError, an OSError with the disk's errno and strerror and the
    destination's name; the temporary file is gone and the file written before is intact."""
    folder = tmp_path_factory.mktemp("disk")
    path = folder / "checkpoint.pt"
    path.write_bytes(b"the last good checkpoint")
    with pytest.MonkeyPatch.context() as monkeypatch:
        full_disk(monkeypatch, room)
        with pytest.raises(hub.WriteError) as failed:
            dict(writers())[which](path)
    error = failed.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == str(path)
    assert str(error) == f"could not write {path} (No space left on device)"
    assert path.read_bytes() == b"the last good checkpoint" and [p.name for p in folder.iterdir()] == [path.name]


def test_a_failed_flush_fsync_or_rename_is_a_write_error_and_the_callers_own_errors_pass(tmp_path, monkeypatch):
    """The steps after the caller's writes fail as WriteError too (an fsync on a full disk, a rename onto a
    folder); an exception of the caller's own (a bug, Ctrl-C) is not a write failure and passes unchanged.
    Every time, no temporary file is left."""
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(hub.WriteError, match=f"could not write {tmp_path / 'a_folder'} \\(Is a directory\\)"):
        with hub.atomic_write(tmp_path / "a_folder") as f:
            f.write(b"data")
    for error in (RuntimeError("a bug"), KeyboardInterrupt()):
        with pytest.raises(type(error)) as raised:
            with hub.atomic_write(tmp_path / "f") as f:
                f.write(b"data")
                raise error
        assert raised.value is error
    monkeypatch.setattr(hub.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(hub.WriteError, match=f"could not write {tmp_path / 'f'} \\(No space left\\)"):
        with hub.atomic_write(tmp_path / "f", "w") as f:
            f.write("text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder"] and not list((tmp_path / "a_folder").iterdir())
