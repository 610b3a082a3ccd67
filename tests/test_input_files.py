"""
A pretrained checkpoint folder (config.json, model.safetensors or pytorch_model.bin, vocab.txt) or a data
file that is damaged, or whose files do not fit together, is one clear line naming the file and what is
wrong, exit status 2, before anything trains: never a run that trains silently wrong, nor a traceback.
Checked on the command line (conftest.py's `cli`, `kit`) and, below, in the library functions that make the
promise (model.check_vocabulary, model.read_config, model.load_hf_state_dict).
"""
import json
import os
import shutil

import pytest
import torch

from encoder import hub
from command_line import WORDS, one_line, run
from encoder.model import TINY_SPECIAL_TOKENS as SPECIAL_TOKENS
from encoder.model import (DebertaV2Config, SequenceClassifier, check_vocabulary, load_hf_state_dict, read_config,
                   tiny_config)
from encoder.tokenization import SentencePieceTokenizer, WordPieceTokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ROWS = len(SPECIAL_TOKENS) + 2 + len(WORDS)  # the tiny checkpoint's embedding: one row per vocab.txt line


def model_copy(kit, where, **files):
    """The kit's checkpoint folder copied to `where`, with `files` (name -> bytes, or None to delete)."""
    shutil.copytree(kit["model"], where)
    for name, content in files.items():
        if content is None:
            (where / name).unlink()
        else:
            (where / name).write_bytes(content)
    return where


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


# -----------------------------------------------------------------------------
# a file that cannot be read as what it claims to be


