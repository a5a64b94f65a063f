"""Pooling, heads, collators, batching, the loss and the optimizer's schedule, on hand-made
tensors: each test states the number a wrong implementation would give instead."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bertprobe.alignment import EncodedWindow
from bertprobe.batching import (
    FeatureCollator,
    LengthGroupedBatches,
    SortedBatches,
    WindowCollator,
    WindowDataset,
    epoch_batch_sizes,
)
from bertprobe.config import RunConfig
from bertprobe.heads import BiLSTMTagger, build_head
from bertprobe.layer_spec import resolve_strategy
from bertprobe.model import ProbeModel, pool_tokens, row_loss
from bertprobe.optim import build_optimizer, describe_optimizer, parameter_groups

# ----------------------------------------------------------------------------- pooling


def test_first_and_mean_pooling_by_hand():
    # one layer, 2 inputs of 4 positions, hidden size 1; position t of input b holds 10 * b + t
    states = (torch.tensor([[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]]).unsqueeze(-1),)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # the last positions are padding
    first = pool_tokens(states, (0,), mask, "first")
    assert first.shape == (2, 1, 1, 1)
    assert first.flatten().tolist() == [0.0, 10.0]  # position 0 ([CLS]), never the last real token
    mean = pool_tokens(states, (0,), mask, "mean")
    # every real token counts once, [CLS] and [SEP] included, padding never: (0+1+2)/3, (10+11)/2
    assert mean.flatten().tolist() == pytest.approx([1.0, 10.5])


# ----------------------------------------------------------------------------- heads


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_bilstm_runs_in_float32_under_autocast_and_its_linear_layer_follows_autocast(dtype):
    """Under autocast the recurrence stays float32 (cuDNN would run it in fp16 whatever the
    autocast dtype); the classifier after it computes in the autocast dtype."""
    torch.manual_seed(0)
    head = BiLSTMTagger(input_dim=3, num_labels=2, hidden_size=4, num_layers=2, dropout=0.0).eval()
    seen = []
    head.lstm.register_forward_hook(lambda module, inputs, output: seen.append(output[0].data.dtype))
    words, mask = torch.randn(2, 5, 3, dtype=dtype), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        scores = head(words, mask)
    assert seen == [torch.float32] and scores.dtype == dtype
    with torch.no_grad():
        full = head(words.float(), mask)
    assert torch.allclose(scores.float(), full, atol=5e-2)


def test_the_bilstm_head_reads_both_directions_and_ignores_padding():
    torch.manual_seed(0)
    head = BiLSTMTagger(input_dim=3, num_labels=2, hidden_size=4, num_layers=1, dropout=0.0).eval()
    assert head.lstm.bidirectional and head.classifier.in_features == 2 * 4
    words = torch.randn(1, 3, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    changed = words.clone()
    changed[0, 2] += 1.0  # the last word
    with torch.no_grad():
        scores, scores_changed = head(words, mask), head(changed, mask)
        # the first word's scores see the last word only through the backward direction
        assert not torch.allclose(scores[0, 0], scores_changed[0, 0])
        # trailing padding, whatever its values, changes no real word's scores
        padded = torch.cat([words, torch.full((1, 2, 3), 7.0)], dim=1)
        padded_mask = torch.tensor([[True, True, True, False, False]])
        assert torch.allclose(head(padded, padded_mask)[0, :3], scores[0], atol=1e-6)


def test_build_head_takes_the_bilstm_depth_and_width():
    head = build_head("bilstm", 6, 3, lstm_hidden=5, lstm_layers=1, dropout=0.1)
    assert head.lstm.num_layers == 1 and head.lstm.hidden_size == 5 and head.lstm.input_size == 6
    assert build_head("bilstm", 6, 3, lstm_hidden=5, lstm_layers=3, dropout=0.1).lstm.num_layers == 3
    assert build_head("linear", 6, 3, lstm_hidden=5, lstm_layers=1, dropout=0.1).classifier.out_features == 3


# ----------------------------------------------------------------------------- collators and loss


def window(input_ids: list[int], positions: list[int], labels: list) -> EncodedWindow:
    return EncodedWindow(input_ids, None, positions, labels, sentence_index=0, word_offset=0)


def test_collators_pad_labels_with_minus_100_and_mask_real_rows():
    dataset = WindowDataset([window([2, 5, 6, 3], [1, 2], [1, 0]), window([2, 7, 3], [1], [2])])
    batch = WindowCollator(pad_token_id=0)([dataset[0], dataset[1]])
    assert batch["labels"].tolist() == [[1, 0], [2, -100]]  # never 0, a real class
    assert batch["word_mask"].tolist() == [[True, True], [True, False]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3], [2, 7, 3, 0]]
    items = [
        {"features": torch.ones(2, 1, 4), "labels": [0.5, 1.5], "window_index": 0},
        {"features": torch.ones(1, 1, 4), "labels": [2.5], "window_index": 1},
    ]
    features = FeatureCollator()(items)
    assert features["labels"].dtype == torch.float32  # regression targets stay real numbers
    assert features["labels"].tolist() == [[0.5, 1.5], [2.5, -100.0]]
    assert features["features"][1, 1].abs().sum() == 0 and features["word_mask"].tolist() == [[1, 1], [1, 0]]


def test_the_loss_is_the_mean_over_real_rows_only():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [50.0, -50.0]]])  # row (1, 1) is padding
    labels = torch.tensor([[0, 1], [1, -100]])
    mask = torch.tensor([[True, True], [True, False]])

    def nll(row: list[float], label: int) -> float:
        return -row[label] + math.log(sum(math.exp(value) for value in row))

    expected = (nll([2.0, 0.0], 0) + nll([0.0, 1.0], 1) + nll([1.0, 1.0], 1)) / 3  # a mean, not a sum
    assert row_loss(logits, labels, mask, regression=False).item() == pytest.approx(expected)
    targets = torch.tensor([[1.0, 2.0], [4.0, -100.0]])
    scores = torch.tensor([[[1.5], [2.0]], [[3.0], [99.0]]])
    # squared errors 0.25, 0, 1 over the real rows: the padded row's 99 never counts
    assert row_loss(scores, targets, mask, regression=True).item() == pytest.approx(1.25 / 3)


# ----------------------------------------------------------------------------- the frozen encoder


def test_a_frozen_encoder_stays_in_eval_mode_when_the_probe_trains():
    encoder = nn.Sequential(nn.Dropout(0.5))
    probe = ProbeModel(encoder, resolve_strategy("last", 2), nn.Linear(4, 2), frozen_encoder=True)
    probe.train()
    assert probe.training and probe.head.training and not encoder.training  # no dropout in frozen features
    tuned = ProbeModel(nn.Sequential(nn.Dropout(0.5)), resolve_strategy("last", 2), nn.Linear(4, 2), False)
    assert tuned.train().encoder.training


# ----------------------------------------------------------------------------- batching


def test_length_grouped_batches_cover_every_index_once_and_reshuffle_each_epoch():
    lengths = [3, 9, 1, 7, 5, 8, 2, 6, 4, 10, 11]
    sampler = LengthGroupedBatches(lengths, max_batch_size=3, seed=5, pool_batches=2)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first  # the order depends on (seed, epoch) alone: resuming repeats it
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    for batches in (first, second):
        assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
        assert len(batches) == len(sampler) == 4  # 11 = 3 + 3 + 3 + 2: the short batch is kept
        for batch in batches:  # each batch is cut from a length-sorted pool
            assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    orders = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        orders.add(tuple(len(batch) for batch in sampler))
    assert len(orders) > 1  # the batch order is shuffled too, so the short batch moves
    evaluation = list(SortedBatches(lengths, batch_size=4))
    assert [lengths[i] for batch in evaluation for i in batch] == sorted(lengths, reverse=True)


@pytest.mark.parametrize(
    ("count", "batch_size", "processes", "sizes"),
    [
        (11, 3, 1, [3, 3, 3, 2]),  # one process: full batches and one short one, as always
        (90, 8, 2, [8] * 11 + [2]),  # 12 batches already a multiple of 2
        (38, 4, 3, [4] * 8 + [2, 2, 1, 1]),  # 10 batches -> 12 = 4 rounds of 3: four share the last 6
        (33, 8, 3, [8, 8, 8, 3, 3, 3]),  # 5 -> 6 batches; the last three share the rest
        (5, 1, 2, [1, 1, 1, 2]),  # batch 1 and an odd count: one batch of 2, never a dropped window
        (3, 8, 3, [1, 1, 1]),
    ],
)
def test_epoch_batch_sizes_make_whole_rounds_of_every_window(count, batch_size, processes, sizes):
    assert epoch_batch_sizes(count, batch_size, processes) == sizes
    assert sum(sizes) == count and len(sizes) % processes == 0 and min(sizes) >= 1


def test_fewer_training_examples_than_processes_is_an_error():
    with pytest.raises(ValueError, match="3 processes need at least 3 training examples; there are 2"):
        epoch_batch_sizes(2, 8, 3)


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize(("count", "batch_size"), [(38, 4), (41, 7), (240, 8), (23, 5)])
def test_accelerate_shards_every_window_exactly_once_per_epoch(count, batch_size, processes):
    """Accelerate's own sharding of a batch sampler over N processes, run here process by
    process: every window reaches exactly one process once per epoch, and every process gets
    the number of batches ``len()`` promises (the learning-rate schedule counts on it)."""
    from accelerate.data_loader import BatchSamplerShard

    lengths = [(7 * i) % 13 + 1 for i in range(count)]
    sampler = LengthGroupedBatches(lengths, max_batch_size=batch_size, seed=3, processes=processes)
    for epoch in range(2 * processes):  # the short batch lands in every slot of a round sooner or later
        seen: list[int] = []
        for rank in range(processes):
            sampler.set_epoch(epoch)
            shard = BatchSamplerShard(sampler, num_processes=processes, process_index=rank)
            batches = list(shard)
            assert len(batches) == len(shard) == len(sampler) // processes
            seen += [index for batch in batches for index in batch]
        assert sorted(seen) == list(range(count))


# ----------------------------------------------------------------------------- optimizer


class _Probe(nn.Module):
    """The names the optimizer sees in a real probe: an encoder with a LayerNorm and a T5-style
    layer_norm, the scalar mix of layers, and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict(
            {"dense": nn.Linear(2, 2), "LayerNorm": nn.LayerNorm(2), "final_layer_norm": nn.LayerNorm(2)}
        )
        self.combiner = nn.Module()
        self.combiner.mix = nn.Module()
        self.combiner.mix.scalar_weights = nn.Parameter(torch.zeros(3))
        self.head = nn.Linear(2, 2)


