"""Tests of model.py: tiny random BERT/RoBERTa models in tmp_path, no network, no transformers.

Exactness against Hugging Face is checked by golden logits (test_*_matches_hf_golden_logits)
that were produced once with transformers from the same deterministic checkpoints.
"""
import hashlib
import http.server
import json
import threading
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

from encoder import hub
from encoder.model import (KNOWN_CONFIGS, ModelConfig, SequenceClassifier, load_hf_state_dict, load_pretrained, save_pretrained,
                   tiny_config)

VOCAB = 50
MODEL_TYPES = ["bert", "roberta"]


def tiny_model(model_type, num_labels=3, seed=0):
    torch.manual_seed(seed)
    return SequenceClassifier(tiny_config(model_type, VOCAB), num_labels).eval()


def random_batch(model, B=3, T=9, seed=1):
    """Ids without pad tokens, all-ones mask, token types valid for the model."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (B, T), generator=g)  # 0 and 1 are the pads of bert / roberta
    types = torch.randint(0, model.config.type_vocab_size, (B, T), generator=g)
    return ids, torch.ones(B, T, dtype=torch.long), types


def logits_of(model, batch):
    with torch.no_grad():
        return model(*batch)


def saved(model, directory):
    save_pretrained(model, directory)
    return hub.read_safetensors(directory / "model.safetensors")

# -----------------------------------------------------------------------------
# golden check against Hugging Face


def golden_model(model_type):
    """A deterministic tiny model: every parameter, in sorted name order, drawn from one
    seeded generator (LayerNorm weights around 1), so HF and we can rebuild the same file."""
    model = SequenceClassifier(tiny_config(model_type, VOCAB), num_labels=3).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = 0.1 * torch.randn(p.shape, generator=g)
            p.copy_(1 + noise if name.endswith("LayerNorm.weight") else noise)
    return model


GOLDEN_IDS = [[2, 17, 33, 5, 48, 9, 21, 3], [2, 40, 11, 3, 27, 3, 0, 0]]  # row 2: two pads
GOLDEN_MASK = [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]]
GOLDEN_TYPES = [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0, 0]]
# Produced once with transformers 5.23.0 (torch 2.13.0 CPU, float32): golden_model(t) saved
# by save_pretrained into a folder, loaded by BertForSequenceClassification /
# RobertaForSequenceClassification.from_pretrained(folder) in eval mode, called on GOLDEN_IDS
# with attention_mask=GOLDEN_MASK and token_type_ids=GOLDEN_TYPES (RoBERTa: the pad id 1 at the
# padded places and all-zero token types); transformers 4.57.6 and attn_implementation="eager" agree to 3e-8.
GOLDEN_LOGITS = {
    "bert": [[0.1772734, -0.09968673, -0.428871], [0.1481766, -0.1377599, -0.4895838]],
    "roberta": [[-0.05552389, -0.01434463, 0.4678959], [-0.01259105, 0.009424806, 0.4772628]],
}


def golden_inputs(model_type):
    ids, mask, types = (torch.tensor(x) for x in (GOLDEN_IDS, GOLDEN_MASK, GOLDEN_TYPES))
    if model_type == "roberta":
        ids = ids.masked_fill(mask == 0, 1)  # RoBERTa's pad id; positions are computed from it
        types = torch.zeros_like(types)  # type_vocab_size is 1
    return ids, mask, types


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_matches_hf_golden_logits(model_type, tmp_path):
    save_pretrained(golden_model(model_type), tmp_path)
    model = SequenceClassifier.from_pretrained(tmp_path, num_labels=3).eval()
    got = logits_of(model, golden_inputs(model_type))
    torch.testing.assert_close(got, torch.tensor(GOLDEN_LOGITS[model_type]), rtol=0, atol=1e-5)

# -----------------------------------------------------------------------------
# save -> load round trips, with the key and dtype variants found in the wild


def _no_prefix(state):
    return {k.removeprefix("bert.").removeprefix("roberta."): v for k, v in state.items()}


def _bert_prefix(state):  # old RoBERTa conversions sometimes used "bert."
    return {"bert." + k: v for k, v in _no_prefix(state).items()}


def _gamma_beta(state):
    rename = lambda k: k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    return {rename(k): v for k, v in state.items()}


VARIANTS = {"as_saved": lambda s: s, "no_prefix": _no_prefix, "bert_prefix": _bert_prefix,
            "gamma_beta": _gamma_beta}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_round_trip_gives_identical_logits(model_type, variant, tmp_path):
    model = tiny_model(model_type)
    state = VARIANTS[variant](saved(model, tmp_path))
    assert any(k.startswith(("bert.", "roberta.", "embeddings.")) for k in state)
    hub.write_safetensors(tmp_path / "model.safetensors", state)
    loaded = SequenceClassifier.from_pretrained(tmp_path, num_labels=3).eval()
    batch = random_batch(model)
    assert torch.equal(logits_of(loaded, batch), logits_of(model, batch))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pytorch_model_bin_loads_like_safetensors(model_type, tmp_path):
    model = tiny_model(model_type)
    state = saved(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = SequenceClassifier.from_pretrained(tmp_path, num_labels=3).eval()
    batch = random_batch(model)
    assert torch.equal(logits_of(loaded, batch), logits_of(model, batch))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_half_precision_weights_load_as_float32(model_type, dtype, tmp_path):
    model = tiny_model(model_type)
    state = {k: v.to(dtype) for k, v in saved(model, tmp_path).items()}
    hub.write_safetensors(tmp_path / "model.safetensors", state)
    loaded = SequenceClassifier.from_pretrained(tmp_path, num_labels=3).eval()
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():  # the reference: the original weights rounded the same way
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    batch = random_batch(model)
    assert torch.equal(logits_of(loaded, batch), logits_of(model, batch))


def test_saved_config_round_trips(tmp_path):
    model = tiny_model("roberta", num_labels=1)
    save_pretrained(model, tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["architectures"] == ["RobertaForSequenceClassification"]
    assert d["num_labels"] == 1 and d["id2label"] == {"0": "LABEL_0"}
    assert ModelConfig.from_json(d) == model.config
    keys = hub.read_safetensors(tmp_path / "model.safetensors").keys()
    assert all(k.startswith(("roberta.", "classifier.")) for k in keys)


def test_save_pretrained_refuses_unmerged_adapters(tmp_path):
    model = tiny_model("bert")
    model.encoder.layer[0].attention.self.query.lora_A = torch.nn.Parameter(torch.zeros(2, 32))
    with pytest.raises(ValueError, match="lora_A"):
        save_pretrained(model, tmp_path)

# -----------------------------------------------------------------------------
# what the loader accepts, ignores and refuses


def test_missing_backbone_keys_raise_listing_them(tmp_path):
    model = tiny_model("bert")
    state = saved(model, tmp_path)
    gone = [n for n in model.state_dict() if n.startswith("encoder.layer.1.")]  # 16 tensors
    for name in gone:
        del state["bert." + name]
    with pytest.raises(ValueError, match=f"lacks {len(gone)} backbone tensors") as e:
        load_hf_state_dict(tiny_model("bert"), state)
    assert ", ".join(gone[:10]) + f", ... ({len(gone) - 10} more)" in str(e.value)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_head_of_wrong_size_raises_naming_shapes(model_type, tmp_path):
    save_pretrained(tiny_model(model_type, num_labels=3), tmp_path)
    with pytest.raises(ValueError, match=r"shape \(3,.*shape \(2,.*num_labels=2"):
        SequenceClassifier.from_pretrained(tmp_path, num_labels=2)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_checkpoint_without_head_gets_fresh_hf_style_head(model_type, tmp_path):
    model = tiny_model(model_type)
    backbone = {k: v for k, v in saved(model, tmp_path).items() if not k.startswith(("classifier.", "bert.pooler."))}
    fresh = tiny_model(model_type, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bare encoder checkpoint is no reason to warn
        left = load_hf_state_dict(fresh, backbone)
    assert sorted(left) == sorted(fresh.head_parameter_names())
    with torch.no_grad():  # backbone loaded exactly
        torch.testing.assert_close(fresh.encode(*random_batch(model)), model.encode(*random_batch(model)), rtol=0, atol=0)
    for name in left:  # as transformers: weights N(0, initializer_range), biases 0
        t = fresh.state_dict()[name]
        assert t.abs().sum() == 0 if name.endswith("bias") else 0 < t.std() < 3 * model.config.initializer_range


def test_known_unused_keys_are_ignored_and_others_refused(tmp_path):
    state = saved(tiny_model("roberta"), tmp_path)
    state.update({"lm_head.dense.weight": torch.zeros(2), "roberta.embeddings.position_ids": torch.zeros(2),
                  "roberta.pooler.dense.weight": torch.zeros(2), "cls.predictions.bias": torch.zeros(2)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_hf_state_dict(tiny_model("roberta"), state)
    assert caught == []
    state["roberta.encoder.layer.9.output.dense.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"^model.safetensors: holds 1 tensors that the roberta model its config"
                                         r".* has no place for: roberta\.encoder\.layer\.9\.output\.dense\.weight;"):
        load_hf_state_dict(tiny_model("roberta"), state, source="model.safetensors")


def test_config_from_json_reads_architectures_and_rejects_unknown_types():
    d = dict(KNOWN_CONFIGS["roberta-base"])
    del d["model_type"]
    assert ModelConfig.from_json(d).model_type == "roberta"
    with pytest.raises(ValueError, match="bert, roberta"):
        ModelConfig.from_json(dict(d, model_type="gpt2"))
    with pytest.raises(ValueError, match="hidden_act"):
        ModelConfig.from_json(dict(d, hidden_act="swish"))


SIZES = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "max_position_embeddings", "type_vocab_size"]


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(SIZES), value=st.one_of(
    st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=2)))
def test_config_refuses_a_size_of_the_wrong_type_or_range_naming_it(field, value):
    with pytest.raises(ValueError, match=f"^{field}="):
        ModelConfig.from_json(dict(KNOWN_CONFIGS["roberta-base"], **{field: value}))


@settings(max_examples=30, deadline=None)
@given(field=st.sampled_from(["hidden_size", "vocab_size", "intermediate_size", "max_position_embeddings"]),
       value=st.integers(10**8, 10**15))
def test_config_refuses_a_model_too_large_to_allocate_before_allocating(field, value):
    config = dict(KNOWN_CONFIGS["roberta-base"], **{field: value})
    if field == "hidden_size":
        config["num_attention_heads"] = 1
    with pytest.raises(ValueError, match="more than the 10,000,000,000 this encoder allows"):
        ModelConfig.from_json(config)


@pytest.mark.parametrize("name", sorted(n for n, c in KNOWN_CONFIGS.items() if c["model_type"] in ("bert", "roberta")))
def test_num_parameters_is_the_encoders_count(name):
    config = ModelConfig.from_json(KNOWN_CONFIGS[name])
    with torch.device("meta"):
        model = SequenceClassifier(config, num_labels=2)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier"))
    pooler = 0 if config.model_type == "bert" else config.hidden_size ** 2 + config.hidden_size  # RoBERTa drops it
    assert config.num_parameters() == sum(p.numel() for p in model.parameters()) - head + pooler


@pytest.mark.parametrize("text, expected", [
    (b'{"hidden_size": 32,', "not valid JSON"), (b"[1, 2]", "expected a JSON object"),
    (b'{"model_type": "bert", "hidden_size": "big"}', "hidden_size='big' is not an integer"),
    (b'{"model_type": "bert", "num_attention_heads": 0}', "num_attention_heads=0 is out of range"),
    (b'{"model_type": "b\xe9rt"}', "not UTF-8 text")])
def test_read_config_names_the_file_and_the_problem(tmp_path, text, expected):
    from encoder.model import read_config

    (tmp_path / "config.json").write_bytes(text)
    with pytest.raises(ValueError) as info:
        read_config(tmp_path / "config.json")
    assert str(info.value).startswith(f"{tmp_path / 'config.json'}: ") and expected in str(info.value)


@pytest.mark.parametrize("name, total", [
    # Known sizes of transformers' *ForSequenceClassification with 2 labels
    ("roberta-base", 124_647_170), ("FacebookAI/roberta-large", 355_361_794),
    ("bert-base-uncased", 109_483_778)])
def test_known_configs_give_the_real_parameter_counts(name, total):
    with torch.device("meta"):
        model = SequenceClassifier(ModelConfig.from_json(KNOWN_CONFIGS[name]), num_labels=2)
    assert sum(p.numel() for p in model.parameters()) == total

# -----------------------------------------------------------------------------
# the forward pass


def test_state_dict_names_mirror_hugging_face():
    bert, roberta = (set(tiny_model(t).state_dict()) for t in MODEL_TYPES)
    layer = {f"encoder.layer.0.{n}.{w}" for w in ("weight", "bias") for n in (
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
        "output.dense", "output.LayerNorm")}
    emb = {f"embeddings.{n}_embeddings.weight" for n in ("word", "position", "token_type")}
    emb |= {"embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"}
    assert layer | emb | {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"} <= bert
    assert layer | emb | {f"classifier.{m}.{w}" for m in ("dense", "out_proj") for w in ("weight", "bias")} <= roberta
    assert not any(k.startswith("pooler.") for k in roberta)


@settings(max_examples=10, deadline=None)
@given(model_type=st.sampled_from(MODEL_TYPES), B=st.integers(1, 4), T=st.integers(1, 12),
       num_labels=st.integers(1, 4))
def test_encode_and_logits_have_documented_shapes(model_type, B, T, num_labels):
    model = tiny_model(model_type, num_labels)
    batch = random_batch(model, B, T)
    assert model.encode(*batch).shape == (B, T, model.config.hidden_size)
    assert model(*batch).shape == (B, num_labels)


def test_head_parameters_are_the_classifier_and_bert_pooler():
    for model_type, heads in (("bert", ("pooler.", "classifier.")), ("roberta", ("classifier.",))):
        model = tiny_model(model_type)
        names = model.head_parameter_names()
        assert names == [n for n, _ in model.named_parameters() if n.startswith(heads)] and names


def test_roberta_positions_start_after_pad():
    model = tiny_model("roberta")
    ids = torch.tensor([[0, 7, 8, 9, 2, 1, 1]])  # <s> a b c </s> <pad> <pad>
    e = model.embeddings
    pos = torch.tensor([2, 3, 4, 5, 6, 1, 1])  # pad_token_id + 1 onwards; pads sit at pad_token_id
    expected = e.LayerNorm(e.word_embeddings(ids) + e.token_type_embeddings.weight[0] + e.position_embeddings(pos))
    torch.testing.assert_close(e(ids, torch.zeros_like(ids)), expected, rtol=0, atol=0)


@settings(max_examples=12, deadline=None)
@given(model_type=st.sampled_from(MODEL_TYPES), lengths=st.lists(st.integers(1, 10), min_size=1, max_size=4),
       extra=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_padding_does_not_change_real_tokens(model_type, lengths, extra, seed):
    """Each sequence alone equals it inside a right-padded batch (real tokens and logits). In float64, where
    sums in another order differ by 1e-15 at most (worst of 400 draws: 9e-16; float32's: 7e-7), far below
    the tolerance whatever the draw."""
    model = tiny_model(model_type).double()
    pad = model.config.pad_token_id
    T = max(lengths) + extra
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    if model_type == "roberta":
        ids = ids.masked_fill(mask == 0, pad)  # RoBERTa positions are computed from pad ids
    # BERT: whatever ids sit under mask 0 must not matter; they stay random
    with torch.no_grad():
        h, logits = model.encode(ids, mask), model(ids, mask)
        for b, n in enumerate(lengths):
            alone = ids[b:b + 1, :n]
            torch.testing.assert_close(h[b, :n], model.encode(alone, torch.ones_like(alone))[0], rtol=0, atol=1e-12)
            torch.testing.assert_close(logits[b], model(alone, torch.ones_like(alone))[0], rtol=0, atol=1e-12)


def test_dropout_acts_only_in_training():
    model = tiny_model("roberta")
    batch = random_batch(model)
    assert torch.equal(model(*batch), model(*batch))
    model.train()
    assert not torch.equal(model(*batch), model(*batch))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_autocast_forward_and_backward_run_close_to_float32(model_type, dtype):
    model = tiny_model(model_type)
    ids, mask, types = random_batch(model)
    mask[0, -3:] = 0
    ref = logits_of(model, (ids, mask, types))
    with torch.autocast("cpu", dtype=dtype):
        got = model(ids, mask, types)
    got.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    torch.testing.assert_close(got.float(), ref, rtol=0, atol=0.05)


def test_too_long_sequence_raises_naming_the_limit():
    model = tiny_model("roberta")
    limit = model.config.max_position_embeddings - model.config.pad_token_id - 1
    model(torch.full((1, limit), 5))
    with pytest.raises(ValueError, match=f"at most {limit} tokens"):
        model(torch.full((1, limit + 1), 5))

# -----------------------------------------------------------------------------
# load_pretrained: a local folder, and a hub id served from 127.0.0.1

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog"]


def write_bert_folder(directory, num_labels=2, drop=()):
    vocab = directory.parent / "vocab.txt"
    vocab.write_text("\n".join(BERT_VOCAB) + "\n")
    torch.manual_seed(0)
    model = SequenceClassifier(tiny_config("bert", len(BERT_VOCAB)), num_labels).eval()
    save_pretrained(model, directory, tokenizer_files=[vocab])
    for name in drop:
        (directory / name).unlink()
    return model


def encode_batch(tokenizer, pairs):
    ids, types = zip(*(tokenizer.encode(a, b) for a, b in pairs))
    T = max(map(len, ids))
    pad = lambda seqs, v: torch.tensor([list(s) + [v] * (T - len(s)) for s in seqs])
    mask = pad([[1] * len(s) for s in ids], 0)
    return pad(ids, tokenizer.pad_token_id), mask, pad(types, 0)


def test_load_pretrained_reads_a_local_folder(tmp_path):
    model = write_bert_folder(tmp_path / "ckpt")
    loaded, tokenizer = load_pretrained(tmp_path / "ckpt", num_labels=2)
    batch = encode_batch(tokenizer, [("the cat sat", "on a mat"), ("a dog", None)])
    assert batch[0][0, 0] == BERT_VOCAB.index("[CLS]") and batch[1][1].sum() < batch[1][0].sum()
    assert torch.equal(logits_of(loaded.eval(), batch), logits_of(model, batch))


class FakeHub(http.server.BaseHTTPRequestHandler):
    """/{repo}/resolve/main/{file} from `root`, with the headers hub.hf_hub_download reads."""
    root, commit = None, "c" * 40

    def do_GET(self):
        parts = self.path.lstrip("/").split("/")
        path = self.root / parts[-1]
        if "resolve" not in parts or not path.is_file():
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", self.commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_load_pretrained_fetches_a_hub_id(weights, tmp_path):
    model = write_bert_folder(tmp_path / "served")
    if weights == "pytorch_model.bin":  # only the old format on the server: the 404 falls back
        torch.save(hub.read_safetensors(tmp_path / "served/model.safetensors"), tmp_path / "served/pytorch_model.bin")
        (tmp_path / "served/model.safetensors").unlink()
    handler = type("Handler", (FakeHub,), {"root": tmp_path / "served"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        loaded, tokenizer = load_pretrained("org/tiny-bert", 2, endpoint=f"http://127.0.0.1:{server.server_port}",
                                            cache_dir=tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    batch = encode_batch(tokenizer, [("the dog sat", "on the mat")])
    assert torch.equal(logits_of(loaded.eval(), batch), logits_of(model, batch))
    assert list((tmp_path / "cache").rglob(weights))


def test_load_pretrained_rejects_a_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_pretrained(str(tmp_path / "nowhere"), 2)
