"""Tests of model.py's DeBERTa-v2/v3 encoder ("deberta-v2"): no network, no transformers.

Golden values. tests/fixtures/deberta_tiny and deberta_tiny_conv are Hugging Face checkpoints written
by transformers itself, and deberta_golden.safetensors holds their outputs. Produced once with
transformers 5.24.0 and torch 2.13.0 (CPU, float32) by this script (not kept in the repository):

    cfg = {"deberta_tiny": dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64, relative_attention=True,
               pos_att_type=["p2c", "c2p"], share_att_key=True, position_buckets=8, norm_rel_ebd="layer_norm",
               position_biased_input=False, type_vocab_size=0, max_relative_positions=-1,
               layer_norm_eps=1e-7, num_labels=2),
           "deberta_tiny_conv": dict(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=48, relative_attention=True, pos_att_type="c2p",
               share_att_key=False, position_buckets=-1, max_relative_positions=6, norm_rel_ebd="none",
               position_biased_input=True, type_vocab_size=2, embedding_size=16, conv_kernel_size=3,
               conv_act="tanh", hidden_act="gelu_new", layer_norm_eps=1e-7, num_labels=1)}
    for i, (name, kw) in enumerate(cfg.items()):
        torch.manual_seed(i)
        model = DebertaV2ForSequenceClassification(DebertaV2Config(**kw)).eval()
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():  # every parameter in sorted name order: 0.2 N(0, 1), LayerNorm weights 1 + that
            for n, p in sorted(model.named_parameters()):
                noise = 0.2 * torch.randn(p.shape, generator=g)
                p.copy_(1 + noise if n.endswith("LayerNorm.weight") else noise)
        model.save_pretrained(f"tests/fixtures/{name}", safe_serialization=True)
        # batches: "short" (3, 20) with lengths 20, 13, 6; "long" (2, 90) with lengths 90, 71 (relative
        # distances past max_position_embeddings), only without absolute positions. Seed 10 + i / 20 + i:
        #   ids = randint(1, vocab, (B, T)) * mask (pad id 0); token types randint(0, 2) * mask if
        #   type_vocab_size > 0, else zeros.
        # out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        # stored: f"{name}.{batch}.{input_ids|attention_mask|token_type_ids|logits|last_hidden_state}"
        #         (out.logits, out.hidden_states[-1]) with hub.write_safetensors.
"""
import hashlib
import http.server
import json
import re
import threading
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from encoder import hub
import spectral_ft
import train
from encoder.model import (KNOWN_CONFIGS, DebertaClassifier, DebertaV2Config, _download, config_from_json,
                   load_hf_state_dict, log_bucket_position, read_config, relative_positions, save_pretrained)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN_CASES = [("deberta_tiny", 2, "short"), ("deberta_tiny", 2, "long"), ("deberta_tiny_conv", 1, "short")]
F64 = torch.float64


@pytest.fixture(scope="module")
def golden():
    return hub.read_safetensors(FIXTURES / "deberta_golden.safetensors")


def load_fixture(name, num_labels):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key of transformers' file is known
        return DebertaClassifier.from_pretrained(FIXTURES / name, num_labels).eval()


def inputs(golden, name, batch):
    return tuple(golden[f"{name}.{batch}.{k}"] for k in ("input_ids", "attention_mask", "token_type_ids"))


# Tiny configs of our own: v3's layout, and every other option (absolute positions, token types,
# embed_proj, own position projections, unbucketed clamped distances, the conv branch).
V3_TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
               max_position_embeddings=32, relative_attention=True, pos_att_type="p2c|c2p", share_att_key=True,
               position_buckets=6, norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0)
OTHER_TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
                  max_position_embeddings=40, relative_attention=True, pos_att_type=["c2p", "p2c"],
                  share_att_key=False, position_buckets=-1, max_relative_positions=5, position_biased_input=True,
                  type_vocab_size=2, embedding_size=8, conv_kernel_size=3, hidden_act="gelu_new")


