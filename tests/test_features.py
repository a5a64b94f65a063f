"""The frozen-feature cache: reuse, invalidation, exactness and interrupted builds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from bertprobe.batching import WindowCollator, WindowDataset
from bertprobe.features import FeatureCache, FeatureDataset, same_input_groups, weights_digest
from bertprobe.layer_spec import resolve_strategy
from bertprobe.model import ProbeModel, distinct_inputs, extract_rows, gather_words, pool_tokens


def build(cache, windows, encoder, layers, tokenizer_pad=0):
    return cache.build(windows, layers, encoder, tokenizer_pad, "validation", torch.device("cpu"), batch_tokens=256)


def test_cached_features_equal_features_computed_directly(tmp_path, encoder, windows):
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    cached = build(cache, windows, encoder, (0, 2, 4))
    dataset = FeatureDataset(cached, windows, (4, 0))  # strategy order differs from storage order
    batch = WindowCollator(0)([WindowDataset(windows)[i] for i in range(3)])
    with torch.no_grad():
        states = encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            output_hidden_states=True,
        ).hidden_states
    direct = gather_words(states, (4, 0), batch["word_positions"])
    for row in range(3):
        words = len(windows[row].labels)
        from_cache = dataset[row]["features"]
        assert from_cache.dtype == torch.float16 and from_cache.shape == (words, 2, 32)
        assert torch.equal(from_cache, direct[row, :words].to(torch.float16))
        assert dataset[row]["labels"] == windows[row].labels


def test_a_cache_built_once_is_read_not_rebuilt(tmp_path, encoder, windows, monkeypatch):
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    assert cache.find(windows, (4,)) is None
    first = build(cache, windows, encoder, (1, 2, 3, 4))
    monkeypatch.setattr(FeatureCache, "build", lambda *a, **k: pytest.fail("cache rebuilt"))
    again = FeatureCache(tmp_path, "tiny", weights_digest(encoder)).find(windows, (4, 3))
    assert again is not None and again.path == first.path
    assert np.array_equal(np.asarray(again.features), np.asarray(first.features))


def test_a_layer_set_outside_the_stored_one_needs_a_new_cache(tmp_path, encoder, windows):
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    build(cache, windows, encoder, (3, 4))
    assert cache.find(windows, (4,)) is not None
    assert cache.find(windows, (0, 4)) is None
    wider = build(cache, windows, encoder, (0, 4))
    assert cache.find(windows, (0,)).path == wider.path


def test_other_weights_or_other_inputs_never_reuse_a_cache(tmp_path, encoder, windows, tiny_model_dir):
    from transformers import AutoModel

    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    build(cache, windows, encoder, (4,))
    other = AutoModel.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        other.encoder.layer[0].output.dense.bias.add_(0.01)
    assert FeatureCache(tmp_path, "tiny", weights_digest(other)).find(windows, (4,)) is None
    changed = list(windows)
    changed[0] = type(changed[0])(**{**changed[0].__dict__, "input_ids": [*changed[0].input_ids[:-1], 1, 3]})
    assert cache.find(changed, (4,)) is None  # e.g. another data file, tokenizer or context mode
    assert cache.find(windows[:-1], (4,)) is None
    # the same sub-tokens with other target words, or other segment ids, are other features
    moved = list(windows)
    moved[0] = type(moved[0])(**{**moved[0].__dict__, "word_positions": [p + 1 for p in moved[0].word_positions]})
    assert cache.find(moved, (4,)) is None
    segments = list(windows)
    segments[0] = type(segments[0])(**{**segments[0].__dict__, "token_type_ids": [1] * len(segments[0].input_ids)})
    assert cache.find(segments, (4,)) is None
    # a pooled cache (one row per window) is never read as one row per word, nor the reverse
    assert FeatureCache(tmp_path, "tiny", weights_digest(encoder), pooling="mean").find(windows, (4,)) is None
    assert cache.find(windows, (4,)) is not None  # and the original still is found


def test_a_cache_read_with_other_windows_is_refused(tmp_path, encoder, windows):
    cached = build(FeatureCache(tmp_path, "tiny", weights_digest(encoder)), windows, encoder, (4,))
    with pytest.raises(ValueError, match=rf"has {len(windows)} inputs, expected {len(windows) - 1}"):
        FeatureDataset(cached, windows[:-1], (4,))
    with pytest.raises(ValueError, match=r"lacks layers \[3\]"):
        FeatureDataset(cached, windows, (3, 4))


def test_an_interrupted_build_is_never_read(tmp_path, encoder, windows, monkeypatch):
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    calls = {"n": 0}
    original = np.save

    def crash_on_offsets(path, *args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt("simulated interruption while finishing the cache")

    monkeypatch.setattr(np, "save", crash_on_offsets)
    with pytest.raises(KeyboardInterrupt):
        build(cache, windows, encoder, (4,))
    monkeypatch.setattr(np, "save", original)
    assert calls["n"] == 1
    leftovers = list((tmp_path / cache.key(windows)).iterdir())
    assert leftovers and all(p.name.startswith(".building-") for p in leftovers)
    assert cache.find(windows, (4,)) is None
    assert build(cache, windows, encoder, (4,)) is not None
    assert cache.find(windows, (4,)) is not None


def test_a_build_deletes_what_killed_builds_left_and_spares_running_ones(tmp_path, encoder, windows):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ended_pid, running_pid, host = int(ended.stdout), os.getppid(), socket.gethostname()
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    folder = tmp_path / cache.key(windows)
    killed = folder / f".building-layers-4-{host}-{ended_pid}"
    running = folder / f".building-layers-4-{host}-{running_pid}"
    elsewhere = folder / f".building-layers-4-another-host-{ended_pid}"
    other_layers = folder / f".building-layers-3-{host}-{ended_pid}"
    for leftover in (killed, running, elsewhere, other_layers):
        leftover.mkdir(parents=True)
        (leftover / "features.npy").write_bytes(b"half written")
    build(cache, windows, encoder, (4,))
    assert not killed.exists()
    assert running.is_dir() and elsewhere.is_dir() and other_layers.is_dir()
    assert cache.find(windows, (4,)) is not None


def test_feature_dataset_refuses_missing_layers(tmp_path, encoder, windows):
    cached = build(FeatureCache(tmp_path, "tiny", weights_digest(encoder)), windows, encoder, (4,))
    with pytest.raises(ValueError, match=r"lacks layers \[3\]"):
        FeatureDataset(cached, windows, (3, 4))


def test_cached_features_stay_on_disk_and_are_read_one_window_at_a_time(tmp_path, encoder, windows):
    """Why a training set ten times larger does not need ten times the memory: the split's
    features are a read-only memory map of the file, and each item copies out only its own
    window's rows (the OS pages in what is read, and may drop it again)."""
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    build(cache, windows, encoder, (0, 4))
    cached = FeatureCache(tmp_path, "tiny", weights_digest(encoder)).find(windows, (0, 4))
    assert isinstance(cached.features, np.memmap) and cached.features.mode == "r"
    words = sum(len(window.labels) for window in windows)
    assert cached.features.shape == (words, 2, 32)
    on_disk = (cached.path / "features.npy").stat().st_size
    assert on_disk >= words * 2 * 32 * 2  # float16: the features live in the file
    item = FeatureDataset(cached, windows, (4,))[1]["features"]
    assert item.shape == (len(windows[1].labels), 1, 32)
    assert item.numpy().base is None or not isinstance(item.numpy().base, np.memmap)  # a copy of one window
    assert item.untyped_storage().nbytes() == item.numel() * 2


