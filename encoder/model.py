"""
A minimal BERT / RoBERTa encoder with a sequence-classification head, in one file; and
DeBERTa-v2/v3 (model type "deberta-v2", DebertaClassifier) beside it, further down.

The module tree mirrors Hugging Face's names exactly (embeddings.word_embeddings,
encoder.layer.{i}.attention.self.query, ..., classifier), so that
  1) a Hugging Face checkpoint loads by stripping the "roberta."/"bert." prefix, and
  2) PEFT adapters that replace nn.Linear modules by name suffix ("query", "value")
     find the same modules here as in transformers.
Every projection is a plain nn.Linear; attention is F.scaled_dot_product_attention.

    model, tokenizer = load_pretrained("roberta-base", num_labels=2)
    ids, types = tokenizer.encode("A man is sleeping.", "Nobody sleeps.")
    logits = model(torch.tensor([ids]), torch.ones(1, len(ids)), torch.tensor([types]))
"""
import json
import math
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from encoder.hub import (EntryNotFoundError, atomic_write, hf_hub_download, load_torch_checkpoint,
                 read_safetensors, write_safetensors)
from encoder.tokenization import WordPieceTokenizer, load_tokenizer

MODEL_TYPES = ("bert", "roberta")
ACTIVATIONS = {  # HF names: "gelu" is the exact erf form, "gelu_new" the tanh approximation
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}

# -----------------------------------------------------------------------------
# config


@dataclass
class ModelConfig:
    model_type: str = "bert"  # "bert" | "roberta"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512  # RoBERTa counts its pad_token_id + 1 offset in here
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob
    initializer_range: float = 0.02  # std of the normal init of fresh weights (the head)

    def __post_init__(self):
        check_fields(self)
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} is not a token id: must be >= 0 and < "
                             f"vocab_size={self.vocab_size}")
        if self.num_parameters() > MAX_PARAMETERS:
            raise ValueError(f"the model would have {self.num_parameters():,} parameters "
                             f"({self.num_parameters() * 4 / 2**30:,.0f} GiB in float32), more than the "
                             f"{MAX_PARAMETERS:,} this encoder allows (hidden_size={self.hidden_size}, "
                             f"num_hidden_layers={self.num_hidden_layers}, vocab_size={self.vocab_size}, "
                             f"intermediate_size={self.intermediate_size})")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r} is not supported; "
                             f"allowed: {', '.join(MODEL_TYPES)}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; "
                             f"allowed: {', '.join(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")

    def num_parameters(self):
        """The encoder's parameter count (embeddings, layers, pooler), from the sizes alone."""
        H, I, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * H + 2 * H
        layer = 4 * (H * H + H) + 2 * H * I + I + H + 4 * H
        return embeddings + L * layer + H * H + H

    @classmethod
    def from_json(cls, d):
        """A ModelConfig from the dict of a Hugging Face config.json."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object {{\"hidden_size\": ..., ...}}, got a {type(d).__name__}")
        model_type = d.get("model_type")
        if model_type is None:  # old files: only "architectures", e.g. ["RobertaForMaskedLM"]
            archs = [a.lower() for a in d.get("architectures") or []]
            model_type = next((t for a in archs for t in ("roberta", "bert") if a.startswith(t)), None)
        if model_type not in MODEL_TYPES:
            raise ValueError(f"config.json describes model type {model_type!r} (from 'model_type' or "
                             f"'architectures' {d.get('architectures')}); supported: {', '.join(MODEL_TYPES)}")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={d['position_embedding_type']!r} is not "
                             f"supported; allowed: 'absolute'")
        # keys absent from the file take transformers' defaults (RobertaConfig differs in two)
        defaults = {"pad_token_id": 1, "vocab_size": 50265} if model_type == "roberta" else {}
        kwargs = {f.name: d.get(f.name, defaults.get(f.name, f.default))
                  for f in fields(cls) if f.name != "model_type"}
        return cls(model_type=model_type, **kwargs)

    def to_json(self):
        return dict(asdict(self), position_embedding_type="absolute")


# Each field's allowed JSON types and [low, high) range. A float field takes integers too (JSON has 1e-05
# and 0 alike); the sizes are bounded together by MAX_PARAMETERS (10 billion: 40 GiB in float32).
FIELD_TYPES = dict(model_type=(str,), vocab_size=(int,), hidden_size=(int,), num_hidden_layers=(int,),
                   num_attention_heads=(int,), intermediate_size=(int,), hidden_act=(str,),
                   hidden_dropout_prob=(float, int), attention_probs_dropout_prob=(float, int),
                   max_position_embeddings=(int,), type_vocab_size=(int,), layer_norm_eps=(float, int),
                   pad_token_id=(int,), classifier_dropout=(float, int, None), initializer_range=(float, int))
FIELD_RANGES = dict(vocab_size=(1, None), hidden_size=(1, None), num_hidden_layers=(1, None),
                    num_attention_heads=(1, None), intermediate_size=(1, None), hidden_dropout_prob=(0, 1),
                    attention_probs_dropout_prob=(0, 1), max_position_embeddings=(1, None),
                    type_vocab_size=(1, None), layer_norm_eps=(0, None), classifier_dropout=(0, 1),
                    initializer_range=(0, None))
MAX_PARAMETERS = 10**10


def check_fields(config, ranges=None):
    """Each field of a config dataclass against FIELD_TYPES and FIELD_RANGES (or `ranges`): a
    config.json may hold anything, so each value's type and range is checked before any size is used."""
    for f in fields(config):
        value, kinds = getattr(config, f.name), FIELD_TYPES.get(f.name, (object,))
        ok = kinds == (object,) or any(value is None if k is None else isinstance(value, k) and not isinstance(value, bool)
                                       for k in kinds)
        if not ok:
            allowed = " or ".join({str: "a string", int: "an integer", float: "a number", None: "null"}[k]
                                  for k in kinds if k is not int or float not in kinds)
            raise ValueError(f"{f.name}={value!r} is not {allowed}")
        low, high = {**FIELD_RANGES, **(ranges or {})}.get(f.name, (None, None))
        if value is not None and ((low is not None and value < low) or (high is not None and value >= high)):
            bound = " and ".join(b for b in (low is not None and f">= {low}", high is not None and f"< {high}") if b)
            raise ValueError(f"{f.name}={value!r} is out of range: must be {bound}")