CONFIG_CASES = [  # (config.json change, what the line must say besides the file's name)
    (dict(num_attention_heads=0), "num_attention_heads=0 is out of range: must be >= 1"),
    (dict(hidden_size="big"), "hidden_size='big' is not an integer"),
    (dict(hidden_size=10**9), "more than the 10,000,000,000 this encoder allows"),
    (dict(num_hidden_layers=-3), "num_hidden_layers=-3 is out of range: must be >= 1"),
    ([1, 2], "expected a JSON object"),
    ("{\"hidden_size\": 32,", "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
]


@pytest.mark.parametrize("change, expected", CONFIG_CASES, ids=["heads0", "big", "huge", "layers", "list", "json"])
def test_a_bad_config_json_is_one_line_naming_it(cli, kit, tmp_path, change, expected):
    config = json.loads((kit["model"] / "config.json").read_text())
    text = change if isinstance(change, str) else json.dumps(change if isinstance(change, list) else
                                                             dict(config, **change))
    model = model_copy(kit, tmp_path / "m", **{"config.json": text.encode()})
    out = tmp_path / "out"
    code, _, err = cli(["--model", model, "--data-dir", kit["data"], "--out", out], tmp_path)
    one_line(code, err, 2, f"{model / 'config.json'}: ", expected)
    assert not out.exists()


def test_bad_weight_tokenizer_and_data_files_are_one_line_naming_them(cli, kit, tmp_path):
    """A truncated pytorch_model.bin, a vocab.txt and a train.tsv that are not UTF-8."""
    bin_model = model_copy(kit, tmp_path / "bin", **{"model.safetensors": None})
    state = {f"bert.{k}": v for k, v in SequenceClassifier.from_pretrained(kit["model"], 2).state_dict().items()}
    torch.save(state, bin_model / "pytorch_model.bin")
    whole = (bin_model / "pytorch_model.bin").read_bytes()
    (bin_model / "pytorch_model.bin").write_bytes(whole[:len(whole) // 2])
    vocab = (kit["model"] / "vocab.txt").read_bytes()
    latin1 = model_copy(kit, tmp_path / "latin1", **{"vocab.txt": vocab.replace(b"green", b"gr\xfcn")})
    data = tmp_path / "data"
    shutil.copytree(kit["data"], data)
    rows = (data / "train.tsv").read_bytes().split(b"\n")
    (data / "train.tsv").write_bytes(b"\n".join(rows[:3] + [rows[3].replace(b"\t", b"\t\xe9", 1)] + rows[4:]))
    for argv, expected in (
            (["--model", bin_model, "--data-dir", kit["data"]], [f"{bin_model / 'pytorch_model.bin'}: damaged or truncated"]),
            (["--model", latin1, "--data-dir", kit["data"]], [f"{latin1 / 'vocab.txt'}: not UTF-8 text"]),
            (["--model", kit["model"], "--data-dir", data], [f"{data / 'train.tsv'}, line 4: not UTF-8 text",
                                                            "byte 0xe9"])):
        out = tmp_path / "out"
        code, _, err = cli([*argv, "--out", out], tmp_path)
        one_line(code, err, 2, *expected)
        assert not out.exists()


def test_a_folder_without_config_json_is_one_line_in_our_words(cli, kit, tmp_path):
    """A checkpoint folder without config.json is one line saying what such a folder needs, in our words,
    not Python's own "[Errno 2] No such file or directory: '.../config.json'"."""
    model = changed(kit, tmp_path / "m", drop=["config.json"])
    code, err = run(cli, kit, model, tmp_path)
    line = one_line(code, err, 2, f"{model} holds no config.json: a checkpoint folder needs config.json, "
                                  f"model.safetensors (or pytorch_model.bin)")
    assert "Errno" not in line
    with pytest.raises(FileNotFoundError, match=f"^{model} holds no config.json"):
        read_config(model / "config.json")


def test_nan_or_inf_in_the_pretrained_weights_is_named_when_loading(cli, kit, tmp_path):
    """A NaN or Inf in the pretrained weights is named, tensor by tensor, when the folder is loaded: not left
    to surface as "loss is nan at step 1 ... try a lower --lr", which would blame the learning rate."""
    query = "bert.encoder.layer.0.attention.self.query.weight"
    poison = {query: lambda t: t.index_fill(0, torch.tensor([3]), float("nan")),
              "bert.embeddings.LayerNorm.weight": lambda t: t.index_fill(0, torch.tensor([0]), float("-inf"))}
    model = changed(kit, tmp_path / "m", tensors=poison)
    code, err = run(cli, kit, model, tmp_path)
    line = one_line(code, err, 2, f"{model / 'model.safetensors'}: 2 tensors hold NaN or Inf values:",
                    f"{query} (NaN)", "bert.embeddings.LayerNorm.weight (Inf)", "download it again")
    assert "--lr" not in line


# -----------------------------------------------------------------------------
# files that do not fit together: refused before anything trains


@pytest.mark.parametrize("layers, expected", [
    (1, "holds 16 tensors that the bert model its config.json describes (num_hidden_layers=1, hidden_size=32) "
        "has no place for: bert.encoder.layer.1.attention.output.LayerNorm.bias, bert.encoder.layer.1."),
    (3, "lacks 16 backbone tensors of the bert model its config.json describes (num_hidden_layers=3, "
        "hidden_size=32): encoder.layer.2.attention.self.query.weight")])
def test_a_config_json_that_does_not_describe_the_weights_is_one_line(cli, kit, tmp_path, layers, expected):
    """A config.json with fewer layers than the weights (`num_hidden_layers: 1` over 2 layers would train,
    ignoring 16 tensors) or more (3 over 2 lacks tensors) is refused: one line naming model.safetensors, how
    many tensors do not fit and the first of them."""
    model = changed(kit, tmp_path / "m", config=dict(num_hidden_layers=layers))
    code, err = run(cli, kit, model, tmp_path)
    one_line(code, err, 2, f"{model / 'model.safetensors'}: {expected}")
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("lines, expected", [
    (ROWS + 800, f"holds {ROWS + 800:,} token ids, but {{config}} gives the embedding {ROWS} rows "
                 f"(vocab_size={ROWS}): ids {ROWS} to {ROWS + 799} have no embedding"),
    (ROWS - 3, f"holds {ROWS - 3} token ids, but {{config}} gives the embedding {ROWS} rows (vocab_size={ROWS}): "
               f"a bert checkpoint's tokenizer fills its embedding exactly")], ids=["larger", "smaller"])
def test_a_vocabulary_that_does_not_fit_the_embedding_is_refused_before_training(cli, kit, tmp_path, lines, expected):
    """A vocab.txt longer or shorter than the embedding's rows is refused before training (ids past the rows
    would be an IndexError at the first batch that meets one; fewer ids would train without a word): one line
    naming both files and both sizes, exit 2."""
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
