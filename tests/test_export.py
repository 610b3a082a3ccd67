"""
export.py: a run's model leaves the project, as a merged Hugging Face checkpoint or a PEFT adapter.
No transformers or PEFT here: the HF folder is read back by our own loader (model.load_pretrained), and the PEFT
files are checked against a golden written by hand from PEFT 0.21's source, then read by PEFT's own formulas
(written out below) into ΔW. scripts/check_export.py loads both with transformers and PEFT themselves.

Run folders are made here as train.py writes them (results.json's config, adapter.safetensors,
best/adapter.safetensors), around tiny random checkpoints; one test makes a real one with `train.py --model tiny`.
"""
import errno
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import export
import spectral_ft
import train
from data import TASKS
from encoder.hub import read_safetensors, read_safetensors_metadata, write_safetensors
from encoder.model import DebertaV2Config, classifier_for, load_classifier, load_pretrained, save_pretrained, tiny_config
from encoder.tokenization import bytes_to_unicode, load_tokenizer

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FAMILIES = {  # family -> (a tiny config, a GLUE task: 2 labels, 3 labels, regression)
    "bert": (lambda: tiny_config("bert", 60), "rte"),
    "roberta": (lambda: tiny_config("roberta", 261), "mnli"),  # 5 specials and the 256 byte symbols
    "deberta-v2": (lambda: DebertaV2Config(vocab_size=3001, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=64, relative_attention=True,
                                           pos_att_type=["p2c", "c2p"], share_att_key=True, position_buckets=8,
                                           norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0),
                   "stsb"),
}
SETTINGS = {  # small hyperparameters for a 32-wide model; FouRA without its gate (a fixed ΔW)
    "lora": dict(r=4, alpha=8.0, dropout=0.1), "vera": dict(r=8, d_initial=0.1, seed=3),
    "fourierft": dict(n=64, scaling=150.0, seed=5), "fora": dict(n=40, r=4, alpha=None, seed=1),
    "dfora": dict(n=40, r=4, alpha=None, seed=1), "loca": dict(n=50, alpha=1.0, seed=2),
    "foura": dict(r=4, alpha=8.0, transform="dft", gate=False), "spectral_a": dict(r=4), "spectral_r": dict(r=4),
    "full": {}, "head": {},
}


def attention(family):
    return ["query_proj", "value_proj"] if family == "deberta-v2" else ["query", "value"]


def write_tokenizer(folder, family):
    """The vocabulary files a checkpoint of the family ships: vocab.txt, vocab.json + merges.txt, spm.model."""
    if family == "bert":
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "cat"] + [f"w{i}" for i in range(53)]
        (folder / "vocab.txt").write_text("\n".join(words) + "\n")  # 60 ids: the embedding's rows (check_vocabulary)
    elif family == "roberta":
        symbols = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *bytes_to_unicode().values()]
        (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}))
        (folder / "merges.txt").write_text("#version: 0.2\n")
    else:
        shutil.copy(FIXTURES / "spm.model", folder / "spm.model")