def tiny_deberta(options, num_labels=2, seed=0, dtype=torch.float32):
    """A random DebertaClassifier with weights large enough for sharp attention (0.3 N(0, 1))."""
    torch.manual_seed(seed)
    model = DebertaClassifier(DebertaV2Config(**options), num_labels).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1.0 if name.endswith("LayerNorm.weight") else 0.0) + 0.3 * torch.randn_like(p))
    return model


def padded_batch(lengths, T, vocab=50, types=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    ids = torch.randint(1, vocab, (len(lengths), T), generator=g) * mask
    tt = torch.randint(0, 2, ids.shape, generator=g) * mask if types else torch.zeros_like(ids)
    return ids, mask, tt

# -----------------------------------------------------------------------------
# against transformers


@pytest.mark.parametrize("name, num_labels, batch", GOLDEN_CASES)
def test_matches_transformers_logits_and_hidden_states(golden, name, num_labels, batch):
    model = load_fixture(name, num_labels)
    ids, mask, tt = inputs(golden, name, batch)
    with torch.no_grad():
        hidden, logits = model.encode(ids, mask, tt), model(ids, mask, tt)
    # every position, padding included (transformers masks padding queries as we do)
    torch.testing.assert_close(hidden, golden[f"{name}.{batch}.last_hidden_state"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, golden[f"{name}.{batch}.logits"], rtol=0, atol=1e-5)


def test_transformers_config_json_is_read_with_its_options():
    v3 = config_from_json(json.loads((FIXTURES / "deberta_tiny" / "config.json").read_text()))
    assert (v3.pos_att_type, v3.position_buckets, v3.share_att_key, v3.norm_rel_ebd) == (("p2c", "c2p"), 8, True,
                                                                                         "layer_norm")
    assert (v3.att_span, v3.max_relative, v3.position_biased_input) == (8, 64, False)
    other = config_from_json(json.loads((FIXTURES / "deberta_tiny_conv" / "config.json").read_text()))
    assert (other.conv_kernel_size, other.embedding_size, other.att_span, other.type_vocab_size) == (3, 16, 6, 2)

# -----------------------------------------------------------------------------
# relative positions


# bucket(d) for bucket_size 8 (m = 4), max_position 64, by hand: |d| <= 4 stays; else
# 4 + ceil(3 ln(|d|/4) / ln(63/4)), e.g. 10: 3 · 0.9163 / 2.7568 = 0.997 -> 5; 11: 1.101 -> 6;
# 26: 2.037 -> 7; 63: exactly 3 -> 7; 64: 3.017 -> 8 (past the table's last bucket); 1000: 6.008 -> 11.
HAND_TABLE_8_64 = {0: 0, 1: 1, 4: 4, 5: 5, 10: 5, 11: 6, 25: 6, 26: 7, 63: 7, 64: 8, 89: 8, 200: 9, 1000: 11}
# bucket_size 256, max_position 512 (deberta-v3-base): 128 + ceil(127 ln(|d|/128) / ln(511/128)),
# e.g. 129: 0.714 -> 129; 130: 1.422 -> 130; 200: 40.94 -> 169; 511: exactly 127 -> 255; 600: 141.7 -> 270.
HAND_TABLE_256_512 = {0: 0, 5: 5, 128: 128, 129: 129, 130: 130, 200: 169, 511: 255, 600: 270}


@pytest.mark.parametrize("bucket_size, max_position, table", [(8, 64, HAND_TABLE_8_64),
                                                              (256, 512, HAND_TABLE_256_512)])
def test_log_buckets_match_hand_computed_table(bucket_size, max_position, table):
    d = torch.tensor(list(table))
    want = torch.tensor(list(table.values()))
    assert torch.equal(log_bucket_position(d, bucket_size, max_position), want)
    assert torch.equal(log_bucket_position(-d, bucket_size, max_position), -want)  # odd in d


@settings(max_examples=30, deadline=None)
@given(mid=st.integers(2, 64), extra=st.integers(1, 500))
def test_log_buckets_are_exact_near_and_monotone_and_reach_the_last_bucket_at_max_position(mid, extra):
    bucket_size, max_position = 2 * mid, 2 * mid + extra  # log needs max_position - 1 > mid
    d = torch.arange(0, 3 * max_position)
    b = log_bucket_position(d, bucket_size, max_position)
    assert torch.equal(b[:mid + 1], d[:mid + 1])
    assert (b.diff() >= 0).all()
    assert b[max_position - 1] == bucket_size - 1


def test_relative_positions_are_query_minus_key_bucketed():
    R = relative_positions(100, 8, 64)
    assert R.shape == (100, 100) and R.dtype == torch.long
    i, j = torch.meshgrid(torch.arange(100), torch.arange(100), indexing="ij")
    assert torch.equal(R, log_bucket_position(i - j, 8, 64))
    assert R[99, 0] == 8 and R[0, 99] == -8 and R[3, 5] == -2
    assert torch.equal(relative_positions(7, -1, 64), i[:7, :7] - j[:7, :7])  # no buckets: plain distances


def test_long_golden_batch_reaches_distances_past_the_table(golden):
    """The "long" golden batch (T = 90) checks the clamp of c2p / p2c indices against transformers:
    its distances reach buckets whose index bucket + k falls past the 2k embeddings."""
    T = inputs(golden, "deberta_tiny", "long")[0].shape[1]
    k = 8  # position_buckets of deberta_tiny
    assert T - 1 > 64 and (relative_positions(T, 8, 64) + k).max() > 2 * k - 1
    assert (k - relative_positions(T, 8, 64)).max() > 2 * k - 1  # p2c: k - bucket


# -----------------------------------------------------------------------------
# padding, dtypes, adapters


@pytest.mark.parametrize("options", [V3_TINY, OTHER_TINY], ids=["v3", "other"])
@settings(max_examples=5, deadline=None)
@given(length=st.integers(1, 12), pad=st.integers(1, 9), seed=st.integers(0, 100))
def test_outputs_do_not_depend_on_padding(options, length, pad, seed):
    model = tiny_deberta(options, dtype=F64)
    ids, mask, tt = padded_batch([length], length, types=options["type_vocab_size"] > 0, seed=seed)
    longer = lambda t: torch.cat([t, torch.zeros(1, pad, dtype=t.dtype)], dim=1)
    with torch.no_grad():
        alone, alone_logits = model.encode(ids, mask, tt), model(ids, mask, tt)
        padded, padded_logits = model.encode(*map(longer, (ids, mask, tt))), model(*map(longer, (ids, mask, tt)))
    torch.testing.assert_close(padded[:, :length], alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(padded_logits, alone_logits, rtol=1e-12, atol=1e-12)


def test_absolute_positions_refuse_sequences_past_the_table():
    model = tiny_deberta(OTHER_TINY)
    with pytest.raises(ValueError, match="max_position_embeddings=40"):
        model(torch.ones(1, 41, dtype=torch.long))
    tiny_deberta(V3_TINY)(torch.ones(1, 41, dtype=torch.long))  # relative positions only: any length


SMALL = {"lora": dict(r=2), "dora": dict(r=2), "oft": dict(r=2), "bitfit": dict(), "masked_lora": dict(n=10, r=3),
         "vera": dict(r=3), "fourierft": dict(n=20), "fora": dict(n=10, r=3),
         "dfora": dict(n=10, r=3), "loca": dict(n=20), "foura": dict(r=2), "spectral_a": dict(r=2),
         "spectral_r": dict(r=2)}
TARGETS = ("query_proj", "key_proj", "value_proj")


@pytest.mark.parametrize("method", list(spectral_ft.METHODS))
def test_every_method_trains_on_deberta(method):
    assert set(SMALL) == set(spectral_ft.METHODS)
    model = tiny_deberta(V3_TINY, dtype=F64)
    names = spectral_ft.inject(model, method, targets=TARGETS, **SMALL[method])
    assert len(names) == 3 * V3_TINY["num_hidden_layers"]
    ids, mask, tt = padded_batch([9, 5], 9)
    logits = model(ids, mask)  # (2, 2)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for name, adapter in spectral_ft.adapters(model):
        grads = [p.grad for p in adapter.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), f"{name}: no gradient reaches the adapter"
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("method", [m for m in spectral_ft.METHODS if m != "foura"] + ["foura_ungated"])
def test_merged_adapters_give_the_same_deberta_outputs(method):
    """The relative embeddings also pass through query_proj / key_proj (share_att_key): the merged
    layer must reproduce that path too."""
    kwargs = dict(SMALL["foura"], gate=False) if method == "foura_ungated" else SMALL[method]
    model = tiny_deberta(V3_TINY, dtype=F64)
    spectral_ft.inject(model, method.removesuffix("_ungated"), targets=TARGETS, **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not name.endswith((".locations", ".indices")):
                p.add_(0.1 * torch.randn_like(p))
        ids, mask, _ = padded_batch([9, 5], 9)
        before = model(ids, mask)
        spectral_ft.merge(model)
        torch.testing.assert_close(model(ids, mask), before, rtol=1e-10, atol=1e-10)


class MaskSpy(nn.Linear):
    """A linear layer that reads FouRA's shared `token_mask` (a spectral_ft.TokenMask), recording the mask of
    each call."""

    def forward(self, x):
        self.seen = getattr(self, "seen", []) + [(tuple(x.shape), self.token_mask.mask)]
        return super().forward(x)


def test_token_mask_reaches_adapters_but_not_the_relative_embedding_projection():
    model = tiny_deberta(V3_TINY)
    attention = model.encoder.layer[0].attention.self
    spy = MaskSpy(16, 16)
    spy.load_state_dict(attention.key_proj.state_dict())
    spy.token_mask = model.token_mask = spectral_ft.TokenMask()  # as inject(model, "foura") shares it
    attention.key_proj = spy
    ids, mask, _ = padded_batch([7, 4], 7)
    model(ids, mask)
    (tokens_shape, tokens_mask), (rel_shape, rel_mask) = spy.seen  # tokens, then the 2k relative embeddings
    assert tokens_shape == (2, 7, 16) and tokens_mask is mask
    assert rel_shape == (2 * V3_TINY["position_buckets"], 16) and rel_mask is None
    assert model.token_mask.mask is mask  # restored after the relative-embedding call


def test_bfloat16_autocast_runs_and_stays_close():
    model = tiny_deberta(V3_TINY)
    spectral_ft.inject(model, "lora", targets=TARGETS, r=2)
    ids, mask, _ = padded_batch([9, 5], 9)
    with torch.no_grad():
        full = model(ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(ids, mask)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, rtol=0.1, atol=0.1)

# -----------------------------------------------------------------------------
# loading and saving


@pytest.mark.parametrize("options", [V3_TINY, OTHER_TINY], ids=["v3", "other"])
def test_save_then_load_round_trips_in_transformers_layout(options, tmp_path):
    model = tiny_deberta(options, num_labels=3)
    save_pretrained(model, tmp_path)
    keys = hub.read_safetensors(tmp_path / "model.safetensors").keys()
    assert all(k.startswith(("deberta.", "pooler.", "classifier.")) for k in keys)
    assert "deberta.encoder.layer.1.attention.self.query_proj.weight" in keys and "pooler.dense.weight" in keys
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["DebertaV2ForSequenceClassification"] and config["num_labels"] == 3
    assert config_from_json(config) == model.config
    loaded = DebertaClassifier.from_pretrained(tmp_path, 3).eval()
    ids, mask, tt = padded_batch([8, 3], 8, types=options["type_vocab_size"] > 0)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask, tt), model(ids, mask, tt))


def test_pytorch_model_bin_loads_like_safetensors(tmp_path):
    model = tiny_deberta(V3_TINY)
    save_pretrained(model, tmp_path)
    torch.save(hub.read_safetensors(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    loaded = DebertaClassifier.from_pretrained(tmp_path, 2).eval()
    ids, mask, _ = padded_batch([6, 6], 6)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), model(ids, mask))


def test_pretraining_checkpoint_loads_backbone_and_leaves_a_fresh_head(golden):
    """The hub's deberta-v3-base file: "deberta." backbone, an unused absolute position table and the
    generator / discriminator heads, no pooler or classifier. No warning, head left fresh."""
    source = load_fixture("deberta_tiny", 2)
    state = {k: v for k, v in hub.read_safetensors(FIXTURES / "deberta_tiny" / "model.safetensors").items()
             if not k.startswith(("pooler.", "classifier."))}
    state.update({"deberta.embeddings.position_embeddings.weight": torch.zeros(64, 32),
                  "lm_predictions.lm_head.dense.weight": torch.zeros(32, 32), "lm_predictions.lm_head.bias":
                  torch.zeros(100), "mask_predictions.classifier.weight": torch.zeros(1, 32)})
    model = tiny_deberta(V3_TINY | dict(vocab_size=100, hidden_size=32, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=64, position_buckets=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        left = load_hf_state_dict(model, state)
    assert sorted(left) == sorted(model.head_parameter_names()) == ["classifier.bias", "classifier.weight",
                                                                    "pooler.dense.bias", "pooler.dense.weight"]
    ids, mask, tt = inputs(golden, "deberta_tiny", "short")
    with torch.no_grad():
        assert torch.equal(model.encode(ids, mask), source.encode(ids, mask))

class FakeHub(http.server.BaseHTTPRequestHandler):
    """/{repo}/resolve/main/{file} from `root`, with the headers hub.hf_hub_download reads."""
    root, commit = None, "c" * 40

    def do_GET(self):
        path = self.root / self.path.rsplit("/", 1)[-1]
        data = path.read_bytes() if "/resolve/main/" in self.path and path.is_file() else None
        self.send_response(200 if data is not None else 404)
        self.send_header("X-Repo-Commit", self.commit)
        if data is None:
            self.send_header("X-Error-Code", "EntryNotFound")
        else:
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args):
        pass


def test_hub_download_fetches_the_sentencepiece_model_beside_the_weights(tmp_path, golden):
    served = tmp_path / "served"
    served.mkdir()
    for name in ("config.json", "model.safetensors"):
        (served / name).write_bytes((FIXTURES / "deberta_tiny" / name).read_bytes())
    (served / "spm.model").write_bytes(b"a sentencepiece model")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (FakeHub,), {"root": served}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        folder = _download("org/tiny-deberta", f"http://127.0.0.1:{server.server_port}", tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert (folder / "spm.model").read_bytes() == b"a sentencepiece model"
    ids, mask, _ = inputs(golden, "deberta_tiny", "short")
    with torch.no_grad():
        logits = DebertaClassifier.from_pretrained(folder, 2).eval()(ids, mask)
    torch.testing.assert_close(logits, golden["deberta_tiny.short.logits"], rtol=0, atol=1e-5)


# -----------------------------------------------------------------------------
# configs, and what they refuse


@pytest.mark.parametrize("change, words", [
    (dict(pos_att_type="p2p"), ["pos_att_type", "c2p, p2c"]),
    (dict(norm_rel_ebd="batch_norm"), ["norm_rel_ebd", "layer_norm"]),
    (dict(conv_kernel_size=2), ["conv_kernel_size=2", "odd"]),
    (dict(pooler_hidden_size=8), ["pooler_hidden_size=8", "hidden_size=16"]),
    (dict(attention_head_size=4), ["attention_head_size=4"]),
    (dict(hidden_act="swish"), ["hidden_act='swish'", "gelu"]),
    (dict(model_type="deberta"), ["DeBERTa v1", "deberta-v2"])])
def test_unsupported_configs_raise_naming_the_key(change, words):
    d = {**V3_TINY, "model_type": "deberta-v2", **change}
    with pytest.raises(ValueError) as e:
        config_from_json(d)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_deberta_v3_base_has_transformers_parameter_count():
    config = config_from_json(KNOWN_CONFIGS["microsoft/deberta-v3-base"])
    assert (config.att_span, config.max_relative, config.layer_norm_eps) == (256, 512, 1e-7)
    with torch.device("meta"):
        model = DebertaClassifier(config, num_labels=2)
    # transformers' DebertaV2ForSequenceClassification of this config: 184,423,682 parameters
    assert sum(p.numel() for p in model.parameters()) == 184_423_682
    assert sum(p.numel() for n, p in model.named_parameters() if n in model.head_parameter_names()) == 592_130


@pytest.mark.parametrize("targets, adapter", [("query_proj,key_proj,value_proj", 1_327_104),
                                              ("query_proj,value_proj", 884_736)])
def test_count_params_for_deberta_v3_base_offline(targets, adapter, monkeypatch):
    """Spectral Adapter's GLUE rows: rank 24 on q, k, v (their glue_tune.py) is 0.72% of DeBERTaV3-base;
    LoRA's count equals spectral_a's, r (in + out) per layer, and is checked here as cheaper (no SVD)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counts = train.main(["--count-params", "--model", "microsoft/deberta-v3-base", "--method", "lora",
                         "--r", "24", "--targets", targets])["trainable_parameters"]
    assert counts == {"adapter": adapter, "head": 592_130, "model": 184_423_682}
    assert adapter == len(targets.split(",")) * 12 * 24 * (768 + 768)
    if len(targets.split(",")) == 3:
        assert round(100 * adapter / 184_423_682, 2) == 0.72


def test_train_defaults_to_deberta_query_and_value_projections_of_a_local_folder():
    result = train.main(["--count-params", "--model", str(FIXTURES / "deberta_tiny"), "--method", "lora", "--r", "2"])
    assert result["config"]["targets"] == ["query_proj", "value_proj"]
    assert result["trainable_parameters"]["adapter"] == 2 * 2 * 2 * (32 + 32)  # 2 layers, q and v, r (in + out)


@pytest.mark.parametrize("key, value, expected", [
    ("hidden_size", "big", "hidden_size='big' is not an integer"),
    ("hidden_size", 10**9, "more than the 10,000,000,000 this encoder allows"),
    ("num_attention_heads", 0, "num_attention_heads=0 is out of range"),
    ("num_hidden_layers", -3, "num_hidden_layers=-3 is out of range"),
    ("layer_norm_eps", "tiny", "layer_norm_eps='tiny' is not a number"),
])
def test_a_bad_deberta_config_is_one_error_naming_the_field(tmp_path, key, value, expected):
    """A DeBERTa config.json is checked like a BERT one: types, ranges and total size, before any allocation."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(KNOWN_CONFIGS["microsoft/deberta-v3-base"], **{key: value})))
    with pytest.raises(ValueError, match=re.escape(expected)) as error:
        read_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("method", ["spectral_a", "foura"])
def test_train_py_fine_tunes_a_deberta_folder_with_its_sentencepiece_model_end_to_end(tmp_path, method):
    """A hub-layout folder (config.json, model.safetensors, spm.model): train.py reads it with our
    SentencePiece tokenizer, injects on query_proj/value_proj, trains, evaluates and writes its results."""
    from data import RTE_SAMPLE_DIR
    config = config_from_json(dict(KNOWN_CONFIGS["microsoft/deberta-v3-base"], vocab_size=3008, hidden_size=32,
                                   num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                   pooler_hidden_size=32, position_buckets=8, max_position_embeddings=64))
    torch.manual_seed(0)
    folder = tmp_path / "deberta"
    save_pretrained(DebertaClassifier(config, num_labels=2), folder)
    (folder / "spm.model").write_bytes((FIXTURES / "spm.model").read_bytes())
    results = train.main(["--method", method, "--model", str(folder), "--data-dir", str(RTE_SAMPLE_DIR),
                          "--max-steps", "3", "--batch-size", "8", "--max-length", "48", "--device", "cpu",
                          "--out", str(tmp_path / "run")])
    assert results["config"]["targets"] == ["query_proj", "value_proj"]
    assert results["trainable_parameters"]["adapter"] > 0 and results["final"]["step"] == 3
    assert (tmp_path / "run" / "adapter.safetensors").is_file()
