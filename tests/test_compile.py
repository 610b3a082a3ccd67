"""
compile_in_place: what mode 'graph' torch.compiles before it captures (the adapted layers, or the
whole model). Speed lives in the loop and must change no number: in float64, a model compiled in place
gives the plain model's logits and every gradient (LoCA's locations through its own autograd.Function,
FouRA's gate over the real tokens, DFoRA's norm), and `uncompile` gives the plain forward back.

Most run dynamo and AOTAutograd (backend 'aot_eager'): the tracing, the graph breaks and the backward
that Inductor then compiles. One compiles a one-layer model with Inductor's CPU kernels (it needs a C++
compiler): its dropout must draw the plain model's masks. Inductor's GPU kernels are checked against eager
runs on the GPU (same losses and metrics, REPRODUCE.md §3a).
"""
import shutil

import pytest
import torch
from hypothesis import given, settings, strategies as st

import spectral_ft
from run.config import prepare_model
from run.step import compile_in_place, store_frozen_linears, uncompile
from encoder.model import SequenceClassifier, tiny_config
from test_step import VOCAB, nn_model

SMALL = {"dora": dict(r=4), "oft": dict(r=4), "masked_lora": dict(n=6, r=4), "vera": dict(r=8), "fourierft": dict(n=20), "fora": dict(n=6, r=4), "dfora": dict(n=6, r=4),
         "loca": dict(n=20), "foura": dict(r=4), "spectral_a": dict(r=4), "spectral_r": dict(r=4)}


def batch(seed, rows=3, length=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (rows, length), generator=g)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, length - 3:] = 0  # a padded row: FouRA's gate must leave the padding out
    return ids, mask, torch.zeros_like(ids), torch.randint(0, 2, (rows,), generator=g)