def randomize(named, generator, scale=0.2):
    """Each tensor scale · N(0, 1); LayerNorm weights 1 + that; LoCA locations uniform; DFoRA magnitudes near
    their row norms. Non-zero everywhere, so that a lost tensor shows in the logits."""
    with torch.no_grad():
        for name, p in named:
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
            if name.endswith("locations"):
                p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float64))
            elif name.endswith("magnitude"):
                p.mul_(1 + 0.1 * noise)
            else:
                p.copy_(1 + scale * noise if "LayerNorm" in name else scale * noise)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread (two spin-waiting threads make a 32 x 32 SVD take 0.2 s on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """family -> a tiny random checkpoint folder (weights, config.json, the family's tokenizer files). Its seed lies
    outside the tests' (0 to 2**16): with the same seed, full fine-tuning's random "trained" weights were the base's."""
    folders, generator = {}, torch.Generator().manual_seed(2**20)
    for family, (make_config, task) in FAMILIES.items():
        folder = tmp_path_factory.mktemp(f"base-{family}")
        model = classifier_for(make_config(), TASKS[task].num_labels)
        randomize(model.named_parameters(), generator)
        save_pretrained(model, folder, labels=TASKS[task].labels)
        write_tokenizer(folder, family)
        folders[family] = folder
    return folders


def adapted(base, family, method, generator, precision="fp32", targets=None):
    """The run's model as train.py builds it: the base, the method injected, cast to the run's precision,
    then its trained tensors (here random: adapters, head, every weight for full)."""
    model = load_classifier(base, TASKS[FAMILIES[family][1]].num_labels)
    targets = targets or attention(family) + ["intermediate.dense", "output.dense"]  # (32, 32), (64, 32), (32, 64)
    if method not in export.NOT_ADAPTERS:
        spectral_ft.inject(model, method, targets=targets, **SETTINGS[method])
    model.to(torch.float64 if precision == "fp64" else torch.float32)
    head, adapters = set(model.head_parameter_names()), method not in export.NOT_ADAPTERS
    trained = [(n, p) for n, p in model.named_parameters()  # what train.py trains (inject froze all but adapters)
               if method == "full" or n in head or (adapters and p.requires_grad)]
    randomize(trained, generator, scale=0.2 if method in export.NOT_ADAPTERS else 0.05)
    return model.eval(), (None if method in export.NOT_ADAPTERS else targets)


def trained_state(model, method):
    """What train.py saves (train.trainable_state): adapter_state_dict and the head, every weight for full."""
    if method == "full":
        return {n: p.detach().contiguous() for n, p in model.named_parameters()}
    head = set(model.head_parameter_names())
    state = {} if method == "head" else dict(spectral_ft.adapter_state_dict(model))
    state.update({n: p.detach() for n, p in model.named_parameters() if n in head})
    return {k: v.contiguous() for k, v in state.items()}


def write_run(folder, base, family, method, model, targets, precision="fp32"):
    """A run folder as train.py leaves it: results.json's config, adapter.safetensors, best/adapter.safetensors."""
    task = FAMILIES[family][1]
    hyperparameters = dict(SETTINGS[method])
    config = dict(method=method, model=str(base), task=task, targets=targets, hyperparameters=hyperparameters,
                  precision=precision, seed=0)
    (folder / "best").mkdir(parents=True)
    best = dict(value=0.75, step=7, epoch=0.5, metrics={"dev": {"accuracy": 0.75}}, adapter="best/adapter.safetensors")
    final = dict(step=9, epoch=1.0, metrics={"dev": {"accuracy": 0.5}})
    (folder / "results.json").write_text(json.dumps(dict(config=config, seed=0, best=best, final=final)))
    metadata = dict(format="pt", method=method, hyperparameters=json.dumps(hyperparameters), model=str(base),
                    task=task, targets=json.dumps(targets))
    state = trained_state(model, method)
    write_safetensors(folder / "adapter.safetensors", state, metadata)
    write_safetensors(folder / "best" / "adapter.safetensors", state,
                      dict(metadata, step="7", metrics=json.dumps({"dev": {"accuracy": 0.75}})))
    return folder


def batch(model, generator):
    """(input_ids, attention_mask) (3, 12), rows of 12, 8 and 4 real tokens, padding after."""
    ids = torch.randint(3, model.config.vocab_size, (3, 12), generator=generator)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 8, 4])[:, None]).long()
    return ids.masked_fill(mask == 0, model.config.pad_token_id), mask


def logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, mask).double()

# -----------------------------------------------------------------------------
# --format hf: the merged checkpoint, read back by our own loader


@settings(max_examples=25, deadline=None)
@given(family=st.sampled_from(list(FAMILIES)), method=st.sampled_from(list(SETTINGS)),
       precision=st.sampled_from(["fp32", "fp64"]), which=st.sampled_from(["best", "final"]),
       seed=st.integers(0, 2**16))
