"""Exact maths of every layer strategy, checked against hand computation."""

from __future__ import annotations

import pytest
import torch

from bertprobe.errors import LayerSpecError
from bertprobe.layer_spec import NAMED_STRATEGIES, LayerSpec, resolve_strategy
from bertprobe.layers import LayerCombiner, ScalarMix, select_layers
from bertprobe.model import gather_words

RESOLUTIONS = [
    ("embeddings", 12, (0,), "concat"),
    ("last", 12, (12,), "concat"),
    ("second_last", 12, (11,), "concat"),
    ("last4sum", 12, (12, 11, 10, 9), "sum"),
    ("last4weighted", 12, (9, 10, 11, 12), "weighted"),
    ("last4concat", 12, (12, 11, 10, 9), "concat"),
    ("allweighted", 12, tuple(range(1, 13)), "weighted"),
    ("allweighted", 6, tuple(range(1, 7)), "weighted"),
    ("allweighted", 24, tuple(range(1, 25)), "weighted"),
    ("last", 6, (6,), "concat"),
    ("-1,-2,-3,-4:concat", 6, (6, 5, 4, 3), "concat"),
    ("0-12:weighted", 12, tuple(range(0, 13)), "weighted"),
    ("9--1:mean", 12, (9, 10, 11, 12), "mean"),
    ("all+emb:sum", 2, (0, 1, 2), "sum"),
    ("0,6", 6, (0, 6), "concat"),
    ("12-9:concat", 12, (12, 11, 10, 9), "concat"),  # a range that counts down keeps its order
    ("-1--4:concat", 12, (12, 11, 10, 9), "concat"),
    ("-13", 12, (0,), "concat"),  # the lowest negative index is the embeddings
]


@pytest.mark.parametrize(("name", "num_layers", "indices", "combine"), RESOLUTIONS)
def test_named_and_general_strategies_resolve_to_hidden_state_indices(name, num_layers, indices, combine):
    resolved = resolve_strategy(name, num_layers)
    assert resolved.indices == indices
    assert resolved.combine == combine


def test_every_named_strategy_is_tested_above():
    assert set(NAMED_STRATEGIES) == {
        "embeddings", "last", "second_last", "last4sum", "last4weighted", "last4concat", "allweighted"
    }  # fmt: skip
    assert set(NAMED_STRATEGIES) <= {name for name, *_ in RESOLUTIONS}


@pytest.mark.parametrize("text", ["last5", "-1:max", "1,,2", "layer3", ""])
def test_unknown_strategy_lists_the_valid_ones(text):
    with pytest.raises(LayerSpecError) as error:
        LayerSpec.parse(text)
    message = str(error.value)
    assert "last4concat" in message and "concat" in message and "weighted" in message


@pytest.mark.parametrize(("text", "bad"), [("13", "13"), ("-14", "-14"), ("0-13:sum", "13")])
def test_out_of_range_layer_names_the_valid_range(text, bad):
    with pytest.raises(LayerSpecError, match=rf"layer {bad} .*0\.\.12"):
        resolve_strategy(text, 12)


def test_a_layer_named_twice_is_refused():
    with pytest.raises(LayerSpecError, match="twice"):
        resolve_strategy("-1,12:sum", 12)


def test_output_width_is_k_times_hidden_only_for_concat():
    assert resolve_strategy("last4concat", 12).output_dim(768) == 3072
    for name in ("last4sum", "last4weighted", "allweighted", "last", "embeddings"):
        assert resolve_strategy(name, 12).output_dim(768) == 768


def _known_states(num_layers: int = 4, batch: int = 2, length: int = 3, hidden: int = 5):
    """Hidden state ``i`` is filled with distinct values that encode ``i``."""
    base = torch.arange(batch * length * hidden, dtype=torch.float32).reshape(batch, length, hidden)
    return tuple(base + 1000.0 * i for i in range(num_layers + 1))


def test_select_layers_stacks_in_the_order_given():
    states = _known_states()
    stacked = select_layers(states, (4, 1, 3))
    assert stacked.shape == (2, 3, 3, 5)
    for slot, layer in enumerate((4, 1, 3)):
        assert torch.equal(stacked[:, :, slot], states[layer])


