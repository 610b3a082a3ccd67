"""
A minimal BERT / RoBERTa encoder with a sequence-classification head, in one file.

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
import shutil
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hub import (EntryNotFoundError, atomic_write, hf_hub_download, load_torch_checkpoint,
                 read_safetensors, write_safetensors)
from tokenization import load_tokenizer

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
        for f in fields(self):  # a config.json may hold anything: each value's type and range first
            value, kinds = getattr(self, f.name), FIELD_TYPES.get(f.name, (object,))
            ok = kinds == (object,) or any(value is None if k is None else isinstance(value, k) and not isinstance(value, bool)
                     for k in kinds)
            if not ok:
                allowed = " or ".join({str: "a string", int: "an integer", float: "a number", None: "null"}[k]
                                      for k in kinds if k is not int or float not in kinds)
                raise ValueError(f"{f.name}={value!r} is not {allowed}")
            low, high = FIELD_RANGES.get(f.name, (None, None))
            if value is not None and ((low is not None and value < low) or (high is not None and value >= high)):
                bound = " and ".join(b for b in (low is not None and f">= {low}", high is not None and f"< {high}") if b)
                raise ValueError(f"{f.name}={value!r} is out of range: must be {bound}")
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


def read_config(path):
    """The ModelConfig of a config.json file; any problem is a ValueError naming the file."""
    try:
        d = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    try:
        return ModelConfig.from_json(d)
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
KNOWN_CONFIGS = {
    "roberta-base": _ROBERTA_BASE, "FacebookAI/roberta-base": _ROBERTA_BASE,
    "roberta-large": _ROBERTA_LARGE, "FacebookAI/roberta-large": _ROBERTA_LARGE,
    "bert-base-uncased": _BERT_BASE_UNCASED, "google-bert/bert-base-uncased": _BERT_BASE_UNCASED,
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
        return self.encoder(self.embeddings(input_ids, token_type_ids), mask)  # (B, T, H)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        if self.config.model_type == "bert":
            return self.classifier(self.dropout(self.pooler(h)))  # (B, num_labels)
        return self.classifier(h)  # (B, num_labels)

    @classmethod
    def from_pretrained(cls, directory, num_labels):
        """The model of a local Hugging Face checkpoint directory (no tokenizer)."""
        directory = Path(directory)
        model = cls(read_config(directory / "config.json"), num_labels)
        load_hf_state_dict(model, read_checkpoint(directory))
        return model


def count_parameters(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

# -----------------------------------------------------------------------------
# loading and saving Hugging Face checkpoints


IGNORED_PREFIXES = ("lm_head.", "cls.predictions.", "cls.seq_relationship.")  # pre-training heads
IGNORED_SUFFIXES = ("position_ids", "embeddings.token_type_ids")  # buffers, not weights


def read_checkpoint(directory):
    """The raw state dict of a checkpoint directory: model.safetensors, else pytorch_model.bin."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        return read_safetensors(directory / "model.safetensors")
    if (directory / "pytorch_model.bin").is_file():
        return load_torch_checkpoint(directory / "pytorch_model.bin")
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin "
                            f"(sharded checkpoints are not supported)")


def _our_name(key):
    """HF key -> our module path: drop the model prefix, rename old gamma/beta."""
    for prefix in ("roberta.", "bert."):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    if key.endswith(".gamma"):
        key = key[:-len("gamma")] + "weight"
    elif key.endswith(".beta"):
        key = key[:-len("beta")] + "bias"
    return key