def test_hf_export_read_back_gives_the_adapted_models_logits(bases, tmp_path_factory, family, method, precision,
                                                             which, seed):
    generator, work = torch.Generator().manual_seed(seed), tmp_path_factory.mktemp("hf")
    model, targets = adapted(bases[family], family, method, generator, precision)
    ids, mask = batch(model, generator)
    ours = logits(model, ids, mask)
    run = write_run(work / "run", bases[family], family, method, model, targets, precision)
    assert export.cli([str(run), str(work / "out"), "--which", which]) == 0

    loaded, tokenizer = load_pretrained(work / "out", model.num_labels)
    theirs = logits(loaded.eval(), ids, mask)
    base = logits(load_classifier(bases[family], model.num_labels).eval(), ids, mask)
    assert (theirs - ours).abs().max() < 1e-5 * max(1.0, ours.abs().max())  # float32 merged weights
    assert (base - ours).abs().max() > 1e-3  # the trained tensors matter: a lost one would show
    assert read_safetensors(work / "out" / "model.safetensors")["classifier" + (
        ".out_proj.weight" if family == "roberta" else ".weight")].dtype == torch.float32


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_config_names_the_architecture_labels_and_problem_and_carries_the_tokenizer(bases, tmp_path, family):
    model, targets = adapted(bases[family], family, "lora", torch.Generator().manual_seed(1))
    run = write_run(tmp_path / "run", bases[family], family, "lora", model, targets)
    assert export.cli([str(run), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    task = TASKS[FAMILIES[family][1]]
    arch = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification",
            "deberta-v2": "DebertaV2ForSequenceClassification"}[family]
    assert config["architectures"] == [arch] and config["model_type"] == family
    assert config["num_labels"] == task.num_labels
    names = task.labels or ("LABEL_0",)
    assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert config["label2id"] == {n: i for i, n in enumerate(names)}
    assert config["problem_type"] == ("regression" if task.labels is None else "single_label_classification")
    copied = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name not in ("config.json", "model.safetensors"))
    assert copied == sorted(p.name for p in bases[family].iterdir() if p.name in export.TOKENIZER_FILES)
    assert all((tmp_path / "out" / n).read_bytes() == (bases[family] / n).read_bytes() for n in copied)
    text = "red cat"
    assert load_tokenizer(tmp_path / "out").encode(text) == load_tokenizer(bases[family]).encode(text)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run folder: train.py --model tiny, 2 steps, evaluated at its end (step 2). Tests copy it."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    train.main(["--model", "tiny", "--method", "lora", "--max-steps", "2", "--out", str(run)])
    return run