def read_config(path):
    """The config (ModelConfig or DebertaV2Config) of a config.json file; any problem is a ValueError naming the
    file, a missing file a FileNotFoundError naming its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} holds no {path.name}: a checkpoint folder needs config.json, "
                                f"model.safetensors (or pytorch_model.bin) and its tokenizer's files")
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    try:
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object {{\"hidden_size\": ..., ...}}, got a {type(d).__name__}")
        return config_from_json(d)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def tiny_config(model_type, vocab_size):
    """A tiny model (hidden 32, 2 layers, 2 heads) for tests and the offline demo."""
    roberta = model_type == "roberta"
    return ModelConfig(model_type=model_type, vocab_size=vocab_size, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       max_position_embeddings=128 + (2 if roberta else 0),
                       type_vocab_size=1 if roberta else 2, layer_norm_eps=1e-5 if roberta else 1e-12,
                       pad_token_id=1 if roberta else 0)


TINY_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # a tiny BERT's vocabulary starts with these


def build_tiny_model(texts, directory, num_labels):
    """A tiny random BERT (tiny_config) whose WordPiece vocabulary is the words of `texts`, saved in
    the Hugging Face layout so that it loads like any checkpoint (train.py --model tiny)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "vocab.txt", "w") as f:
        f.write("\n".join(TINY_SPECIAL_TOKENS) + "\n")
    splitter = WordPieceTokenizer(directory / "vocab.txt")  # specials only: BERT's normalizer and splitter
    words = sorted({w for t in texts for w in splitter.split_words(splitter.normalize(t))} - set(TINY_SPECIAL_TOKENS))
    with atomic_write(directory / "vocab.txt", "w") as f:
        f.write("\n".join(TINY_SPECIAL_TOKENS + words) + "\n")
    config = tiny_config("bert", len(TINY_SPECIAL_TOKENS) + len(words))
    save_pretrained(SequenceClassifier(config, num_labels), directory)
    return directory


# The real config.json files of the checkpoints we fine-tune, so that parameter counts
# can be computed without downloading anything.
_ROBERTA_BASE = {
    "architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "model_type": "roberta",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "type_vocab_size": 1, "vocab_size": 50265,
}
_ROBERTA_LARGE = dict(_ROBERTA_BASE, hidden_size=1024, intermediate_size=4096,
                      num_attention_heads=16, num_hidden_layers=24)
_BERT_BASE_UNCASED = {
    "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
    "position_embedding_type": "absolute", "transformers_version": "4.6.0.dev0",
    "type_vocab_size": 2, "use_cache": True, "vocab_size": 30522,
}
_DEBERTA_V3_BASE = {  # pos_att_type is written "p2c|c2p" in the file; pooler_* are transformers' defaults
    "model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 512, "relative_attention": True, "position_buckets": 256,
    "norm_rel_ebd": "layer_norm", "share_att_key": True, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7,
    "max_relative_positions": -1, "position_biased_input": False, "num_attention_heads": 12,
    "num_hidden_layers": 12, "type_vocab_size": 0, "vocab_size": 128100,
    "pooler_hidden_size": 768, "pooler_hidden_act": "gelu",
}
KNOWN_CONFIGS = {
    "roberta-base": _ROBERTA_BASE, "FacebookAI/roberta-base": _ROBERTA_BASE,
    "roberta-large": _ROBERTA_LARGE, "FacebookAI/roberta-large": _ROBERTA_LARGE,
    "bert-base-uncased": _BERT_BASE_UNCASED, "google-bert/bert-base-uncased": _BERT_BASE_UNCASED,
    "microsoft/deberta-v3-base": _DEBERTA_V3_BASE,
}

# -----------------------------------------------------------------------------
# the encoder: embeddings, then num_hidden_layers post-LayerNorm transformer layers


class Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        H, pad = config.hidden_size, config.pad_token_id
        self.roberta = config.model_type == "roberta"
        self.pad_token_id = pad
        # RoBERTa positions start at pad + 1; pads sit at position pad (HF padding_idx)
        self.position_offset = pad + 1 if self.roberta else 0
        self.max_positions = config.max_position_embeddings
        self.word_embeddings = nn.Embedding(config.vocab_size, H, padding_idx=pad)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H,
                                                padding_idx=pad if self.roberta else None)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        B, T = input_ids.shape
        if T + self.position_offset > self.max_positions:
            raise ValueError(f"sequence length {T} does not fit max_position_embeddings="
                             f"{self.max_positions} (positions start at {self.position_offset}, "
                             f"so at most {self.max_positions - self.position_offset} tokens)")
        if self.roberta:  # HF create_position_ids_from_input_ids
            real = input_ids.ne(self.pad_token_id).long()  # (B, T)
            position_ids = torch.cumsum(real, dim=1) * real + self.pad_token_id  # (B, T)
        else:
            position_ids = torch.arange(T, device=input_ids.device)[None, :]  # (1, T)
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))  # (B, T, H)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        H = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x, mask):
        B, T, H = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, H // self.n_head).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))  # each (B, nh, T, hs)
        k, v = k.to(q.dtype), v.to(q.dtype)  # an adapter may return float32 under autocast
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)