def load_hf_state_dict(model, state_dict):
    """Copy a Hugging Face state dict into `model`, as float32. Missing backbone tensors or
    wrong shapes raise; head tensors the checkpoint lacks keep their fresh init; unknown
    keys give one warning. Returns the names of the head tensors left fresh."""
    ours = model.state_dict()
    is_head = lambda name: name.split(".")[0] in model.head_modules
    found, unexpected = {}, []
    for key, tensor in state_dict.items():
        name = _our_name(key)
        if (name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES)
                or (model.config.model_type == "roberta" and name.startswith("pooler."))):
            continue
        if name not in ours:
            unexpected.append(key)
            continue
        want = tuple(ours[name].shape)
        if tuple(tensor.shape) != want:
            hint = (f"; the checkpoint's head was trained for a different number of labels than "
                    f"num_labels={model.num_labels}" if is_head(name) else "")
            raise ValueError(f"checkpoint tensor {key!r} has shape {tuple(tensor.shape)} but the "
                             f"model's {name!r} has shape {want}{hint}")
        found[name] = tensor.float() if tensor.is_floating_point() else tensor  # fp16/bf16 -> fp32
    missing = [name for name in ours if name not in found]
    backbone = [name for name in missing if not is_head(name)]
    if backbone:
        more = f", ... ({len(backbone) - 10} more)" if len(backbone) > 10 else ""
        raise ValueError(f"checkpoint lacks {len(backbone)} backbone tensors of this "
                         f"{model.config.model_type} model: {', '.join(backbone[:10])}{more}")
    if unexpected:
        more = f", ... ({len(unexpected) - 10} more)" if len(unexpected) > 10 else ""
        warnings.warn(f"ignoring {len(unexpected)} unexpected checkpoint keys: "
                      f"{', '.join(unexpected[:10])}{more}")
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
    paths += [get(f) for f in (["vocab.json", "merges.txt"] if config.model_type == "roberta"
                               else ["vocab.txt"])]
    try:
        paths.append(get("tokenizer_config.json"))
    except EntryNotFoundError:
        pass
    if any(Path(p).parent != config_path.parent for p in paths):  # hub.py keeps one snapshot folder
        raise RuntimeError(f"files of {repo_id} were not downloaded into one folder: {paths}")
    return config_path.parent


def load_pretrained(name_or_path, num_labels, *, endpoint=None, cache_dir=None):
    """(model, tokenizer) from a local checkpoint directory or a Hugging Face hub id."""
    path = Path(name_or_path)
    if path.is_dir():
        directory = path
    elif str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"{name_or_path} is not a directory, nor a hub id like "
                                f"'roberta-base' or 'FacebookAI/roberta-base'")
    else:
        directory = _download(str(name_or_path), endpoint, cache_dir)
    return SequenceClassifier.from_pretrained(directory, num_labels), load_tokenizer(directory)


def save_pretrained(model, directory, tokenizer_files=None):
    """Write config.json and model.safetensors as HF's *ForSequenceClassification does
    (keys with the "roberta."/"bert." prefix, the head at top level), then copy the
    given tokenizer files in. Adapters must be merged away first."""
    config, directory = model.config, Path(directory)
    with torch.device("meta"):  # the plain model's key names, without allocating anything
        plain = SequenceClassifier(config, model.num_labels).state_dict().keys()
    state = model.state_dict()
    if set(state) != set(plain):
        extra = sorted(set(state) - set(plain))[:5]
        raise ValueError(f"model has tensors a plain SequenceClassifier lacks (e.g. {extra}); "
                         f"merge and remove adapters before save_pretrained")
    prefix = config.model_type + "."
    tensors = {(n if n.startswith("classifier.") else prefix + n): t for n, t in state.items()}
    arch = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification"}
    labels = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
    config_json = dict(config.to_json(), architectures=[arch[config.model_type]],
                       num_labels=model.num_labels, id2label=labels,
                       label2id={v: int(k) for k, v in labels.items()})
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    with atomic_write(directory / "config.json", "w") as f:
        f.write(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    for src in tokenizer_files or []:
        src, dst = Path(src), directory / Path(src).name
        if src.resolve() != dst.resolve():
            with open(src, "rb") as fin, atomic_write(dst) as fout:
                shutil.copyfileobj(fin, fout)
