"""FouRA's rank gate: padding never enters it, so a sequence's output does not depend on
what it is batched with; the gate is the documented formula on the real tokens."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import example, given, settings, strategies as st

import spectral_ft as sf
from encoder.model import SequenceClassifier, tiny_config

F64 = torch.float64


@torch.no_grad()
def foura(i=7, o=5, r=3, transform="dct", seed=0, gate=True):
    """A float64 FouRA with every trainable tensor random (B non-zero, gate away from its init)."""
    torch.manual_seed(seed)
    adapter = sf.FouRA(nn.Linear(i, o, dtype=F64), r=r, transform=transform, gate=gate)
    for name, p in adapter.named_parameters():
        if not name.startswith("base."):
            p.normal_()
    return adapter


def run(adapter, x, token_mask=None):
    adapter.token_mask.mask = token_mask  # as a model's forward sets it
    with torch.no_grad():
        return adapter(x)


def pad(x, amount, seed):
    """x (B, T, in) followed by `amount` tokens of noise, and the (B, T + amount) mask."""
    noise = 10 * torch.randn(x.shape[0], amount, x.shape[2], generator=torch.Generator().manual_seed(seed), dtype=F64)
    mask = torch.cat([torch.ones(x.shape[:2], dtype=torch.long), torch.zeros(x.shape[0], amount, dtype=torch.long)], 1)
    return torch.cat([x, noise], dim=1), mask


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 8), amount=st.integers(1, 8), transform=st.sampled_from(["dct", "dft"]),
       seed=st.integers(0, 10_000))
@example(T=1, amount=1, transform="dft", seed=449)  # one real token, the draw a noise-only test failed
def test_foura_output_at_real_tokens_does_not_depend_on_padding(T, amount, transform, seed):
    """With the mask, padding of any content (here 10x louder noise) changes nothing at the real tokens.
    That the mask is what keeps it out is stated exactly by the next test, not by a noise draw: loud padding
    saturates the unmasked softmax, and one real token's gate then barely moves (a noise-only check failed about 5 runs in 40)."""
    adapter = foura(transform=transform, seed=seed)
    x = torch.randn(2, T, 7, generator=torch.Generator().manual_seed(seed), dtype=F64)
    alone = run(adapter, x)
    padded, mask = pad(x, amount, seed + 1)
    np.testing.assert_allclose(run(adapter, padded, mask)[:, :T], alone, rtol=1e-12, atol=1e-12)


def entropy_by_hand(z):
    """H (B, r) of softmax over the tokens of z (B, T, r), in nats."""
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -(p * np.log(p)).sum(axis=1)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 8), copies=st.integers(1, 4), seed=st.integers(0, 10_000))
@example(T=1, copies=1, seed=449)
def test_without_the_mask_padding_enters_the_gate_and_with_it_does_not(T, copies, seed):
    """Padding made of `copies` repeats of the sequence gives every token 1/(copies + 1) of its softmax
    weight: unmasked, each channel's entropy grows by exactly log(copies + 1), whatever z is (also for
    one token, whose own entropy is 0); masked, the gate is the sequence's own."""
    adapter = foura(seed=seed)
    z = torch.randn(2, T, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)  # (B, T, r)
    padded = z.repeat(1, copies + 1, 1)  # (B, (copies + 1) T, r)
    mask = (torch.arange(padded.shape[1]) < T).long().expand(2, -1)
    a, b = adapter.gate_scale.detach().numpy(), adapter.gate_shift.detach().numpy()
    unmasked = 1 / (1 + np.exp(-a * (entropy_by_hand(z.numpy()) + np.log(copies + 1) - b)))  # (B, r)
    np.testing.assert_allclose(adapter.rank_gate(padded).detach()[:, 0], unmasked, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(adapter.rank_gate(padded, mask).detach(), adapter.rank_gate(z).detach(),
                               rtol=1e-12, atol=1e-14)


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 7), min_size=2, max_size=4), extra=st.integers(0, 4),
       seed=st.integers(0, 10_000))
def test_foura_sequence_batched_with_longer_ones_gives_its_output_alone(lengths, extra, seed):
    adapter = foura(seed=seed)
    g = torch.Generator().manual_seed(seed)
    sequences = [torch.randn(1, T, 7, generator=g, dtype=F64) for T in lengths]
    longest = max(lengths) + extra
    batch = torch.cat([pad(s, longest - s.shape[1], seed + k)[0] for k, s in enumerate(sequences)])  # (B, longest, 7)
    mask = (torch.arange(longest) < torch.tensor(lengths)[:, None]).long()  # (B, longest)
    out = run(adapter, batch, mask)
    for k, s in enumerate(sequences):
        np.testing.assert_allclose(out[k, :lengths[k]], run(adapter, s)[0], rtol=1e-12, atol=1e-12)


