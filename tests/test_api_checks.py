"""
The Python API refuses bad input with a ValueError naming the argument, and
`inject`'s default targets reach BERT/RoBERTa and DeBERTa attention alike.

Each refusal leaves the model as it was. Integer hyperparameters accept any integer type
but bool (numpy.int64 from a config array, say) and are stored as Python ints.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import spectral_ft
from spectral_ft import METHODS, adapter_state_dict, adapters, inject, load_adapter_state_dict

ALL = list(METHODS)
# Hyperparameters that fit every target of the toy models below (min(in, out) = 4)
SMALL = {"lora": dict(r=2), "dora": dict(r=2), "oft": dict(r=2), "bitfit": dict(), "masked_lora": dict(n=4, r=3),
         "vera": dict(r=3), "fourierft": dict(n=5), "fora": dict(n=4, r=3),
         "dfora": dict(n=4, r=3), "loca": dict(n=5), "foura": dict(r=2, gate=False),
         "spectral_a": dict(r=2), "spectral_r": dict(r=2)}
COUNTED = [(m, k) for m in ALL for k in ("r", "n") if k in spectral_ft.hyperparameters(m)]  # integer counts


def raises_with(substrings, fn, *args, **kwargs):
    with pytest.raises(ValueError) as error:
        fn(*args, **kwargs)
    for s in substrings:
        assert str(s) in str(error.value), f"{s!r} missing from: {error.value}"
    return str(error.value)


def attention(names, d=6, dv=4):
    """A toy encoder: two layers of attention.self.<names> plus attention.output.dense and a head."""
    torch.manual_seed(0)
    model = nn.Module()
    model.layer = nn.ModuleList()
    for _ in range(2):
        layer = nn.Module()
        layer.attention = nn.Module()
        layer.attention.self = nn.Module()
        for name in names:
            setattr(layer.attention.self, name, nn.Linear(d, dv if name.startswith("value") else d))
        layer.attention.output = nn.Module()
        layer.attention.output.dense = nn.Linear(dv, d)
        model.layer.append(layer)
    model.classifier = nn.Linear(d, 2)
    return model.double()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()], \
        [p.requires_grad for p in model.parameters()]


def unchanged(model, before):
    state, types, grads = snapshot(model)
    return (types == before[1] and grads == before[2] and state.keys() == before[0].keys()
            and all(torch.equal(state[k], before[0][k]) for k in state))


# -----------------------------------------------------------------------------
# Default targets: BERT/RoBERTa's query/value and DeBERTa's query_proj/value_proj


@pytest.mark.parametrize("method", ALL)
def test_default_targets_reach_bert_and_deberta_attention(method):
    """q and v, unless the method's class names its own (BitFit: every linear layer but the head)."""
    own = spectral_ft.declared(method, "default_targets")
    for names in (("query", "key", "value"), ("query_proj", "key_proj", "value_proj")):
        model = attention(names)
        expected = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                    and any(n == t or n.endswith("." + t) for t in own)]
        assert inject(model, method, **SMALL[method]) == expected
        assert method == "bitfit" or expected == [f"layer.{i}.attention.self.{n}" for i in (0, 1) for n in names
                                                  if n != names[1]]  # q and v
    assert spectral_ft.DEFAULT_TARGETS == ("query", "value", "query_proj", "value_proj")
    assert own == spectral_ft.DEFAULT_TARGETS or method == "bitfit"


def test_default_targets_match_whole_name_components_only():
    """'query' does not reach 'subquery' or 'query_proj_extra'; 'value_proj' not 'value_projection'."""
    model = attention(("query", "subquery", "query_proj_extra", "value_projection", "value"))
    assert sorted(inject(model, "lora", r=2)) == sorted(f"layer.{i}.attention.self.{n}" for i in (0, 1)
                                                        for n in ("query", "value"))


# -----------------------------------------------------------------------------
# targets


BAD_TARGETS = [3, ("query", 3),  # (None: the method's default targets)
               ["query", None], (b"query",), ("",), ("query", "")]


@pytest.mark.parametrize("targets", BAD_TARGETS, ids=repr)
def test_inject_rejects_targets_that_are_not_name_suffixes(targets):
    model = attention(("query", "value"))
    before = snapshot(model)
    raises_with(["targets", "e.g."], inject, model, "lora", targets=targets, r=2)
    assert unchanged(model, before)


@settings(max_examples=20, deadline=None)
@given(targets=st.lists(st.one_of(st.integers(), st.floats(), st.none(), st.binary(max_size=3)), min_size=1,
                        max_size=3).map(lambda bad: ["query", *bad]))
def test_inject_rejects_any_non_string_target(targets):
    raises_with(["targets"], inject, attention(("query", "value")), "lora", targets=targets, r=2)


# -----------------------------------------------------------------------------
# Integer hyperparameters: any integer type but bool