def logits_and_gradients(model, ids, mask, types, y):
    model.zero_grad(set_to_none=True)
    logits = model(ids, mask, types)
    torch.nn.functional.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def nonzero(model, seed):
    """Every trainable adapter tensor moved off its init (B = 0 would hide half the gradients)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and name.rpartition(".")[2] != "locations":
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("method", list(spectral_ft.METHODS))
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_compiled_adapters_equal_the_plain_model_in_float64(method, seed):
    torch._dynamo.reset()
    plain = nonzero(nn_model(method, seed=seed % 7, **SMALL.get(method, {})), seed)
    compiled = nn_model(method, seed=seed % 7, **SMALL.get(method, {}))
    compiled.load_state_dict(plain.state_dict())
    modules = compile_in_place(compiled, "adapters", backend="aot_eager")
    assert modules and all(isinstance(m, spectral_ft.Adapter) for m in modules)
    for step in range(2):  # the second pass replays the compiled program
        tensors = batch(seed + step)
        want_logits, want = logits_and_gradients(plain, *tensors)
        got_logits, got = logits_and_gradients(compiled, *tensors)
        torch.testing.assert_close(got_logits, want_logits, rtol=1e-12, atol=1e-12)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("scope", ["layers", "model"])
@pytest.mark.parametrize("method", ["loca", "foura"])
def test_the_whole_model_or_each_layer_compiled_equals_the_plain_model_in_float64(method, scope):
    torch._dynamo.reset()
    plain = nonzero(nn_model(method, **SMALL[method]), 3)
    compiled = nn_model(method, **SMALL[method])
    compiled.load_state_dict(plain.state_dict())
    modules = compile_in_place(compiled, scope, backend="aot_eager")
    assert modules == ([compiled] if scope == "model" else list(compiled.encoder.layer))
    if method == "loca":  # the location phase trains the other tensors: its own program
        schedules = [spectral_ft.LoCASchedule(m, B_a=1, B_l=1, T_s=10) for m in (plain, compiled)]
    for step in range(3):
        tensors = batch(11 + step)
        want_logits, want = logits_and_gradients(plain, *tensors)
        got_logits, got = logits_and_gradients(compiled, *tensors)
        torch.testing.assert_close(got_logits, want_logits, rtol=1e-12, atol=1e-12)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)
        if method == "loca":
            for schedule in schedules:
                schedule.step()


def test_uncompile_restores_the_plain_forward_and_none_compiles_nothing():
    model, keys = nn_model("lora"), list(nn_model("lora").state_dict())
    assert compile_in_place(model, "none") == []
    modules = compile_in_place(model, "adapters", backend="aot_eager")
    assert len(modules) == 2 * model.config.num_hidden_layers  # query and value of every layer
    assert all(m._compiled_call_impl is not None for m in modules)
    assert list(model.state_dict()) == keys  # compiled in place: checkpoints and adapters keep their names
    uncompile(modules)
    assert all(m._compiled_call_impl is None for m in modules)
    with pytest.raises(ValueError, match="compile scope must be one of adapters, layers, model, none"):
        compile_in_place(model, "everything")


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
@settings(max_examples=12, deadline=None)
@given(method=st.sampled_from(sorted(spectral_ft.METHODS)), dtype=st.sampled_from([torch.bfloat16, torch.float16]),
       seed=st.integers(0, 2**16))
def test_frozen_linears_stored_in_autocasts_dtype_change_no_bit(device, method, dtype, seed):
    """Speed stores the frozen backbone's nn.Linear layers in autocast's dtype (store_frozen_linears): autocast
    would cast them to the same values, so logits and every gradient stay equal bit for bit. The layers an
    adapter wraps, and whatever trains, keep their float32."""
    plain = nonzero(nn_model(method, seed=seed % 7, **SMALL.get(method, {})), seed).float().to(device)
    stored = nn_model(method, seed=seed % 7, **SMALL.get(method, {})).float().to(device)
    stored.load_state_dict(plain.state_dict())
    converted = store_frozen_linears(stored, dtype)
    wrapped = {id(m) for _, adapter in spectral_ft.adapters(stored) for m in adapter.modules()}
    for module in stored.modules():
        for p in module.parameters(recurse=False):
            low = isinstance(module, torch.nn.Linear) and id(module) not in wrapped and not p.requires_grad
            assert p.dtype == (dtype if low else torch.float32)
    assert len(converted) == len([m for m in stored.modules() if isinstance(m, torch.nn.Linear)
                                  and id(m) not in wrapped and not m.weight.requires_grad])
    assert converted or method == "full"
    ids, mask, types, y = (t.to(device) for t in batch(seed))
    with torch.autocast(device, dtype=dtype):
        want_logits, want = logits_and_gradients(plain, ids, mask, types, y)
        got_logits, got = logits_and_gradients(stored, ids, mask, types, y)
    assert torch.equal(got_logits, want_logits)
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("difference, shape", [("central", (48, 64)), ("forward", (48, 48)), ("backward", (64, 48))])
def test_torch_compile_traces_locas_function_whole(difference, shape):
    """dynamo takes _LoCADelta (forward and its custom backward) into the compiled graph, where Inductor fuses the
    location gradient's dozen small ops; the only breaks are around dct_matrix (cached, kept out of graphs). A
    lookup dynamo cannot trace in the backward (a class attribute read through the Function) once ran the whole
    Function eagerly, as did one DCT matrix passed twice (a square layer's C_out and C_in), which dynamo refuses."""
    torch._dynamo.reset()
    layer = spectral_ft.LoCA(torch.nn.Linear(*shape), n=20, difference=difference)
    explained = torch._dynamo.explain(layer)(torch.randn(2, 5, shape[0]))
    assert explained.break_reasons and all("dct_matrix" in r.reason for r in explained.break_reasons), \
        [r.reason.splitlines()[0] for r in explained.break_reasons]


INDUCTOR_CPU = any(shutil.which(c) for c in ("g++", "clang++", "c++"))  # Inductor compiles its CPU kernels with one


@pytest.mark.skipif(not INDUCTOR_CPU, reason="Inductor's CPU kernels need a C++ compiler (g++, clang++ or c++)")
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_inductor_draws_dropout_as_the_plain_model_does(seed):
    """Inductor's own dropout draws its masks from a Philox stream of its own: the same distribution, other masks,
    so a compiled run would end as a run with another seed does. compile_in_place has Inductor take them from
    torch's generator (fallback_random): with dropout on (the backbone's and LoRA's), each layer compiled by
    Inductor gives the plain model's logits and gradients in float64, the same seed before each."""
    torch._dynamo.reset()
    config = tiny_config("bert", VOCAB)
    config.num_hidden_layers = 1  # one layer's compilation: seconds on a CPU

    def model():
        torch.manual_seed(seed % 5)
        return prepare_model(SequenceClassifier(config, 2), "lora", ["query", "value"], dict(dropout=0.1)).double()

    plain, compiled = nonzero(model(), seed), model()
    compiled.load_state_dict(plain.state_dict())
    assert config.hidden_dropout_prob > 0 and compile_in_place(compiled, "layers") == list(compiled.encoder.layer)
    tensors = batch(seed)
    torch.manual_seed(seed)
    want_logits, want = logits_and_gradients(plain.train(), *tensors)
    torch.manual_seed(seed)
    got_logits, got = logits_and_gradients(compiled.train(), *tensors)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-10, atol=1e-12)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)


def test_each_deberta_layer_compiled_equals_the_plain_model_in_float64():
    """DeBERTa's layers take the relative positions too, and FouRA's shared token mask is lifted inside them
    (encoder.model._project_positions): compiled layer by layer, logits and every gradient stay the plain ones."""
    from test_deberta import V3_TINY, padded_batch, tiny_deberta

    torch._dynamo.reset()
    options = dict(V3_TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # query_proj projects positions
    model = lambda: prepare_model(tiny_deberta(options, dtype=torch.float64).train(), "foura",
                                  ["query_proj", "value_proj"], SMALL["foura"])
    plain, compiled = nonzero(model(), 5), model()
    compiled.load_state_dict(plain.state_dict())
    assert compile_in_place(compiled, "layers", backend="aot_eager") == list(compiled.encoder.layer)
    y = torch.tensor([0, 1, 1])
    for step in range(2):
        ids, mask, types = padded_batch([9, 6, 4], 9, seed=step)
        want_logits, want = logits_and_gradients(plain, ids, mask, types, y)
        got_logits, got = logits_and_gradients(compiled, ids, mask, types, y)
        torch.testing.assert_close(got_logits, want_logits, rtol=1e-12, atol=1e-12)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)