def test_a_real_tiny_run_exports_in_both_formats(tiny_run, tmp_path, capsys):
    """train.py's own files (train.py --model tiny), exported: the HF folder gives the logits of the run's
    model rebuilt here from its adapter file; the PEFT folder holds its tensors under PEFT's names."""
    run = tiny_run
    final = json.loads((run / "results.json").read_text())["final"]
    for fmt in ("hf", "peft"):
        assert export.cli([str(run), str(tmp_path / fmt), "--which", "final", "--format", fmt]) == 0
        said = capsys.readouterr()
        assert f"wrote {tmp_path / fmt}/" in said.out and said.err == ""
        assert f"step {final['step']}, metrics {json.dumps(final['metrics'], separators=(', ', ': '))}" in said.out

    config = json.loads((run / "results.json").read_text())["config"]
    model, _ = load_pretrained(run / "tiny-model", num_labels=2)
    spectral_ft.inject(model, "lora", targets=config["targets"], **config["hyperparameters"])
    state = read_safetensors(run / "adapter.safetensors")
    spectral_ft.load_adapter_state_dict(model, {k: v for k, v in state.items() if "lora_" in k})
    model.load_state_dict({k: v for k, v in state.items() if k.startswith(("pooler.", "classifier."))}, strict=False)
    ids = torch.tensor([[2, 5, 6, 7, 3, 8, 9, 3], [2, 5, 3, 10, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    loaded, _ = load_pretrained(tmp_path / "hf", num_labels=2)
    assert (logits(loaded.eval(), ids, mask) - logits(model.eval(), ids, mask)).abs().max() < 1e-6
    peft = read_safetensors(tmp_path / "peft" / "adapter_model.safetensors")
    assert torch.equal(peft["base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"],
                       state["encoder.layer.1.attention.self.value.lora_B"])
    assert torch.equal(peft["base_model.model.bert.pooler.dense.bias"], state["pooler.dense.bias"])
    peft_config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == str((run / "tiny-model").resolve())

# -----------------------------------------------------------------------------
# --format peft: PEFT 0.21's names and fields (a golden written by hand from its source), and its formulas
#
# The golden, from PEFT 0.21.0 (the PyPI wheel; paths under src/peft/, line numbers of that release):
#   peft_model.py 356-359 (PeftModel.save_pretrained): adapter_model.safetensors, metadata {"format": "pt"}.
#   utils/save_and_load.py 143-340 (get_peft_model_state_dict): the PeftModel's own keys, "base_model.model." +
#     the transformers module path, with the adapter name dropped (tuners/tuners_utils.py 1696-1714:
#     "...lora_A.default.weight" -> "...lora_A.weight", "...vera_lambda_b.default" -> "...vera_lambda_b").
#   tuners/lora/layer.py 263-264, 281: lora_A = nn.Linear(in, r) holds (r, in), lora_B (out, r); scaling
#     lora_alpha / r. tuners/lora/config.py 453-: the LoraConfig fields.
#   tuners/vera/layer.py 89-90: vera_lambda_b (out,), vera_lambda_d (r,); 242-246: ΔW = (λ_b B[:out]) (λ_d A[:, :in]).
#     tuners/vera/model.py 113-160: vera_A (r, largest in), vera_B (largest out, r) drawn by _kaiming_init (49-75,
#     U(±√3 · √2 / √fan_in)) from one CPU Generator seeded projection_prng_key, A first; 271-287: saved once, as
#     "base_model.vera_A" and "base_model.vera_B", when save_projection.
#   tuners/fourierft/layer.py 57-81: fourierft_spectrum (n,), indices randperm(out · in, Generator seeded
#     random_loc_seed)[:n] -> (i // in, i % in); 94-101: ΔW = Re(ifft2(dense spectrum)) · scaling.
#   utils/other.py 789-798 (ModulesToSaveWrapper.adapter_state_dict): a module to save keeps its own path
#     ("modules_to_save.default." dropped), e.g. "base_model.model.classifier.out_proj.weight";
#     peft_model.py 1830-1836: for SEQ_CLS, "classifier" and "score" are appended to modules_to_save.
# Our head trains BERT's pooler too (bert.pooler) and DeBERTa's ContextPooler (pooler): listed before them.

LAYERS = {"bert": "bert.encoder.layer.{i}.attention.self.{t}", "roberta": "roberta.encoder.layer.{i}.attention.self.{t}",
          "deberta-v2": "deberta.encoder.layer.{i}.attention.self.{t}"}
HEADS = {  # family -> {head key: shape} for the tiny models (hidden 32; rte: 2 labels, mnli: 3, stsb: 1)
    "bert": {"bert.pooler.dense.weight": (32, 32), "bert.pooler.dense.bias": (32,), "classifier.weight": (2, 32),
             "classifier.bias": (2,)},
    "roberta": {"classifier.dense.weight": (32, 32), "classifier.dense.bias": (32,),
                "classifier.out_proj.weight": (3, 32), "classifier.out_proj.bias": (3,)},
    "deberta-v2": {"pooler.dense.weight": (32, 32), "pooler.dense.bias": (32,), "classifier.weight": (1, 32),
                   "classifier.bias": (1,)},
}
MODULES_TO_SAVE = {"bert": ["pooler", "classifier", "score"], "roberta": ["classifier", "score"],
                   "deberta-v2": ["pooler", "classifier", "score"]}
PEFT_TENSORS = {"lora": {"lora_A.weight": (4, 32), "lora_B.weight": (32, 4)},
                "vera": {"vera_lambda_b": (32,), "vera_lambda_d": (8,)},
                "fourierft": {"fourierft_spectrum": (64,)}}
COMMON_FIELDS = dict(task_type="SEQ_CLS", revision=None, inference_mode=True, bias="none", fan_in_fan_out=False,
                     layers_to_transform=None, layers_pattern=None, peft_version="0.21.0")
PEFT_FIELDS = {
    "lora": dict(peft_type="LORA", r=4, lora_alpha=8.0, lora_dropout=0.1, use_rslora=False, use_dora=False,
                 init_lora_weights=True, rank_pattern={}, alpha_pattern={}, lora_bias=False),
    "vera": dict(peft_type="VERA", r=8, projection_prng_key=3, save_projection=True, vera_dropout=0.0, d_initial=0.1,
                 init_weights=True),
    "fourierft": dict(peft_type="FOURIERFT", n_frequency=64, scaling=150.0, random_loc_seed=5, n_frequency_pattern={},
                      init_weights=False),
}


def golden_keys(family, method):
    """{key: shape} of adapter_model.safetensors for the tiny 2-layer model adapted on q and v."""
    keys = {f"base_model.model.{LAYERS[family].format(i=i, t=t)}.{name}": shape
            for i in (0, 1) for t in attention(family) for name, shape in PEFT_TENSORS[method].items()}
    keys.update({f"base_model.model.{k}": shape for k, shape in HEADS[family].items()})
    if method == "vera":
        keys.update({"base_model.vera_A": (8, 32), "base_model.vera_B": (32, 8)})
    return keys


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method", list(PEFT_TENSORS))
def test_peft_files_have_peft_021s_key_names_and_config_fields(bases, tmp_path, family, method):
    model, targets = adapted(bases[family], family, method, torch.Generator().manual_seed(2), targets=attention(family))
    run = write_run(tmp_path / "run", bases[family], family, method, model, targets)
    assert export.cli([str(run), str(tmp_path / "out"), "--format", "peft"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    tensors = read_safetensors(tmp_path / "out" / "adapter_model.safetensors")
    assert {k: tuple(t.shape) for k, t in tensors.items()} == golden_keys(family, method)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    assert read_safetensors_metadata(tmp_path / "out" / "adapter_model.safetensors") == {"format": "pt"}
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config == dict(COMMON_FIELDS, **PEFT_FIELDS[method], base_model_name_or_path=str(bases[family]),
                          target_modules=attention(family), modules_to_save=MODULES_TO_SAVE[family])


def peft_delta(tensors, config, layer, shape):
    """ΔW (out, in) of one layer from the PEFT files, by PEFT's own formulas (see the golden's sources above)."""
    out, fan_in = shape
    get = lambda name: tensors[f"base_model.model.{layer}.{name}"].double()
    if config["peft_type"] == "LORA":
        return config["lora_alpha"] / config["r"] * get("lora_B.weight") @ get("lora_A.weight")
    if config["peft_type"] == "VERA":
        A, B = tensors["base_model.vera_A"].double(), tensors["base_model.vera_B"].double()
        return (get("vera_lambda_b")[:, None] * B[:out]) @ (get("vera_lambda_d")[:, None] * A[:, :fan_in])
    generator = torch.Generator().manual_seed(config["random_loc_seed"])
    flat = torch.randperm(out * fan_in, generator=generator)[:config["n_frequency"]]
    dense = torch.zeros(out, fan_in, dtype=torch.float64)
    dense[flat // fan_in, flat % fan_in] = get("fourierft_spectrum")
    return torch.fft.ifft2(dense).real * config["scaling"]


def peft_vera_pair(r, largest_in, largest_out, key):
    """PEFT's _kaiming_init pair: one Generator seeded `key`, A (r, in) then B (out, r), U(±√6 / √fan_in)."""
    generator = torch.Generator().manual_seed(key)
    A = torch.empty(r, largest_in).uniform_(-math.sqrt(6 / largest_in), math.sqrt(6 / largest_in), generator=generator)
    B = torch.empty(largest_out, r).uniform_(-math.sqrt(6 / r), math.sqrt(6 / r), generator=generator)
    return A, B


@settings(max_examples=12, deadline=None)
@given(family=st.sampled_from(list(FAMILIES)), method=st.sampled_from(list(PEFT_TENSORS)),
       seed=st.integers(0, 2**16), precision=st.sampled_from(["fp32", "fp64"]))
def test_peft_files_read_by_peft_formulas_give_our_updates_and_head(bases, tmp_path_factory, family, method, seed,
                                                                    precision):
    """Every adapted layer (square and non-square) has our ΔW under PEFT's reading of the files, VeRA's pair is
    the one PEFT draws from projection_prng_key, and the head's tensors are the run's."""
    work = tmp_path_factory.mktemp("peft")
    model, targets = adapted(bases[family], family, method, torch.Generator().manual_seed(seed), precision)
    run = write_run(work / "run", bases[family], family, method, model, targets, precision)
    assert export.cli([str(run), str(work / "out"), "--format", "peft", "--which", "final"]) == 0
    tensors = read_safetensors(work / "out" / "adapter_model.safetensors")
    config = json.loads((work / "out" / "adapter_config.json").read_text())
    layers = spectral_ft.adapters(model)
    prefix = {"bert": "bert.", "roberta": "roberta.", "deberta-v2": "deberta."}[family]
    for name, adapter in layers:
        delta = peft_delta(tensors, config, prefix + name, (adapter.out_features, adapter.in_features))
        assert torch.allclose(delta, adapter.delta_weight().double(), rtol=1e-5, atol=1e-6), name
    if method == "vera":
        largest_in, largest_out = max(a.in_features for _, a in layers), max(a.out_features for _, a in layers)
        A, B = peft_vera_pair(config["r"], largest_in, largest_out, config["projection_prng_key"])
        assert torch.equal(tensors["base_model.vera_A"], A) and torch.equal(tensors["base_model.vera_B"], B)
    for name, tensor in model.state_dict().items():
        if name.split(".")[0] in model.head_modules:
            key = "base_model.model." + (prefix + name if (family, name.split(".")[0]) == ("bert", "pooler") else name)
            assert torch.equal(tensors[key], tensor.float()), key

# -----------------------------------------------------------------------------
# bad input: one line naming the file or flag, exit status 2, nothing written


@pytest.fixture
def lora_run(bases, tmp_path):
    model, targets = adapted(bases["roberta"], "roberta", "lora", torch.Generator().manual_seed(3))
    return write_run(tmp_path / "run", bases["roberta"], "roberta", "lora", model, targets)


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"cut": data[:len(data) // 2], "noise": b"\x07" * 64, "empty": b""}[how])


def damage_checkpoint(run):
    (run / "checkpoint.pt").write_bytes(b"\x07" * 64)


def set_config(run, **changes):
    results = json.loads((run / "results.json").read_text())
    results["config"].update(changes)
    (run / "results.json").write_text(json.dumps(results))


BAD_INPUTS = {  # name -> (change the run (and out), extra flags, what the line must name)
    "no results.json": (lambda run, out: (run / "results.json").unlink(), [], "results.json"),
    "no results.json, a damaged checkpoint.pt": (lambda run, out: ((run / "results.json").unlink(),
                                                                   damage_checkpoint(run)), [], "checkpoint.pt"),
    "results.json not JSON": (lambda run, out: (run / "results.json").write_text("{oops"), [], "results.json"),
    "results.json without config": (lambda run, out: (run / "results.json").write_text("{}"), [], "results.json"),
    "results.json: unknown method": (lambda run, out: set_config(run, method="qora"), [], "results.json"),
    "hyperparameters that build nothing": (lambda run, out: set_config(run, hyperparameters=dict(r=0)), [],
                                           "results.json"),
    "RUN_DIR missing": (lambda run, out: shutil.rmtree(run), [], "RUN_DIR"),
    "no best/": (lambda run, out: shutil.rmtree(run / "best"), [], "--which final"),
    "no final adapter": (lambda run, out: (run / "adapter.safetensors").unlink(), ["--which", "final"],
                         "adapter.safetensors"),
    "adapter cut off": (lambda run, out: damage(run / "best" / "adapter.safetensors", "cut"), [],
                        "best/adapter.safetensors"),
    "adapter is noise": (lambda run, out: damage(run / "adapter.safetensors", "noise"), ["--which", "final"],
                         "adapter.safetensors"),
    "adapter empty": (lambda run, out: damage(run / "adapter.safetensors", "empty"), ["--which", "final"],
                      "adapter.safetensors"),
    "adapter of another method": (lambda run, out: set_config(run, method="vera", hyperparameters=dict(r=8)), [],
                                  "adapter.safetensors"),
    "adapter lacks a tensor": (lambda run, out: write_safetensors(run / "adapter.safetensors", {
        k: v for k, v in read_safetensors(run / "adapter.safetensors").items() if "layer.1" not in k},
        {"method": "lora"}), ["--which", "final"], "adapter.safetensors"),
    "adapter not finite": (lambda run, out: write_safetensors(run / "adapter.safetensors", {
        k: v.fill_(float("nan")) if k.startswith("classifier") else v
        for k, v in read_safetensors(run / "adapter.safetensors").items()}), ["--which", "final"],
        "adapter.safetensors"),
    "unknown format": (lambda run, out: None, ["--format", "onnx"], "--format"),
    "unknown which": (lambda run, out: None, ["--which", "last"], "--which"),
    "OUT_DIR not empty": (lambda run, out: (out.mkdir(), (out / "keep.txt").write_text("mine")), [], "OUT_DIR"),
    "OUT_DIR is a file": (lambda run, out: out.write_text("mine"), [], "OUT_DIR"),
    "gated FouRA": (lambda run, out: set_config(run, method="foura", hyperparameters=dict(r=4, gate=True)), [],
                    "--no-gate"),
    "PEFT has no LoCA": (lambda run, out: set_config(run, method="loca"), ["--format", "peft"], "--format hf"),
    "PEFT has no full": (lambda run, out: set_config(run, method="full", targets=None), ["--format", "peft"],
                         "--format hf"),
    "base model gone": (lambda run, out: set_config(run, model=str(run / "nowhere")), [], "nowhere"),
    "tiny model gone": (lambda run, out: set_config(run, model="tiny"), [], "tiny-model"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(lora_run, tmp_path, capsys, case):
    change, flags, named = BAD_INPUTS[case]
    out = tmp_path / "out"
    change(lora_run, out)
    before = sorted(p.name for p in tmp_path.iterdir())
    kept = out.read_bytes() if out.is_file() else sorted(out.iterdir()) if out.exists() else None
    assert export.cli([str(lora_run), str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("export.py: error: ") and err.count("\n") == 1, err
    assert named in err, err
    assert named != "OUT_DIR" or f"OUT_DIR {out}" in err and "nothing was written" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no OUT_DIR, no temporary folder beside it
    assert kept == (out.read_bytes() if out.is_file() else sorted(out.iterdir()) if out.exists() else None)


def test_the_command_line_says_one_line_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "export.py"), str(tmp_path), str(tmp_path / "out")],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"export.py: error: {tmp_path / 'results.json'} does not exist: RUN_DIR must be a finished " \
                          f"train.py run (results.json is written at its end)\n"


def test_an_empty_out_dir_is_filled_and_the_best_step_is_named(lora_run, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert export.cli([str(lora_run), str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "best/adapter.safetensors" in said and "step 7" in said and '"accuracy": 0.75' in said
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "merges.txt", "model.safetensors",
                                                                    "vocab.json"]


@pytest.mark.parametrize("where", ["out", "new/deeper/out"])
def test_a_failed_write_leaves_neither_out_dir_nor_a_temporary_folder(lora_run, tmp_path, monkeypatch, capsys, where):
    """A full disk is exit 1 (no other command fixes it), naming OUT_DIR, not the temporary folder; the folders
    made above OUT_DIR are gone too."""
    def full_disk(model, folder, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.safetensors"))
    monkeypatch.setattr(export, "save_pretrained", full_disk)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert export.cli([str(lora_run), str(tmp_path / where)]) == 1
    err = capsys.readouterr().err
    assert err == f"export.py: error: OUT_DIR {tmp_path / where}: {os.strerror(errno.ENOSPC)}; nothing was written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before

# -----------------------------------------------------------------------------
# output paths the user can fix are exit 2 and name the user's path; an unfinished run is told how
# to finish it; --which final names its step; the module's docstring says every sentence whole


def refused(err, out):
    """export.py's one line about `out`, exit 2 already checked: names the user's path, no temporary folder."""
    assert err.startswith(f"export.py: error: OUT_DIR {out}: ") and err.count("\n") == 1, err
    assert err.endswith("; nothing was written\n") and ".tmp" not in err, err


@pytest.mark.parametrize("under", ["sub", "a/b"])
def test_an_out_dir_under_a_file_is_one_line_exit_2_and_nothing_written(lora_run, tmp_path, capsys, under):
    """`export.py RUN README.md/sub` is one line naming the user's path, exit 2, not "[Errno 17] File exists"
    and exit 1."""
    (tmp_path / "README.md").write_text("mine")
    out = tmp_path / "README.md" / under
    before = sorted(p.name for p in tmp_path.iterdir())
    assert export.cli([str(lora_run), str(out)]) == 2
    err = capsys.readouterr().err
    refused(err, out)
    assert f"{tmp_path / 'README.md'} is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "README.md").read_text() == "mine"


@pytest.mark.parametrize("under", ["out", "new/out"])
def test_an_out_dir_in_a_folder_nobody_may_write_is_one_line_exit_2(lora_run, tmp_path, monkeypatch, capsys, under):
    """A read-only parent said "Permission denied: '.../.out.x1y2.tmp'", a folder the user never chose, and
    exit 1. The parent is made read-only (0o555) and, since root ignores those bits, os.mkdir refuses in it as
    the kernel refuses an ordinary user: the same line whichever of the two stops export.py."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).parent == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "mkdir", mkdir)
    locked.chmod(0o555)
    try:
        assert export.cli([str(lora_run), str(locked / under)]) == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err
    refused(err, locked / under)
    assert f"cannot create a folder in {locked} ({os.strerror(errno.EACCES)})" in err
    assert list(locked.iterdir()) == []


def unfinished(tiny_run, folder, best=True):
    """The real tiny run as an interrupted one leaves its folder: checkpoint.pt, best/ (when it evaluated
    before it stopped), no results.json and no final adapter.safetensors (train.py writes both at the end)."""
    shutil.copytree(tiny_run, folder)
    (folder / "results.json").unlink()
    (folder / "adapter.safetensors").unlink()
    if not best:
        shutil.rmtree(folder / "best")
    return folder


@pytest.mark.parametrize("which, best", [("final", True), ("final", False), ("best", False)])
def test_an_unfinished_run_is_told_to_finish_it_with_resume(tiny_run, tmp_path, capsys, which, best):
    """An interrupted run was told it is "not a finished run" and no more; now the line says how to finish it,
    and, where the run has a best evaluation, that --which best exports it now."""
    run = unfinished(tiny_run, tmp_path / "run", best)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert export.cli([str(run), str(tmp_path / "out"), "--which", which]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"export.py: error: RUN_DIR {run} is an unfinished train.py run (checkpoint.pt at step 2, "
                          f"no results.json yet)") and err.count("\n") == 1, err
    assert f"finish it with `python train.py --resume {run}`" in err, err
    assert ("--which best" in err) == (which == "final" and best), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_unfinished_runs_best_evaluation_exports_as_the_finished_runs_does(tiny_run, tmp_path, capsys):
    """--which best needs no results.json: the configuration is checkpoint.pt's, the same the run finishes with;
    the line names the step, says the run is unfinished and how to finish it."""
    run = unfinished(tiny_run, tmp_path / "run")
    assert export.cli([str(run), str(tmp_path / "early")]) == 0
    said = capsys.readouterr().out
    assert "best/adapter.safetensors (step 2, metrics" in said and f"python train.py --resume {run}" in said, said
    assert export.cli([str(tiny_run), str(tmp_path / "finished")]) == 0
    early, finished = (read_safetensors(tmp_path / name / "model.safetensors") for name in ("early", "finished"))
    assert early.keys() == finished.keys() and all(torch.equal(early[k], finished[k]) for k in early)


def test_which_final_names_the_step_and_metrics_it_exports(lora_run, tmp_path, capsys):
    """--which final printed no step or metrics; they are results.json's "final" entry (the final adapter file
    keeps none)."""
    assert export.cli([str(lora_run), str(tmp_path / "out"), "--which", "final"]) == 0
    said = capsys.readouterr().out
    assert f"from {lora_run / 'adapter.safetensors'} (step 9, metrics {{\"dev\": {{\"accuracy\": 0.5}}}})" in said, said


def test_the_docstring_says_every_sentence_whole():
    """Each prose paragraph of export.py's docstring (the indented command block aside) ends a sentence: none
    ends cut off, as "..., then written" would."""
    paragraphs = [p for p in export.__doc__.strip().split("\n\n") if not p.startswith(" ")]
    assert len(paragraphs) >= 4
    assert all(p.rstrip().endswith((".", ":")) for p in paragraphs), [p[-60:] for p in paragraphs]