class SelfOutput(nn.Module):  # also serves as "output": dense, dropout, residual, LayerNorm
    def __init__(self, config, d_in):
        super().__init__()
        self.dense = nn.Linear(d_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config, config.hidden_size)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))  # (B, T, intermediate_size)


class Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = SelfOutput(config, config.intermediate_size)

    def forward(self, x, mask):
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x

# -----------------------------------------------------------------------------
# heads: BERT pools [CLS] with dense+tanh; RoBERTa's head does the same inside "classifier"


class Pooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))  # (B, H)


class RobertaClassificationHead(nn.Module):
    def __init__(self, config, num_labels, p):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(p)
        self.out_proj = nn.Linear(config.hidden_size, num_labels)

    def forward(self, h):
        x = torch.tanh(self.dense(self.dropout(h[:, 0])))  # (B, H), the <s> token
        return self.out_proj(self.dropout(x))  # (B, num_labels)


class SequenceClassifier(nn.Module):
    """HF's {Bert,Roberta}ForSequenceClassification without the prefix: our state dict keys
    are theirs with "bert."/"roberta." stripped. num_labels=1 means regression (STS-B)."""

    def __init__(self, config, num_labels):
        super().__init__()
        if not (isinstance(num_labels, int) and num_labels >= 1):
            raise ValueError(f"num_labels must be an int >= 1 (1 = regression), got {num_labels!r}")
        self.config, self.num_labels = config, num_labels
        p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        if config.model_type == "bert":
            self.pooler = Pooler(config)
            self.dropout = nn.Dropout(p)
            self.classifier = nn.Linear(config.hidden_size, num_labels)
        else:
            self.classifier = RobertaClassificationHead(config, num_labels, p)
        self.apply(self._init_weights)

    def _init_weights(self, module):  # as transformers does: N(0, 0.02), zero bias, LN = identity
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def head_modules(self):
        """Top-level submodules that are the task head (trained from scratch, never adapted)."""
        return ("pooler", "classifier") if self.config.model_type == "bert" else ("classifier",)

    def head_parameter_names(self):
        return [n for n, _ in self.named_parameters() if n.split(".")[0] in self.head_modules]

    def encode(self, input_ids, attention_mask=None, token_type_ids=None):
        """Last hidden states (B, T, H). attention_mask: 1 = token, 0 = padding."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids {tuple(input_ids.shape)}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        if hasattr(self, "token_mask"):  # spectral_ft.TokenMask, shared by FouRA layers: their gate skips padding
            self.token_mask.mask = attention_mask  # (B, T) or None: every token real
        return self.encoder(self.embeddings(input_ids, token_type_ids), mask)  # (B, T, H)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        if self.config.model_type == "bert":
            return self.classifier(self.dropout(self.pooler(h)))  # (B, num_labels)
        return self.classifier(h)  # (B, num_labels)

    @classmethod
    def from_pretrained(cls, directory, num_labels):
        """The model of a local Hugging Face checkpoint directory (no tokenizer)."""
        model = cls(read_config(Path(directory) / "config.json"), num_labels)
        path, state = read_pretrained_weights(directory)
        load_hf_state_dict(model, state, source=path)
        return model


# -----------------------------------------------------------------------------
# DeBERTa-v2 / v3 (Hugging Face model type "deberta-v2"): BERT's post-LayerNorm layers with
# disentangled attention over log-bucketed relative positions, and a ContextPooler head.
#   He et al. 2021, "DeBERTa: Decoding-enhanced BERT with Disentangled Attention" (ICLR), §3.1;
#   He et al. 2023, "DeBERTaV3" (ICLR): the v3 checkpoints use this same encoder.

DEBERTA_POS_ATT_TYPES = ("c2p", "p2c")  # content->position, position->content
CONV_ACTIVATIONS = dict(ACTIVATIONS, tanh=torch.tanh)


@dataclass
class DebertaV2Config:
    """A "deberta-v2" config.json. Fields and defaults are transformers' DebertaV2Config,
    including the keys its model reads with a default when absent (position_buckets, ...)."""
    model_type: str = "deberta-v2"
    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 0  # 0: no token-type embedding (token_type_ids are ignored)
    layer_norm_eps: float = 1e-7
    pad_token_id: int = 0
    initializer_range: float = 0.02
    position_biased_input: bool = True  # add absolute position embeddings (v3: False)
    relative_attention: bool = False  # add the pos_att_type terms (v3: True)
    pos_att_type: tuple = ()  # a subset of DEBERTA_POS_ATT_TYPES (v3: both)
    max_relative_positions: int = -1  # < 1: max_position_embeddings
    position_buckets: int = -1  # > 0: relative distances log-bucketed, 2 * position_buckets embeddings
    share_att_key: bool = False  # relative embeddings projected by query_proj / key_proj (v3: True)
    norm_rel_ebd: str = "none"  # "layer_norm": a LayerNorm on the relative embeddings (v3)
    embedding_size: int | None = None  # None: hidden_size; else embed_proj maps it to hidden_size
    conv_kernel_size: int = 0  # > 0: a Conv1d branch after the first layer (DeBERTa-v2 xlarge/xxlarge)
    conv_groups: int = 1
    conv_act: str = "tanh"
    pooler_hidden_size: int | None = None  # None: hidden_size (the only size the head accepts)
    pooler_hidden_act: str = "gelu"
    pooler_dropout: float = 0.0
    cls_dropout: float | None = None  # None: hidden_dropout_prob

    def __post_init__(self):
        check_fields(self, ranges=dict(type_vocab_size=(0, None), position_buckets=(-1, None)))
        H, L, V = self.hidden_size, self.num_hidden_layers, self.vocab_size
        size = V * H + L * (4 * H * H + 2 * H * self.intermediate_size)  # embeddings and layers, roughly
        if size > MAX_PARAMETERS:
            raise ValueError(f"the model would have about {size:,} parameters ({size * 4 / 2**30:,.0f} GiB in "
                             f"float32), more than the {MAX_PARAMETERS:,} this encoder allows (hidden_size={H}, "
                             f"num_hidden_layers={L}, vocab_size={V})")
        if self.model_type != "deberta-v2":
            raise ValueError(f"model_type={self.model_type!r}: DebertaV2Config is for 'deberta-v2' only")
        if isinstance(self.pos_att_type, str):  # config.json may write "p2c|c2p"
            self.pos_att_type = self.pos_att_type.lower().split("|")
        self.pos_att_type = tuple(t.strip() for t in self.pos_att_type or ())
        bad = [t for t in self.pos_att_type if t not in DEBERTA_POS_ATT_TYPES]
        if bad:
            raise ValueError(f"pos_att_type={list(self.pos_att_type)} has {bad}; allowed: "
                             f"{', '.join(DEBERTA_POS_ATT_TYPES)}")
        self.norm_rel_ebd = "|".join(t.strip() for t in self.norm_rel_ebd.lower().split("|"))
        if not set(self.norm_rel_ebd.split("|")) <= {"none", "layer_norm"}:
            raise ValueError(f"norm_rel_ebd={self.norm_rel_ebd!r} is not supported; allowed: 'none', 'layer_norm'")
        for key, table in (("hidden_act", ACTIVATIONS), ("pooler_hidden_act", ACTIVATIONS),
                           ("conv_act", CONV_ACTIVATIONS)):
            if getattr(self, key) not in table:
                raise ValueError(f"{key}={getattr(self, key)!r} is not supported; allowed: {', '.join(table)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        self.embedding_size = self.embedding_size or self.hidden_size
        self.pooler_hidden_size = self.pooler_hidden_size or self.hidden_size
        if self.pooler_hidden_size != self.hidden_size:  # transformers' classifier takes hidden_size inputs
            raise ValueError(f"pooler_hidden_size={self.pooler_hidden_size} must equal "
                             f"hidden_size={self.hidden_size}")
        if self.conv_kernel_size > 0 and self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size={self.conv_kernel_size} must be odd (the convolution keeps "
                             f"the sequence length with (k - 1) / 2 zeros on each side)")

    @property
    def max_relative(self):
        """The largest relative distance: max_relative_positions, or max_position_embeddings if < 1."""
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    @property
    def att_span(self):
        """k: relative positions index 2k embeddings, R + k clamped to [0, 2k)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative

    @classmethod
    def from_json(cls, d):
        """A DebertaV2Config from the dict of a Hugging Face config.json."""
        head = d.get("attention_head_size")
        if head is not None and head * d.get("num_attention_heads", 24) != d.get("hidden_size", 1536):
            raise ValueError(f"attention_head_size={head} is not supported: heads must split hidden_size")
        kwargs = {f.name: d.get(f.name, f.default) for f in fields(cls) if f.name != "model_type"}
        return cls(**kwargs)

    def to_json(self):
        return dict(asdict(self), pos_att_type=list(self.pos_att_type))