def gate_by_hand(adapter, z, mask):
    """g_i = sigmoid(a_i (H_i - b_i)), H_i = -Σ_t p_t log p_t, p = softmax of z[:, i] over the real tokens."""
    a, b = adapter.gate_scale.detach().numpy(), adapter.gate_shift.detach().numpy()
    gates = []
    for zb, mb in zip(z.numpy(), mask.numpy()):
        real = zb[mb.astype(bool)]  # (T_real, r)
        p = np.exp(real) / np.exp(real).sum(axis=0)
        H = -(p * np.log(p)).sum(axis=0)  # (r,), in nats, not divided by log T
        gates.append(1 / (1 + np.exp(-a * (H - b))))
    return np.stack(gates)[:, None, :]  # (B, 1, r)


@settings(max_examples=25, deadline=None)
@given(T=st.integers(2, 9), r=st.integers(1, 4), seed=st.integers(0, 10_000), data=st.data())
def test_foura_gate_equals_the_documented_formula_on_the_real_tokens(T, r, seed, data):
    adapter = foura(i=6, o=6, r=r, seed=seed)
    z = torch.randn(3, T, r, generator=torch.Generator().manual_seed(seed), dtype=F64)
    lengths = data.draw(st.lists(st.integers(1, T), min_size=3, max_size=3))
    mask = (torch.arange(T) < torch.tensor(lengths)[:, None]).long()
    expected = gate_by_hand(adapter, z, mask)
    np.testing.assert_allclose(adapter.rank_gate(z, mask).detach(), expected, rtol=1e-12, atol=1e-12)
    everything = torch.ones(3, T, dtype=torch.bool)
    np.testing.assert_allclose(adapter.rank_gate(z).detach(), gate_by_hand(adapter, z, everything), rtol=1e-12)
    np.testing.assert_allclose(adapter.rank_gate(z, everything).detach(), adapter.rank_gate(z).detach(), rtol=1e-15)


def test_foura_gate_of_one_real_token_has_zero_entropy():
    adapter = foura(r=2)
    z = torch.randn(1, 4, 2, dtype=F64)
    g = adapter.rank_gate(z, torch.tensor([[1, 0, 0, 0]]))
    np.testing.assert_allclose(g.detach(), torch.sigmoid(-adapter.gate_scale * adapter.gate_shift).detach()[None, None])