def test_a_batch_the_device_has_no_memory_for_is_split_until_it_fits(tmp_path, encoder, windows):
    """The cache build starts from a large token budget; a batch that runs out of memory is
    halved and retried, and the features come out the same as with small batches."""
    reference = build(FeatureCache(tmp_path / "small", "tiny", weights_digest(encoder)), windows, encoder, (0, 4))

    class ScarceMemory(torch.nn.Module):
        """The encoder, on a device that holds one input at a time."""

        def __init__(self, wrapped):
            super().__init__()
            self.wrapped, self.config, self.tried, self.encoded = wrapped, wrapped.config, [], []

        def forward(self, **inputs):
            self.tried.append(len(inputs["input_ids"]))
            if len(inputs["input_ids"]) > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            self.encoded.append(len(inputs["input_ids"]))
            return self.wrapped(**inputs)

    scarce = ScarceMemory(encoder)
    cache = FeatureCache(tmp_path / "large", "tiny", weights_digest(encoder))
    cached = cache.build(windows, (0, 4), scarce, 0, "validation", torch.device("cpu"), batch_tokens=10**6)
    distinct = len(same_input_groups(windows))
    assert distinct == 8  # 40 sentences in documents of 5 that fit the limit: one input each
    assert scarce.tried[:4] == [8, 4, 2, 1]  # one batch of all 8 inputs, halved until it fits
    assert max(scarce.encoded) == 1 and sum(scarce.encoded) == distinct  # every input once
    # the same values as the small batches' build, up to float16 rounding: on some CPUs (an
    # AMD EPYC family 25 model 1 here) an input encoded alone rounds one element of 21,184
    # one float16 step away from the same input encoded in a padded batch
    np.testing.assert_allclose(np.asarray(cached.features), np.asarray(reference.features), rtol=0, atol=1e-3)

    def always_out_of_memory(**inputs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    scarce.forward = always_out_of_memory  # not even one window fits: the error reaches the user
    with pytest.raises(torch.cuda.OutOfMemoryError):
        cache.build(windows, (4,), scarce, 0, "validation", torch.device("cpu"), batch_tokens=10**6)
    assert not (tmp_path / "large" / cache.key(windows) / "layers-4").exists()  # nothing half-built published


def encode_alone(encoder, window):
    """A window's hidden states from a batch of itself alone: the reference for the cache."""
    batch = WindowCollator(0)([WindowDataset([window])[0]])
    with torch.no_grad():
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
        return encoder(**inputs, output_hidden_states=True).hidden_states, batch


def test_windows_with_one_input_are_encoded_once_and_keep_their_own_words(tmp_path, encoder, windows):
    """Document context: every sentence of a short document is the same window with other
    target words. The cache encodes that input once and stores each sentence's own words."""
    groups = same_input_groups(windows)
    assert sorted(index for group in groups for index in group) == list(range(len(windows)))
    assert all(len({tuple(windows[i].input_ids) for i in group}) == 1 for group in groups)
    assert len({tuple(windows[group[0]].input_ids) for group in groups}) == len(groups)
    shared = max(groups, key=len)
    assert len({tuple(windows[i].word_positions) for i in shared}) == len(shared) > 1

    rows = count_encoded_rows(encoder)
    try:
        cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
        cached = build(cache, windows, encoder, (0, 3))
    finally:
        del encoder.forward
    assert sum(rows) == len(groups) < len(windows)
    manifest = json.loads((cached.path / "manifest.json").read_text())
    assert (manifest["windows"], manifest["encoded_inputs"]) == (len(windows), len(groups))
    dataset = FeatureDataset(cached, windows, (3, 0))
    for index in range(len(windows)):
        states, batch = encode_alone(encoder, windows[index])
        direct = gather_words(states, (3, 0), batch["word_positions"])[0].to(torch.float16)
        assert torch.allclose(dataset[index]["features"].float(), direct.float(), atol=1e-3), index


def test_pooled_rows_of_repeated_inputs_are_each_the_pool_of_that_input(tmp_path, encoder, windows):
    """Sequence tasks keep one pooled row per input; a repeated input (the same sentence twice
    in a split) is encoded once and every copy gets its row."""
    repeated = [windows[0], windows[5], windows[0], windows[10], windows[5]]
    assert [len(group) for group in same_input_groups(repeated)] == [2, 2, 1]
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder), pooling="mean")
    cached = build(cache, repeated, encoder, (2,))
    assert cached.features.shape == (5, 1, 32)
    for index, window in enumerate(repeated):
        states, batch = encode_alone(encoder, window)
        direct = pool_tokens(states, (2,), batch["attention_mask"], "mean")[0, 0].to(torch.float16)
        assert torch.allclose(torch.tensor(cached.features[index]).float(), direct.float(), atol=1e-3)
    assert np.array_equal(cached.features[0], cached.features[2])
    assert np.array_equal(cached.features[1], cached.features[4])