def config_from_json(d):
    """The config of a Hugging Face config.json dict: ModelConfig (BERT, RoBERTa) or DebertaV2Config."""
    model_type = d.get("model_type")
    archs = [a.lower() for a in d.get("architectures") or []]
    if model_type == "deberta-v2" or (model_type is None and any(a.startswith("debertav2") for a in archs)):
        return DebertaV2Config.from_json(d)
    if model_type == "deberta" or (model_type is None and any(a.startswith("deberta") for a in archs)):
        raise ValueError("config.json describes DeBERTa v1 (model type 'deberta'), which is not supported; "
                         f"supported: {', '.join(MODEL_TYPES)}, deberta-v2 (DeBERTa-v2 and -v3)")
    return ModelConfig.from_json(d)


def log_bucket_position(relative_pos, bucket_size, max_position):
    """DeBERTa's log buckets (transformers' make_log_bucket_position): with m = bucket_size // 2,
    distances |d| <= m stay as they are, farther ones become
        sign(d) · (m + ceil((m - 1) · log(|d| / m) / log((max_position - 1) / m)))
    in float32 as there, so that |d| = max_position - 1 lands on bucket_size - 1. Beyond
    max_position the bucket grows past it; the attention clamps indices to its table."""
    mid = bucket_size // 2
    distance = relative_pos.abs()
    far = distance.clamp(min=mid)  # (the near ones' log is never used)
    log_pos = torch.ceil(torch.log(far / mid) / torch.log(torch.tensor((max_position - 1) / mid))
                         * (mid - 1)) + mid
    return torch.where(distance <= mid, relative_pos, log_pos.long() * relative_pos.sign())