INTEGER_TYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("method,name", COUNTED)
@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(INTEGER_TYPES), seed=st.integers(0, 1000))
def test_numpy_integer_counts_are_accepted_as_python_ints(method, name, kind, seed):
    kwargs = {**SMALL[method], name: kind(SMALL[method][name])}
    torch.manual_seed(seed)
    adapter = METHODS[method](nn.Linear(6, 5, dtype=torch.float64), **kwargs)
    torch.manual_seed(seed)
    plain = METHODS[method](nn.Linear(6, 5, dtype=torch.float64), **SMALL[method])
    assert type(getattr(adapter, name)) is int and getattr(adapter, name) == SMALL[method][name]
    assert adapter_state_dict(adapter).keys() == adapter_state_dict(plain).keys()
    for key, tensor in adapter_state_dict(adapter).items():
        assert torch.equal(tensor, adapter_state_dict(plain)[key])


@pytest.mark.parametrize("method,name", COUNTED)
@settings(max_examples=8, deadline=None)
@given(value=st.sampled_from([True, False, np.True_, 2.0, np.float64(2.0), np.float32(3.0), 2.5, "2", None,
                              torch.tensor(2.0)]))
def test_float_bool_and_other_counts_are_rejected_naming_the_argument(method, name, value):
    message = raises_with([name, "integer"], METHODS[method], nn.Linear(6, 5), **{**SMALL[method], name: value})
    assert message.startswith(name)
    model = attention(("query", "value"))
    before = snapshot(model)
    raises_with([name, "integer"], inject, model, method, **{**SMALL[method], name: value})
    assert unchanged(model, before)


# -----------------------------------------------------------------------------
# Injecting twice


@pytest.mark.parametrize("method", ALL)
@settings(max_examples=3, deadline=None)
@given(second=st.sampled_from(ALL), targets=st.sampled_from([("query",), ("value",), ("query", "value")]))
def test_injecting_into_adapted_layers_names_them_and_changes_nothing(method, second, targets):
    model = attention(("query", "value"))
    names = inject(model, method, targets=targets, **SMALL[method])
    before = snapshot(model)
    message = raises_with(["already adapted", f"({method})", *names], inject, model, second,
                          targets=("query", "value"), **SMALL[second])
    assert "merge" in message
    assert unchanged(model, before)


def test_other_layers_can_be_adapted_after_a_first_inject():
    model = attention(("query", "key", "value"))
    inject(model, "lora", targets=("query",), r=2)
    assert inject(model, "vera", targets=("key",), r=3) == ["layer.0.attention.self.key", "layer.1.attention.self.key"]
    assert {a.method for _, a in adapters(model)} == {"lora", "vera"}


# -----------------------------------------------------------------------------
# load_adapter_state_dict: tensors only, finite


@pytest.mark.parametrize("method", ALL)
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_loading_a_non_tensor_value_names_the_key(method, data):
    model = attention(("query", "value"))
    inject(model, method, **SMALL[method])
    state = adapter_state_dict(model)
    key = data.draw(st.sampled_from(sorted(state)))
    bad = data.draw(st.sampled_from([state[key].tolist(), state[key].numpy(), 1.0, None, "tensor"]))
    before = snapshot(model)
    raises_with([repr(key), "not a tensor"], load_adapter_state_dict, model, {**state, key: bad})
    assert unchanged(model, before)


@pytest.mark.parametrize("method", ALL)
@settings(max_examples=4, deadline=None)
@given(data=st.data(), value=st.sampled_from([float("inf"), float("-inf"), float("nan")]))
def test_loading_a_non_finite_tensor_names_the_key(method, data, value):
    model = attention(("query", "value"))
    inject(model, method, **SMALL[method])
    state = adapter_state_dict(model)
    key = data.draw(st.sampled_from(sorted(k for k, v in state.items() if v.is_floating_point())))
    bad = state[key].clone()
    bad.view(-1)[data.draw(st.integers(0, bad.numel() - 1))] = value
    before = snapshot(model)
    raises_with([repr(key), "non-finite"], load_adapter_state_dict, model, {**state, key: bad})
    assert unchanged(model, before)


def test_loading_something_else_than_a_dict_is_refused():
    model = attention(("query", "value"))
    inject(model, "lora", r=2)
    raises_with(["state", "dict", "list"], load_adapter_state_dict, model, list(adapter_state_dict(model).values()))


# -----------------------------------------------------------------------------
# Zero-sized layers


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("method", ALL)
@settings(max_examples=4, deadline=None)
@given(shape=st.sampled_from([(0, 4), (4, 0), (0, 0)]))
def test_zero_sized_layers_are_refused_naming_base(method, shape):
    message = raises_with(["base", f"nn.Linear({shape[0]}, {shape[1]})", ">= 1"], METHODS[method],
                          nn.Linear(*shape), **SMALL[method])
    assert message.startswith("base")
    model = nn.Module()
    model.query, model.value = nn.Linear(6, 6), nn.Linear(*shape)
    before = snapshot(model)
    raises_with(["'value'", f"nn.Linear({shape[0]}, {shape[1]})"], inject, model, method, **SMALL[method])
    assert unchanged(model, before)