def count_encoded_rows(encoder):
    """Wrap ``encoder.forward`` so that every call records how many inputs it encoded."""
    rows, forward = [], encoder.forward

    def counting_forward(**inputs):
        rows.append(len(inputs["input_ids"]))
        return forward(**inputs)

    encoder.forward = counting_forward
    return rows


@pytest.mark.parametrize("pooling", [None, "mean"])
def test_an_evaluating_probe_encodes_each_distinct_input_of_a_batch_once(tiny_model_dir, windows, pooling):
    """Evaluation (and a frozen encoder without the cache) encodes identical windows of a
    batch once; training with gradients through the encoder encodes every window."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_model_dir).eval()
    batch = WindowCollator(0)([WindowDataset(windows)[i] for i in range(11)])  # documents of 5, 5 and 1 windows
    layers = resolve_strategy("last4concat", 4)
    with torch.inference_mode():
        states = encoder(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                         output_hidden_states=True).hidden_states  # fmt: skip
    expected = extract_rows(states, layers.indices, batch, pooling)

    rows = count_encoded_rows(encoder)
    for frozen in (True, False):
        probe = ProbeModel(encoder, layers, torch.nn.Identity(), frozen_encoder=frozen, pooling=pooling).eval()
        with torch.inference_mode():
            features = probe.encode(batch)
        assert rows.pop() == 3
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)

    probe = ProbeModel(encoder, layers, torch.nn.Identity(), frozen_encoder=False, pooling=pooling).train()
    probe.encode(batch).sum().backward()  # fine-tuning: dropout differs per window, every window is encoded
    assert rows.pop() == 11 and encoder.embeddings.word_embeddings.weight.grad is not None


def test_distinct_inputs_leaves_a_batch_of_different_windows_as_it_is(windows):
    batch = WindowCollator(0)([WindowDataset(windows)[i] for i in (0, 5, 10, 15)])
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    assert distinct_inputs(inputs) == (inputs, None)
    repeated = {key: value[[0, 1, 0, 2, 1]] for key, value in inputs.items()}
    shared, sources = distinct_inputs(repeated)
    assert len(shared["input_ids"]) == 3 and len(set(sources.tolist())) == 3
    assert sources[0] == sources[2] and sources[1] == sources[4]
    for key, value in repeated.items():
        assert torch.equal(shared[key][sources], value)


def test_a_build_shared_by_processes_stores_what_one_process_stores(tmp_path, encoder, windows):
    """Each of two processes encodes every other batch into the one file (here one after the
    other); the finished cache equals a single process's to the bit."""
    from bertprobe.features import _BuildPlan

    alone = FeatureCache(tmp_path / "alone", "tiny", weights_digest(encoder))
    reference = alone.build(windows, (0, 4), encoder, 0, "validation", torch.device("cpu"), batch_tokens=64)
    shared = FeatureCache(tmp_path / "shared", "tiny", weights_digest(encoder))
    plan = _BuildPlan(shared, windows, (0, 4), 32, share_inputs=True, batch_tokens=64)
    assert len(plan.batches) >= 4  # several batches, so each process has some
    plan.start()
    for rank in (0, 1):
        plan.fill(encoder, 0, torch.device("cpu"), None, shard=(rank, 2))
    cached = plan.finish("validation")
    assert np.array_equal(np.array(cached.features), np.array(reference.features))
    assert shared.find(windows, (4,)) is not None  # its checksums verify