def test_concat_puts_layers_side_by_side_in_order():
    states = _known_states()
    layers = resolve_strategy("last4concat", 4)  # (4, 3, 2, 1)
    combined = LayerCombiner(layers)(select_layers(states, layers.indices))
    expected = torch.cat([states[4], states[3], states[2], states[1]], dim=-1)
    assert torch.equal(combined, expected)


def test_sum_and_mean_are_exact():
    states = _known_states()
    stacked = select_layers(states, resolve_strategy("last4sum", 4).indices)
    assert torch.equal(
        LayerCombiner(resolve_strategy("last4sum", 4))(stacked), states[1] + states[2] + states[3] + states[4]
    )
    mean = LayerCombiner(resolve_strategy("-1,-2,-3,-4:mean", 4))(stacked)
    assert torch.allclose(mean, (states[1] + states[2] + states[3] + states[4]) / 4)


def test_single_layer_strategies_return_that_layer_and_layer_zero_is_embeddings():
    states = _known_states()
    for name, layer in (("embeddings", 0), ("last", 4), ("second_last", 3)):
        resolved = resolve_strategy(name, 4)
        assert torch.equal(LayerCombiner(resolved)(select_layers(states, resolved.indices)), states[layer])


def test_weighted_sum_is_gamma_times_softmax_weighted_sum():
    states = _known_states()
    resolved = resolve_strategy("last4weighted", 4)  # (1, 2, 3, 4)
    combiner = LayerCombiner(resolved)
    raw = torch.tensor([0.5, -1.0, 2.0, 0.0])
    with torch.no_grad():
        combiner.mix.scalar_weights.copy_(raw)
        combiner.mix.gamma.fill_(1.5)
    combined = combiner(select_layers(states, resolved.indices))
    exp = torch.exp(raw.double())
    weights = exp / exp.sum()
    expected = 1.5 * sum(weights[k] * states[layer].double() for k, layer in enumerate((1, 2, 3, 4)))
    assert torch.allclose(combined.double(), expected, rtol=1e-6)
    learned = combiner.learned_weights()
    assert learned["layers"] == [1, 2, 3, 4]
    assert learned["softmax_weights"] == pytest.approx(weights.tolist())  # each layer's own weight, in order
    assert learned["gamma"] == pytest.approx(1.5)


def test_scalar_mix_starts_as_the_plain_mean_and_learns():
    mix = ScalarMix(3)
    stacked = torch.randn(2, 4, 3, 6)
    assert torch.allclose(mix(stacked), stacked.mean(dim=-2), atol=1e-6)
    assert torch.allclose(mix.normalized_weights().sum(), torch.tensor(1.0))
    mix(stacked).pow(2).sum().backward()
    assert mix.scalar_weights.grad is not None and mix.gamma.grad is not None


def test_non_weighted_combiners_have_no_parameters():
    for name in ("last4concat", "last4sum", "last", "-1,-2:mean"):
        assert list(LayerCombiner(resolve_strategy(name, 4)).parameters()) == []
        assert LayerCombiner(resolve_strategy(name, 4)).learned_weights() is None


def test_gather_words_picks_first_sub_token_rows_of_each_layer():
    states = _known_states()
    positions = torch.tensor([[1, 2], [0, 0]])
    gathered = gather_words(states, (2, 0), positions)
    assert gathered.shape == (2, 2, 2, 5)
    assert torch.equal(gathered[0, 0, 0], states[2][0, 1])
    assert torch.equal(gathered[0, 1, 1], states[0][0, 2])
    assert torch.equal(gathered[1, 1, 0], states[2][1, 0])


def test_hidden_state_zero_is_the_embedding_output(tiny_model_dir):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_model_dir).eval()
    input_ids = torch.tensor([[2, 7, 9, 3]])
    with torch.no_grad():
        states = model(input_ids, output_hidden_states=True).hidden_states
        embedded = model.embeddings(input_ids=input_ids)
    assert len(states) == model.config.num_hidden_layers + 1
    assert torch.equal(states[0], embedded)  # the assumption "embeddings" rests on ...
    resolved = resolve_strategy("embeddings", model.config.num_hidden_layers)
    combined = LayerCombiner(resolved)(select_layers(states, resolved.indices))
    assert torch.equal(combined, embedded)  # ... and what the strategy feeds the head