def relative_positions(T, bucket_size, max_position, device=None):
    """R (T, T) long, R[i, j] = bucket(i - j): query i's position relative to key j."""
    pos = torch.arange(T, device=device)
    rel = pos[:, None] - pos[None, :]  # (T, T)
    return log_bucket_position(rel, bucket_size, max_position) if bucket_size > 0 and max_position > 0 else rel


class DebertaEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        E, H = config.embedding_size, config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, E)
                                    if config.position_biased_input else None)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E) if config.type_vocab_size > 0 else None
        self.embed_proj = nn.Linear(E, H, bias=False) if E != H else None
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # What train.py reads to bound --max-length. Relative positions take any length (far
        # distances share buckets); absolute ones (position_biased_input) raise beyond it.
        self.max_positions, self.position_offset = config.max_position_embeddings, 0

    def forward(self, input_ids, token_type_ids, mask=None):
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids)  # (B, T, E)
        if self.position_embeddings is not None:
            if T > self.max_positions:
                raise ValueError(f"sequence length {T} does not fit max_position_embeddings={self.max_positions}")
            x = x + self.position_embeddings(torch.arange(T, device=input_ids.device))
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        if self.embed_proj is not None:
            x = self.embed_proj(x)  # (B, T, H)
        x = self.LayerNorm(x)
        if mask is not None:
            x = x * mask[:, :, None].to(x.dtype)  # padding rows are zero
        return self.dropout(x)


def _project_positions(proj, rel):
    """proj(rel) for the relative embeddings rel (2k, H). They are no tokens of the batch, so a FouRA
    adapter's padding mask (its `token_mask.mask`, which the classifier sets per batch) is lifted meanwhile."""
    shared = getattr(proj, "token_mask", None)  # spectral_ft.TokenMask, one for the whole model
    if shared is None or shared.mask is None:
        return proj(rel)
    mask, shared.mask = shared.mask, None
    try:
        return proj(rel)
    finally:
        shared.mask = mask