def test_weight_decay_skips_biases_norms_and_the_layer_mix():
    probe = _Probe()
    names = {id(parameter): name for name, parameter in probe.named_parameters()}
    groups = parameter_groups(probe, RunConfig(lr=1e-3, weight_decay=0.01).resolved())
    decay = {names[id(parameter)]: group["weight_decay"] for group in groups for parameter in group["params"]}
    assert decay == {
        "encoder.dense.weight": 0.01,
        "encoder.dense.bias": 0.0,
        "encoder.LayerNorm.weight": 0.0,
        "encoder.LayerNorm.bias": 0.0,
        "encoder.final_layer_norm.weight": 0.0,  # T5's spelling
        "encoder.final_layer_norm.bias": 0.0,
        "combiner.mix.scalar_weights": 0.0,
        "head.weight": 0.01,
        "head.bias": 0.0,
    }


def test_the_schedule_warms_up_linearly_then_decays_to_zero():
    model = nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(model, RunConfig(lr=1e-3, warmup_fraction=0.1).resolved(), total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    rates.append(scheduler.get_last_lr()[0])
    # 2 warm-up steps (10% of 20): 0, 0.5, then the peak at step 2, and down to 0 at step 20
    assert rates[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert rates[11] == pytest.approx(1e-3 * 9 / 18)
    assert rates[20] == pytest.approx(0.0)
    assert describe_optimizer(optimizer)["groups"][0]["lr"] == pytest.approx(1e-3)  # the peak, not the current