def test_foura_padding_gets_no_gradient_through_the_gate_and_gradients_stay_finite():
    adapter = foura(r=3)
    z = torch.randn(2, 6, 3, dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    adapter.rank_gate(z, mask).sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(adapter.gate_scale.grad).all()
    assert torch.equal(z.grad[0, 3:], torch.zeros(3, 3, dtype=F64))
    assert torch.equal(z.grad[1, 1:], torch.zeros(5, 3, dtype=F64))
    assert z.grad[0, :3].abs().max() > 0


def test_foura_gradients_with_a_mask_match_finite_differences():
    adapter = foura(i=5, o=4, r=2)
    x, mask = pad(torch.randn(2, 3, 5, dtype=F64), 2, seed=3)
    adapter.token_mask.mask = mask
    names = [n for n, _ in adapter.named_parameters() if not n.startswith("base.")]
    values = tuple(dict(adapter.named_parameters())[n].detach().clone().requires_grad_() for n in names)

    def loss(*tensors):
        return (torch.func.functional_call(adapter, dict(zip(names, tensors)), (x,)) ** 2).sum()

    assert torch.autograd.gradcheck(loss, values, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_foura_gate_is_the_same_function_in_training_and_eval():
    adapter = foura()
    x, mask = pad(torch.randn(2, 4, 7, dtype=F64), 3, seed=0)
    np.testing.assert_array_equal(run(adapter.train(), x, mask), run(adapter.eval(), x, mask))


def test_foura_rejects_a_mask_of_the_wrong_length_and_an_input_without_tokens():
    adapter = foura()
    with pytest.raises(ValueError, match="token_mask"):
        run(adapter, torch.randn(2, 4, 7, dtype=F64), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"\(\.\.\., T, in\)"):
        run(adapter, torch.randn(7, dtype=F64))


@pytest.mark.parametrize("transform", ["dct", "dft"])
def test_foura_without_gate_ignores_the_mask_and_merges(transform):
    adapter = foura(transform=transform, gate=False)
    x, mask = pad(torch.randn(2, 4, 7, dtype=F64), 3, seed=0)
    out = run(adapter, x, mask)
    np.testing.assert_allclose(out, run(adapter, x), rtol=1e-13, atol=1e-13)
    with torch.no_grad():
        np.testing.assert_allclose(adapter.merge()(x), out, rtol=1e-12, atol=1e-12)
    gated = foura(transform=transform)
    for fn in (gated.delta_weight, gated.merge):
        with pytest.raises(ValueError, match="gate=True"):
            fn()


# ----------------------------------------------------------------------------- in the encoder


def encoder_with_foura(model_type, seed):
    torch.manual_seed(seed)
    model = SequenceClassifier(tiny_config(model_type, 50), num_labels=3).to(F64).eval()
    sf.inject(model, "foura", r=4, gate=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, adapter in sf.adapters(model):
            for name, p in adapter.named_parameters():
                if not name.startswith("base."):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    return model


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@settings(max_examples=4, deadline=None)
@given(lengths=st.lists(st.integers(2, 9), min_size=1, max_size=3), extra=st.integers(1, 6), seed=st.integers(0, 1000))
def test_encoder_hidden_states_and_logits_do_not_depend_on_padding(model_type, lengths, extra, seed):
    model = encoder_with_foura(model_type, seed)
    pad_id = model.config.pad_token_id
    g = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(2, 50, (T,), generator=g) for T in lengths]
    longest = max(lengths) + extra
    ids = torch.full((len(lengths), longest), pad_id)
    for k, s in enumerate(sequences):
        ids[k, :len(s)] = s
    mask = (ids != pad_id).long()
    with torch.no_grad():
        hidden, logits = model.encode(ids, mask), model(ids, mask)
        for k, s in enumerate(sequences):
            one = s[None]
            alone_mask = torch.ones_like(one)
            np.testing.assert_allclose(hidden[k, :len(s)], model.encode(one, alone_mask)[0], rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(logits[k], model(one, alone_mask)[0], rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(logits[k], model(one)[0], rtol=1e-10, atol=1e-10)  # no mask: every token real
    layers = [adapter for _, adapter in sf.adapters(model)]
    assert all(adapter.token_mask is model.token_mask for adapter in layers)  # one mask, set once per forward
    assert model.token_mask.mask is None  # the last call had no mask: the encoder set it, not left the old one


def test_inject_gives_the_model_one_token_mask_for_all_its_foura_layers():
    model = SequenceClassifier(tiny_config("bert", 50), num_labels=2)
    first = sf.inject(model, "foura", targets=("query",), r=2)
    shared = model.token_mask
    assert isinstance(shared, sf.TokenMask) and shared.mask is None
    sf.inject(model, "foura", targets=("value",), r=2)  # a second inject joins the first one's mask
    layers = [adapter for _, adapter in sf.adapters(model)]
    assert len(layers) == 2 * len(first) and all(adapter.token_mask is shared for adapter in layers)
    assert "token_mask" not in sf.hyperparameters("foura")  # shared state, not a setting (as VeRA's pair)
    with pytest.raises(ValueError, match="token_mask a TokenMask or None"):
        sf.FouRA(nn.Linear(4, 4), r=2, token_mask=torch.ones(2, 3))
    untouched = SequenceClassifier(tiny_config("bert", 50), num_labels=2)
    with pytest.raises(ValueError, match="r=999"):
        sf.inject(untouched, "foura", r=999)  # no layer fits: the model is left as it was
    assert not hasattr(untouched, "token_mask")


def test_the_encoder_sets_the_mask_once_without_walking_its_modules():
    model = encoder_with_foura("roberta", seed=0)
    walked = []
    model.modules = model.named_modules = lambda *a, **k: walked.append(1) or iter(())  # a walk is recorded
    ids, mask = torch.randint(2, 50, (2, 6)), torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    with torch.no_grad():
        model(ids, mask)
    assert walked == [] and model.token_mask.mask is mask


@pytest.mark.parametrize("scope", ["model", "adapters"])
def test_compiled_encoder_reads_each_batchs_mask(scope):
    """Under torch.compile (dynamo and AOTAutograd, backend aot_eager) the mask is an input of every call,
    never a constant of the first one: batches with other padding give the plain model's logits."""
    torch._dynamo.reset()
    plain = encoder_with_foura("roberta", seed=1)
    compiled = encoder_with_foura("roberta", seed=1)
    for module in [compiled] if scope == "model" else [a for _, a in sf.adapters(compiled)]:
        module.compile(backend="aot_eager")
    ids = torch.randint(2, 50, (3, 8), generator=torch.Generator().manual_seed(1))
    for lengths in ([8, 5, 2], [3, 8, 6], [8, 8, 8]):
        mask = (torch.arange(8) < torch.tensor(lengths)[:, None]).long()
        with torch.no_grad():
            torch.testing.assert_close(compiled(ids, mask), plain(ids, mask), rtol=1e-12, atol=1e-12)


class PlainModel(nn.Module):
    """A model that knows nothing of FouRA's mask: forward(x, attention_mask) never touches it."""

    def __init__(self):
        super().__init__()
        self.query = nn.Linear(7, 7, dtype=F64)

    def forward(self, x, attention_mask=None):
        return self.query(x)


def test_readmes_forward_pre_hook_feeds_the_mask_to_another_model():
    torch.manual_seed(0)
    model = PlainModel()
    sf.inject(model, "foura", targets=("query",), r=3)
    with torch.no_grad():
        model.query.foura_B.normal_()
    set_mask = lambda model, args, kwargs: setattr(model.token_mask, "mask", kwargs.get("attention_mask"))
    model.register_forward_pre_hook(set_mask, with_kwargs=True)
    x = torch.randn(2, 3, 7, dtype=F64)
    padded, mask = pad(x, 4, seed=0)
    with torch.no_grad():
        np.testing.assert_allclose(model(padded, attention_mask=mask)[:, :3], model(x), rtol=1e-12, atol=1e-12)
        assert model.token_mask.mask is None  # the last call passed none