class DisentangledSelfAttention(nn.Module):
    """DeBERTa's attention (He et al. 2021, eq. 4), with relative distances δ = bucket(i - j):
        A[i, j] = (q_i·k_j + q_i·k^r_δ(i,j) + k_j·q^r_δ(j,i)) / √(hs · (1 + len(pos_att_type)))
    c2p is the second term, p2c the third; k^r, q^r project the relative embeddings (2k, H)
    with key_proj, query_proj (share_att_key) or their own pos_key_proj, pos_query_proj. The
    index of δ in the table is δ + k clamped to [0, 2k). As transformers, the scale counts
    pos_att_type even without relative_attention, and padding queries are masked too (their
    rows come out uniform; they never reach a real token)."""

    def __init__(self, config):
        super().__init__()
        H = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query_proj, self.key_proj, self.value_proj = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.pos_att_type, self.relative_attention = config.pos_att_type, config.relative_attention
        self.scale = math.sqrt(H // self.n_head * (1 + len(config.pos_att_type)))
        self.share_att_key = config.share_att_key
        if self.relative_attention and not self.share_att_key:
            if "c2p" in self.pos_att_type:
                self.pos_key_proj = nn.Linear(H, H)
            if "p2c" in self.pos_att_type:
                self.pos_query_proj = nn.Linear(H, H)
        self.pos_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def heads(self, t):  # (..., L, H) -> (..., nh, L, hs)
        return t.view(*t.shape[:-1], self.n_head, -1).transpose(-3, -2)

    def forward(self, x, mask, rel_pos, rel_emb):
        B, T, H = x.shape
        q = self.heads(self.query_proj(x))  # (B, nh, T, hs)
        k, v = (self.heads(proj(x)).to(q.dtype) for proj in (self.key_proj, self.value_proj))  # (B, nh, T, hs)
        scores = q @ k.transpose(-1, -2) / self.scale  # (B, nh, T, T) content->content
        if self.relative_attention:
            rel = self.pos_dropout(rel_emb)  # (2k, H)
            span = rel.shape[0] // 2
            if "c2p" in self.pos_att_type:
                proj = self.key_proj if self.share_att_key else self.pos_key_proj
                pos_k = self.heads(_project_positions(proj, rel)).to(q.dtype)  # (nh, 2k, hs)
                c2p = q @ pos_k.transpose(-1, -2)  # (B, nh, T, 2k): query i against every distance
                index = (rel_pos + span).clamp(0, 2 * span - 1)  # (T, T)
                scores = scores + c2p.gather(-1, index.expand(B, self.n_head, T, T)) / self.scale
            if "p2c" in self.pos_att_type:
                proj = self.query_proj if self.share_att_key else self.pos_query_proj
                pos_q = self.heads(_project_positions(proj, rel)).to(q.dtype)  # (nh, 2k, hs)
                p2c = k @ pos_q.transpose(-1, -2)  # (B, nh, T, 2k): key j against every distance
                index = (span - rel_pos).clamp(0, 2 * span - 1)  # (T, T): row j, column i -> δ(j, i)
                scores = scores + p2c.gather(-1, index.expand(B, self.n_head, T, T)).transpose(-1, -2) / self.scale
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = self.dropout(torch.softmax(scores, dim=-1))  # (B, nh, T, T)
        return (probs @ v).transpose(1, 2).reshape(B, T, H)  # (B, T, H)


class DebertaAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = DisentangledSelfAttention(config)
        self.output = SelfOutput(config, config.hidden_size)

    def forward(self, x, mask, rel_pos, rel_emb):
        return self.output(self.self(x, mask, rel_pos, rel_emb), x)


class DebertaLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = DebertaAttention(config)
        self.intermediate = Intermediate(config)
        self.output = SelfOutput(config, config.intermediate_size)

    def forward(self, x, mask, rel_pos, rel_emb):
        x = self.attention(x, mask, rel_pos, rel_emb)
        return self.output(self.intermediate(x), x)


class ConvLayer(nn.Module):
    """DeBERTa-v2's convolution branch beside the first layer: LayerNorm(layer output +
    act(conv(embeddings))), padding rows zeroed before and after."""

    def __init__(self, config):
        super().__init__()
        H, k = config.hidden_size, config.conv_kernel_size
        self.conv = nn.Conv1d(H, H, k, padding=(k - 1) // 2, groups=config.conv_groups)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = CONV_ACTIVATIONS[config.conv_act]

    def forward(self, embeddings, residual, mask):
        y = self.conv(embeddings.transpose(1, 2)).transpose(1, 2)  # (B, T, H)
        if mask is not None:
            y = y.masked_fill(~mask[:, :, None], 0.0)
        y = self.LayerNorm(residual + self.act(self.dropout(y)))
        return y if mask is None else y * mask[:, :, None].to(y.dtype)


class DebertaEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(DebertaLayer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention = config.relative_attention
        self.bucket_size, self.max_relative = config.position_buckets, config.max_relative
        if config.relative_attention:
            self.rel_embeddings = nn.Embedding(2 * config.att_span, config.hidden_size)  # (2k, H)
        if "layer_norm" in config.norm_rel_ebd.split("|"):
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv = ConvLayer(config) if config.conv_kernel_size > 0 else None

    def forward(self, x, mask):
        """x (B, T, H) embeddings, mask (B, T) bool or None -> last hidden states (B, T, H)."""
        pair = None if mask is None else mask[:, None, :, None] & mask[:, None, None, :]  # (B, 1, T, T)
        rel_pos = rel_emb = None
        if self.relative_attention:
            rel_pos = relative_positions(x.shape[1], self.bucket_size, self.max_relative, x.device)  # (T, T)
            rel_emb = self.rel_embeddings.weight  # (2k, H)
            if hasattr(self, "LayerNorm"):
                rel_emb = self.LayerNorm(rel_emb)
        h = x
        for i, layer in enumerate(self.layer):
            h = layer(h, pair, rel_pos, rel_emb)
            if i == 0 and self.conv is not None:
                h = self.conv(x, h, mask)
        return h


class ContextPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.pooler_hidden_size, config.pooler_hidden_size)
        self.dropout = nn.Dropout(config.pooler_dropout)
        self.act = ACTIVATIONS[config.pooler_hidden_act]

    def forward(self, h):
        return self.act(self.dense(self.dropout(h[:, 0])))  # (B, H), the [CLS] token


class DebertaClassifier(nn.Module):
    """HF's DebertaV2ForSequenceClassification: our state dict keys are theirs with "deberta."
    stripped (pooler and classifier are at the top in both). num_labels=1 means regression."""

    head_modules = ("pooler", "classifier")
    _init_weights = SequenceClassifier._init_weights  # transformers' init: N(0, initializer_range), ...
    head_parameter_names = SequenceClassifier.head_parameter_names

    def __init__(self, config, num_labels):
        super().__init__()
        if not (isinstance(num_labels, int) and num_labels >= 1):
            raise ValueError(f"num_labels must be an int >= 1 (1 = regression), got {num_labels!r}")
        self.config, self.num_labels = config, num_labels
        self.embeddings = DebertaEmbeddings(config)
        self.encoder = DebertaEncoder(config)
        self.pooler = ContextPooler(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if config.cls_dropout is None else config.cls_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(self._init_weights)

    def encode(self, input_ids, attention_mask=None, token_type_ids=None):
        """Last hidden states (B, T, H). attention_mask: 1 = token, 0 = padding."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids {tuple(input_ids.shape)}")
        if hasattr(self, "token_mask"):  # spectral_ft.TokenMask, shared by FouRA layers: their gate skips padding
            self.token_mask.mask = attention_mask  # (B, T) or None: every token real
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None if attention_mask is None else attention_mask.bool()  # (B, T)
        return self.encoder(self.embeddings(input_ids, token_type_ids, mask), mask)  # (B, T, H)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        return self.classifier(self.dropout(self.pooler(h)))  # (B, num_labels)

    @classmethod
    def from_pretrained(cls, directory, num_labels):
        """The model of a local Hugging Face "deberta-v2" checkpoint directory (no tokenizer)."""
        config = read_config(Path(directory) / "config.json")
        if not isinstance(config, DebertaV2Config):
            raise ValueError(f"{Path(directory) / 'config.json'}: model type {config.model_type!r} is not "
                             f"deberta-v2; load it with SequenceClassifier")
        model = cls(config, num_labels)
        path, state = read_pretrained_weights(directory)
        load_hf_state_dict(model, state, source=path)
        return model


def classifier_for(config, num_labels):
    """A fresh classifier of a config: SequenceClassifier (BERT, RoBERTa) or DebertaClassifier."""
    return (DebertaClassifier if isinstance(config, DebertaV2Config) else SequenceClassifier)(config, num_labels)

# -----------------------------------------------------------------------------
# loading and saving Hugging Face checkpoints


IGNORED_PREFIXES = ("lm_head.", "cls.predictions.", "cls.seq_relationship.",  # pre-training heads
                    "lm_predictions.", "mask_predictions.")  # DeBERTa-v3's generator / discriminator heads
IGNORED_SUFFIXES = ("position_ids", "embeddings.token_type_ids")  # buffers, not weights


def read_pretrained_weights(directory):
    """(file, raw state dict) of a checkpoint directory: model.safetensors, else pytorch_model.bin."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        return directory / "model.safetensors", read_safetensors(directory / "model.safetensors")
    if (directory / "pytorch_model.bin").is_file():
        return directory / "pytorch_model.bin", load_torch_checkpoint(directory / "pytorch_model.bin")
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin "
                            f"(sharded checkpoints are not supported)")


def _our_name(key):
    """HF key -> our module path: drop the model prefix, rename old gamma/beta."""
    for prefix in ("roberta.", "bert.", "deberta."):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    if key.endswith(".gamma"):
        key = key[:-len("gamma")] + "weight"
    elif key.endswith(".beta"):
        key = key[:-len("beta")] + "bias"
    return key


def _ignored(name, config):
    """Checkpoint tensors that are not ours to load: pre-training heads, buffers, RoBERTa's unused
    pooler and DeBERTa-v3's unused absolute position table (both dropped by transformers too)."""
    return (name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES)
            or (config.model_type == "roberta" and name.startswith("pooler."))
            or (name == "embeddings.position_embeddings.weight"
                and config.model_type == "deberta-v2" and not config.position_biased_input))


def _first(names, n=10):
    """'a, b, c' or 'a, ..., j, ... (5 more)': the first `n` of a list, for a one-line message."""
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_hf_state_dict(model, state_dict, source="checkpoint"):
    """Copy a Hugging Face state dict into `model`, as float32; returns the names of the head
    tensors left fresh. The head of a fresh classifier is the only part that may be missing (it
    keeps its init); pre-training heads and buffers are skipped (_ignored). Everything else is a
    ValueError naming `source` (the weights file) and the first tensors concerned: a wrong shape,
    missing backbone tensors, tensors the model has no place for (a config.json that does not
    describe these weights: fewer layers than they hold, another model), a NaN or Inf."""
    ours, config = model.state_dict(), model.config
    is_head = lambda name: name.split(".")[0] in model.head_modules
    found, keys, unexpected = {}, {}, []  # our name -> tensor, our name -> checkpoint key
    for key, tensor in state_dict.items():
        name = _our_name(key)
        if _ignored(name, config):
            continue
        if name not in ours:
            unexpected.append(key)
            continue
        want = tuple(ours[name].shape)
        if tuple(tensor.shape) != want:
            hint = (f"; the checkpoint's head was trained for a different number of labels than "
                    f"num_labels={model.num_labels}" if is_head(name) else "")
            raise ValueError(f"{source}: tensor {key!r} has shape {tuple(tensor.shape)} but the "
                             f"model's {name!r} has shape {want}{hint}")
        found[name], keys[name] = (tensor.float() if tensor.is_floating_point() else tensor), key  # fp16/bf16 -> fp32
    missing = [name for name in ours if name not in found]
    backbone = [name for name in missing if not is_head(name)]
    described = (f"the {config.model_type} model its config.json describes "
                 f"(num_hidden_layers={config.num_hidden_layers}, hidden_size={config.hidden_size})")
    if backbone:
        raise ValueError(f"{source}: lacks {len(backbone)} backbone tensors of {described}: {_first(backbone)}")
    if unexpected:
        raise ValueError(f"{source}: holds {len(unexpected)} tensors that {described} has no place for: "
                         f"{_first(unexpected)}; config.json and the weights must come from one checkpoint")
    damaged = [f"{keys[name]} ({'NaN' if t.isnan().any() else 'Inf'})" for name, t in found.items()
               if t.is_floating_point() and not t.isfinite().all()]
    if damaged:
        raise ValueError(f"{source}: {len(damaged)} tensors hold NaN or Inf values: {_first(damaged, 5)}; "
                         f"the file is damaged (or was saved from a diverged run): download it again")
    model.load_state_dict(found, strict=False)
    return missing


def _download(repo_id, endpoint, cache_dir):
    """Fetch a checkpoint's files from the hub; returns the folder that holds them."""
    get = lambda filename: hf_hub_download(repo_id, filename, endpoint=endpoint, cache_dir=cache_dir)
    config_path = Path(get("config.json"))
    config = read_config(config_path)
    try:
        paths = [get("model.safetensors")]
    except EntryNotFoundError:
        paths = [get("pytorch_model.bin")]
    vocabulary = {"roberta": ["vocab.json", "merges.txt"], "deberta-v2": ["spm.model"]}
    paths += [get(f) for f in vocabulary.get(config.model_type, ["vocab.txt"])]
    try:
        paths.append(get("tokenizer_config.json"))
    except EntryNotFoundError:
        pass
    if any(Path(p).parent != config_path.parent for p in paths):  # hub.py keeps one snapshot folder
        raise RuntimeError(f"files of {repo_id} were not downloaded into one folder: {paths}")
    return config_path.parent


def check_vocabulary(tokenizer, config, directory):
    """Refuse a tokenizer whose ids do not match the embedding's rows, before anything trains; a
    ValueError naming the tokenizer's file and config.json, with both sizes.

    The tokenizer's ids are 0 .. n-1 (n: its largest id + 1, added tokens included); the word
    embedding has config.vocab_size rows (loading checks the weights' shape against it). The rule:
      - n > vocab_size: refused. Ids without a row fail at the first batch that meets one
        (IndexError on the CPU, a device-side assert on a GPU), or never, if the data avoid them.
      - n < vocab_size: refused for BERT and RoBERTa, whose tokenizer fills the embedding exactly
        (bert-base-uncased: 30,522 lines of vocab.txt and rows; roberta-base: 50,265 entries of
        vocab.json and rows), so a smaller one is another model's vocabulary. Allowed for
        "deberta-v2", whose configs pad vocab_size beyond the tokenizer (DeBERTa-v3: 128,100 rows for
        spm.model's 128,000 pieces and [MASK] at 128,000): the rows past n are never looked up.
    """
    n, rows = max(tokenizer.vocab.values()) + 1, config.vocab_size
    padded = config.model_type == "deberta-v2"
    if n == rows or (n < rows and padded):
        return
    sizes = (f"{tokenizer.source} holds {n:,} token ids, but {Path(directory) / 'config.json'} gives the "
             f"embedding {rows:,} rows (vocab_size={rows})")
    if n > rows:
        raise ValueError(f"{sizes}: ids {rows:,} to {n - 1:,} have no embedding; the tokenizer's files must "
                         f"come from the checkpoint's own folder")
    raise ValueError(f"{sizes}: a {config.model_type} checkpoint's tokenizer fills its embedding exactly, so "
                     f"these tokenizer files belong to another model (only deberta-v2 configs pad vocab_size)")


def checkpoint_folder(name_or_path, *, endpoint=None, cache_dir=None):
    """The local folder of a checkpoint: `name_or_path` itself if it is a folder, else the hub id's files,
    downloaded (config, weights, tokenizer) into the cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"{name_or_path} is not a directory, nor a hub id like "
                                f"'roberta-base' or 'FacebookAI/roberta-base'")
    return _download(str(name_or_path), endpoint, cache_dir)


def load_classifier(directory, num_labels):
    """The model (SequenceClassifier or DebertaClassifier, by config.json) of a local checkpoint folder."""
    config = read_config(Path(directory) / "config.json")
    cls = DebertaClassifier if isinstance(config, DebertaV2Config) else SequenceClassifier
    return cls.from_pretrained(directory, num_labels)


def load_pretrained(name_or_path, num_labels, *, endpoint=None, cache_dir=None):
    """(model, tokenizer) from a local checkpoint directory or a Hugging Face hub id; the tokenizer's ids must
    fit the embedding (check_vocabulary), checked before the weights are read."""
    directory = checkpoint_folder(name_or_path, endpoint=endpoint, cache_dir=cache_dir)
    tokenizer = load_tokenizer(directory)
    check_vocabulary(tokenizer, read_config(Path(directory) / "config.json"), directory)
    return load_classifier(directory, num_labels), tokenizer


def hf_key(config, name):
    """Our state dict key -> the key of HF's *ForSequenceClassification: the encoder under "bert."/"roberta."/
    "deberta.", the head at the top (classifier; DeBERTa's pooler too, BERT's lives in "bert.pooler")."""
    deberta = config.model_type == "deberta-v2"
    top = ("classifier.", "pooler.") if deberta else ("classifier.",)
    return name if name.startswith(top) else ("deberta." if deberta else config.model_type + ".") + name


def save_pretrained(model, directory, tokenizer_files=None, labels=None):
    """Write config.json and model.safetensors as HF's *ForSequenceClassification does
    (keys with the "roberta."/"bert."/"deberta." prefix, the head at top level), then copy the
    given tokenizer files in. `labels`: the name of each class (id2label), default LABEL_0, ...;
    one label (num_labels 1) is regression, which config.json says in problem_type. Adapters must be
    merged away first."""
    config, directory = model.config, Path(directory)
    with torch.device("meta"):  # the plain model's key names, without allocating anything
        plain = type(model)(config, model.num_labels).state_dict().keys()
    state = model.state_dict()
    if set(state) != set(plain):
        extra = sorted(set(state) - set(plain))[:5]
        raise ValueError(f"model has tensors a plain SequenceClassifier lacks (e.g. {extra}); "
                         f"merge and remove adapters before save_pretrained")
    names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(model.num_labels)]
    if len(names) != model.num_labels or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"labels must be {model.num_labels} distinct strings (one per class), got {labels!r}")
    tensors = {hf_key(config, n): t for n, t in state.items()}
    arch = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification",
            "deberta-v2": "DebertaV2ForSequenceClassification"}
    config_json = dict(config.to_json(), architectures=[arch[config.model_type]],
                       num_labels=model.num_labels, id2label=dict(enumerate(names)),
                       label2id={name: i for i, name in enumerate(names)},
                       problem_type="regression" if model.num_labels == 1 else "single_label_classification")
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    with atomic_write(directory / "config.json", "w") as f:
        f.write(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    for src in tokenizer_files or []:
        src, dst = Path(src), directory / Path(src).name
        if src.resolve() != dst.resolve():
            with open(src, "rb") as fin, atomic_write(dst) as fout:
                shutil.copyfileobj(fin, fout)
