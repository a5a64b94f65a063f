"""The Python API as a user calls it: ``import bertprobe`` and its names."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_end_to_end import cli, toy_config

import bertprobe

ROOT = Path(__file__).resolve().parent.parent


def test_import_bertprobe_loads_no_torch_until_a_name_needs_it():
    code = (
        "import sys, bertprobe\n"
        "from pathlib import Path\n"
        "records = bertprobe.load_records('results/table7_minilm')\n"
        "committed = len(list(Path('results/table7_minilm').glob('*.json')))\n"
        "assert len(records) == committed >= 35, (len(records), committed)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
    with pytest.raises(AttributeError, match="no attribute 'Probe2'"):
        bertprobe.Probe2  # noqa: B018


def test_scalar_mix_alone_equals_the_formula():
    import torch

    torch.manual_seed(0)
    mix = bertprobe.ScalarMix(3)
    with torch.no_grad():
        mix.scalar_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
        mix.gamma.fill_(1.5)
    hidden_states = torch.randn(2, 7, 3, 8)  # [batch, tokens, layers, hidden]
    weights = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), dim=0)
    expected = 1.5 * sum(weights[k] * hidden_states[..., k, :] for k in range(3))
    assert torch.allclose(mix(hidden_states), expected, atol=1e-6)
    normed = bertprobe.ScalarMix(3, layer_norm=True)
    mean = hidden_states.mean(-1, keepdim=True)
    std = (hidden_states.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    expected_normed = ((hidden_states - mean) / std).mean(dim=-2)  # equal weights at the start, gamma 1
    assert torch.allclose(normed(hidden_states), expected_normed, atol=1e-5)
    layers = bertprobe.resolve_strategy("-1,-2,-3,-4:concat", num_layers=12)
    assert layers.indices == (12, 11, 10, 9) and layers.output_dim(768) == 4 * 768


@pytest.mark.slow
def test_run_from_python_writes_the_record_the_command_line_writes(tiny_model_dir, toy_data_dir, tmp_path):
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path / "python", mode="feature", layers="last", epochs=3)
    record = bertprobe.run(config)
    result = cli(
        "--mode", "feature", "--layers", "last", "--epochs", "3", "--seed", "3", "--batch-size", "8",
        "--lstm-hidden", "32", "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir),
        "--output-dir", str(tmp_path / "cli"), "--cache-dir", str(tmp_path / "cli-cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    from_cli = json.loads(next((tmp_path / "cli").glob("*.json")).read_text())
    assert from_cli["name"] == record["name"]
    assert from_cli["metrics"] == record["metrics"] and from_cli["history"] == record["history"]


def test_records_as_a_data_frame():
    folder = ROOT / "results" / "table7_minilm"
    frame = bertprobe.records_frame(folder)
    assert len(frame) == len(list(folder.glob("*.json"))) >= 35  # the protocol's 35 and its learning-rate grid
    assert {"name", "config.mode", "config.layers", "dev.f1", "test.f1", "train_seconds"} <= set(frame.columns)
    finetune = frame[(frame["config.mode"] == "finetune") & (frame["config.lr"] == 5e-5)]  # the protocol's row
    assert len(finetune) == 5 and finetune["dev.f1"].between(0.88, 0.90).all()
    assert "dev.per_type.PER.f1" in frame.columns  # nested scores flattened with dots


def test_extract_features_equals_the_hidden_states_and_reads_the_cache_the_second_time(
    tiny_model_dir, tmp_path, monkeypatch
):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bertprobe.features import FeatureCache

    sentences = [["john", "went", "to", "springville"], ["mary", "met", "tom"]]
    features = bertprobe.extract_features(str(tiny_model_dir), sentences, layers="-1,0", cache_dir=str(tmp_path))
    assert [f.shape for f in features] == [(4, 2, 32), (3, 2, 32)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModel.from_pretrained(tiny_model_dir).eval()
    for words, got in zip(sentences, features, strict=True):
        encoded = tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            states = model(**encoded, output_hidden_states=True).hidden_states
        first = [encoded.word_ids().index(i) for i in range(len(words))]  # each word's first sub-token
        expected = torch.stack([states[4][0, first], states[0][0, first]], dim=1).to(torch.float16)
        assert torch.equal(torch.from_numpy(got), expected)

    monkeypatch.setattr(FeatureCache, "build", lambda *a, **k: pytest.fail("the cache was built again"))
    again = bertprobe.extract_features(str(tiny_model_dir), sentences, layers="-1,0", cache_dir=str(tmp_path))
    assert all((a == b).all() for a, b in zip(again, features, strict=True))
    monkeypatch.undo()
    pooled = bertprobe.extract_features(str(tiny_model_dir), ["john went", "mary"], pooling="mean",
                                        cache_dir=str(tmp_path / "texts"))  # fmt: skip
    assert [p.shape for p in pooled] == [(1, 1, 32), (1, 1, 32)]
    with pytest.raises(ValueError, match="texts need pooling 'first' or 'mean'"):
        bertprobe.extract_features(str(tiny_model_dir), ["john"], cache_dir=str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["feature", "finetune"])
def test_run_keeps_the_trained_model_where_asked_and_it_scores_as_the_record_says(
    mode, tiny_model_dir, toy_data_dir, tmp_path
):
    """``run(config, keep_model=True).model`` reads the tokenizer's batch in every mode (the
    frozen encoder is put back under a head trained on cached features) and, with the best
    dev epoch's weights, scores dev exactly as the record does."""
    from bertprobe.batching import WindowCollator, WindowDataset
    from bertprobe.encoder import load_tokenizer
    from bertprobe.model import ProbeModel
    from bertprobe.tasks import load_task

    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode=mode, layers="last", epochs=2, lr=1e-3)
    result = bertprobe.run(config, keep_model=True)
    assert isinstance(result.model, ProbeModel) and result.model.encoder is not None and not result.model.training
    assert result.record == json.loads(next((tmp_path / "runs").glob("*.json")).read_text())

    tokenizer = load_tokenizer(str(tiny_model_dir))
    task = load_task(config.resolved(), tokenizer, 64)
    windows = task.windows["validation"]
    dataset = WindowDataset(windows)
    batch = WindowCollator(tokenizer.pad_token_id)([dataset[index] for index in range(len(dataset))])
    with torch.inference_mode():
        predicted = result.model(batch).argmax(-1).masked_fill(~batch["word_mask"], -100)
    scores, _ = task.score("validation", batch["window_index"], predicted)
    assert scores["f1"] == pytest.approx(result["metrics"]["dev"]["f1"], abs=1e-9)
    assert bertprobe.run(replace(config, seed=4)).model is None  # not asked: no model kept
