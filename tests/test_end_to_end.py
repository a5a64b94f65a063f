"""Whole runs on a tiny random BERT and a learnable toy NER set."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import accelerate_launch

from bertprobe.config import RunConfig
from bertprobe.errors import ConfigError, NonFiniteLossError
from bertprobe.features import weights_digest
from bertprobe.train import replaces_best, run

ROOT = Path(__file__).resolve().parent.parent


def toy_config(model_dir, data_dir, tmp_path, **overrides) -> RunConfig:
    values = dict(
        model=str(model_dir),
        data_dir=str(data_dir) if data_dir else None,
        output_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
        epochs=8,
        batch_size=8,
        lstm_hidden=32,
        seed=3,
    )
    values.update(overrides)
    return RunConfig(**values)


@pytest.mark.slow
def test_finetune_learns_the_toy_task_and_writes_a_complete_record(tiny_model_dir, toy_data_dir, tmp_path):
    config = toy_config(
        tiny_model_dir, toy_data_dir, tmp_path, mode="finetune", lr=1e-3, epochs=4, save_predictions=True
    )
    record = run(config)
    assert record["metrics"]["dev"]["f1"] > 0.8
    assert record["metrics"]["test"]["f1"] > 0.8
    # every weight trains but BERT's pooler, which no head reads (a data-parallel run would wait for its gradient)
    assert record["adaptation"]["not_trained"] == {"names": ["pooler.dense.weight", "pooler.dense.bias"], "count": 1056}
    assert record["parameters"]["trainable"] == record["parameters"]["total"] - 1056

    [path] = (tmp_path / "runs").glob("*.json")
    on_disk = json.loads(path.read_text())
    for key in ("config", "metrics", "parameters", "time", "memory", "versions", "git_commit", "command", "history"):
        assert key in on_disk
    assert on_disk["machine"]["cpu"] and on_disk["machine"]["cpu_count"] >= 1
    assert on_disk["config"]["lr"] == 1e-3 and on_disk["config"]["head"] == "linear"
    assert set(on_disk["metrics"]["dev"]["per_type"]) == {"PER", "LOC", "ORG"}
    assert on_disk["time"]["train_seconds"] > 0 and on_disk["memory"]["process_max_rss_bytes"] > 0

    dev_lines = (tmp_path / "runs" / f"{config.run_name()}.dev.conll").read_text().splitlines()
    first = dev_lines[0].split()
    assert len(first) == 3 and first[0] == "the" and first[1] == "O"
    assert sum(1 for line in dev_lines if not line) == 40  # one blank line per dev sentence


@pytest.mark.slow
@pytest.mark.parametrize("layers", ["last4concat", "allweighted"])
def test_feature_mode_learns_and_leaves_the_encoder_bit_identical(tiny_model_dir, toy_data_dir, tmp_path, layers):
    from transformers import AutoModel

    before = weights_digest(AutoModel.from_pretrained(tiny_model_dir))
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers=layers, epochs=10, lr=1e-2)
    record = run(config)
    assert record["metrics"]["dev"]["f1"] > 0.8
    assert record["encoder_unchanged"] is True
    assert weights_digest(AutoModel.from_pretrained(tiny_model_dir)) == before
    assert record["parameters"]["trainable"] < record["parameters"]["total"]
    if layers == "allweighted":
        weights = record["learned_layer_weights"]
        assert weights["layers"] == [1, 2, 3, 4] and sum(weights["softmax_weights"]) == pytest.approx(1.0)


def test_feature_mode_without_cache_keeps_the_encoder_frozen_in_the_model(tiny_model_dir, toy_data_dir, tmp_path):
    from transformers import AutoModel

    config = toy_config(
        tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=1,
        feature_cache=False, max_train_examples=40,
    )  # fmt: skip
    before = weights_digest(AutoModel.from_pretrained(tiny_model_dir))
    record = run(config)
    assert record["encoder_unchanged"] is True and record["feature_cache"] is None
    assert weights_digest(AutoModel.from_pretrained(tiny_model_dir)) == before
    assert not (tmp_path / "cache").exists()


def test_non_finite_loss_stops_the_run_with_a_clear_error(tiny_model_dir, toy_data_dir, tmp_path):
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="finetune", lr=1e30, epochs=1, check_loss_every=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* smaller --lr"):
        run(config)
    assert not (tmp_path / "runs").exists()  # no record for a failed run


def test_an_undefined_dev_score_ranks_below_every_real_one_but_never_leaves_no_epoch():
    nan, floor = math.nan, -math.inf
    assert replaces_best(nan, floor)  # nothing kept yet: keep it
    assert replaces_best(nan, floor)  # still no epoch has scored: the later, more trained one
    assert replaces_best(0.1, floor)
    assert not replaces_best(nan, 0.1)  # a real score is never given up for an undefined one
    assert replaces_best(0.2, 0.1) and not replaces_best(0.1, 0.1)  # ties keep the earlier epoch


def test_a_run_whose_dev_score_is_never_defined_ends_with_its_last_epoch(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    """It crashed after training (no best weights to restore) and lost the run."""
    import bertprobe.train as train_module

    scored = train_module.evaluate

    def undefined_on_dev(model, loader, accelerator, task, split):
        scores, predicted = scored(model, loader, accelerator, task, split)
        return ({**scores, "f1": math.nan} if split == "validation" else scores), predicted

    monkeypatch.setattr(train_module, "evaluate", undefined_on_dev)
    record = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=2))
    assert record["best_epoch"] == 2
    assert math.isnan(record["metrics"]["dev"]["f1"]) and record["metrics"]["test"]["f1"] >= 0.0


def test_max_train_examples_picks_nested_seeded_subsets(tiny_model_dir, toy_data_dir, tmp_path):
    from bertprobe.train import select_training_examples

    small = select_training_examples(240, 20, seed=5)
    large = select_training_examples(240, 80, seed=5)
    assert len(small) == 20 and small <= large
    assert small == select_training_examples(240, 20, seed=5)
    assert small != select_training_examples(240, 20, seed=6)
    assert select_training_examples(240, None, seed=5) is None


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, env=full_env,
        timeout=timeout, cwd=ROOT,
    )  # fmt: skip


def test_unknown_strategy_fails_before_any_model_loads(tmp_path):
    result = cli("--mode", "feature", "--layers", "last5", "--model", str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    assert "unknown layer strategy 'last5'" in result.stderr and "last4concat" in result.stderr
    assert "Traceback" not in result.stderr


def test_option_values_that_cannot_work_are_refused_before_any_model_loads():
    """Each of these once passed validation and failed mid-run: a modulo by zero, a window
    with no room for a word blamed on the data, a third text column."""
    with pytest.raises(ConfigError, match="--check-loss-every must be at least 1"):
        RunConfig(check_loss_every=0).resolved()
    for length in (2, -5):
        with pytest.raises(ConfigError, match=rf"--max-length {length} leaves no room for a word"):
            RunConfig(max_length=length).resolved()
    with pytest.raises(ConfigError, match=r"--text-columns 'a,b,c' must name one column .* or two"):
        RunConfig(task="custom", text_columns="a,b,c").resolved()
    assert RunConfig(task="custom", text_columns=" premise, hypothesis ").resolved().text_column_names() == [
        "premise",
        "hypothesis",
    ]
    assert RunConfig(max_length=3).resolved().max_length == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dropout", "2"], r"--dropout must be in \[0, 1\), got 2.0"),
        (["--seed", "-1"], r"--seed must be in 0\.\.4294967295, got -1"),
        (["--weight-decay", "-5"], "--weight-decay must be 0 or positive, got -5.0"),
        (["--max-grad-norm", "-1"], r"--max-grad-norm must be 0 \(no clipping\) or positive"),
        (["--pooling", "mean"], "--pooling mean applies to sentence tasks; conll2003 tags words"),
        (["--mode", "finetune", "--layers", "last4concat"], "--layers applies to --mode feature only"),
        (["--mode", "lora", "--layers", "0"], "--layers applies to --mode feature only: --mode lora"),
    ],
)
def test_every_option_is_checked_before_the_data_or_any_model_loads(options, message, tmp_path):
    """The model folder does not exist and there are no data: a later check would say so."""
    result = cli(*options, "--model", str(tmp_path / "no-model"), "--data-dir", str(tmp_path / "no-data"))
    assert result.returncode == 2
    assert re.search(f"error: {message}", result.stderr), result.stderr[-500:]


@pytest.mark.slow
def test_layer_out_of_range_names_the_model_depth(tiny_model_dir, toy_data_dir):
    result = cli(
        "--mode", "feature", "--layers", "-1,7:concat", "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir)
    )
    assert result.returncode == 2
    assert "layer 7" in result.stderr and "4 Transformer layers" in result.stderr and "0..4" in result.stderr


@pytest.mark.slow
def test_unreachable_hub_model_explains_how_to_use_local_files():
    result = cli("--model", "some-org/not-cached-model", timeout=60)
    assert result.returncode == 2
    assert "not reachable" in result.stderr and "--model at a folder" in result.stderr
    assert "`hf download some-org/not-cached-model --local-dir DIR`" in result.stderr  # the CLI huggingface_hub ships
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_malformed_data_names_file_and_line(tiny_model_dir, tmp_path):
    for name in ("train.txt", "validation.txt", "test.txt"):
        (tmp_path / name).write_text("john NN O B-PER\nbroken\n", encoding="utf-8")
    result = cli("--model", str(tiny_model_dir), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"{tmp_path / 'train.txt'}:2" in result.stderr


def test_document_context_needs_document_boundaries(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    import bertprobe.tasks.conll as conll_module
    from bertprobe.errors import DataFormatError
    from bertprobe.tasks import load_task
    from bertprobe.tasks.conll import corpus_from_records

    records = [(["john"], ["B-PER"])]  # like the Hub's copy: no -DOCSTART- rows
    corpus = corpus_from_records({"train": records, "validation": records, "test": records}, "hub:conll2003")
    monkeypatch.setattr(conll_module, "load_conll_hub", lambda name: corpus)
    with pytest.raises(DataFormatError, match="document boundaries"):
        load_task(toy_config(tiny_model_dir, None, tmp_path, context="document").resolved(), tiny_tokenizer, 64)
    task = load_task(toy_config(tiny_model_dir, None, tmp_path).resolved(), tiny_tokenizer, 64)
    assert task.corpus is corpus


def test_a_model_without_fast_tokenizer_is_refused(tiny_model_dir, monkeypatch):
    import transformers

    from bertprobe.encoder import load_tokenizer
    from bertprobe.errors import ModelLoadError

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(ModelLoadError, match=r"no fast .*word_ids"):
        load_tokenizer(str(tiny_model_dir))


@pytest.mark.slow
def test_two_processes_under_accelerate_write_one_record_and_score_each_sentence_once(
    tiny_model_dir, toy_data_dir, tmp_path
):
    out = tmp_path / "runs"
    result = accelerate_launch(
        ["--multi_gpu", "--num_processes", "2"],  # on a machine without GPUs: two gloo CPU processes
        [
            "--mode", "feature", "--layers", "last", "--model", str(tiny_model_dir),
            "--data-dir", str(toy_data_dir), "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--epochs", "8", "--batch-size", "8", "--eval-batch-size", "7", "--lstm-hidden", "16",
            "--lr", "1e-2", "--save-predictions",
        ],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [record_path] = out.glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["distributed"]["num_processes"] == 2
    # each process steps the optimizer once per local batch; the linear decay must end
    # exactly with training (not halfway, as it would if the scheduler counted N steps each)
    assert record["final_lr"] == 0.0 and record["optimizer_steps_per_epoch"] == 15  # 240 sentences / 8 / 2
    # 40 dev sentences, eval batch 7 over 2 processes: padding duplicates must not be scored
    dev_file = next(out.glob("*.dev.conll")).read_text()
    assert dev_file.count("\n\n") == 40
    gold_entities = sum(v["support"] for v in record["metrics"]["dev"]["per_type"].values())
    from bertprobe.tasks.conll import read_conll_file

    dev = read_conll_file(toy_data_dir / "validation.txt", "validation")
    assert gold_entities == sum(tag.startswith("B-") for s in dev.sentences for tag in s.tags)
    assert len(list((tmp_path / "cache").glob("*/layers-*"))) == 3  # one cache per split, built once

    # the same run in one process with the same effective batch (2 x 8): other batches, so
    # equal within seed noise, not bit for bit
    single = run(
        toy_config(tiny_model_dir, toy_data_dir, tmp_path / "single", mode="feature", layers="last", epochs=8,
                   batch_size=16, lstm_hidden=16, eval_batch_size=7, lr=1e-2, seed=record["config"]["seed"])
    )  # fmt: skip
    assert record["metrics"]["dev"]["f1"] > 0.8 and single["metrics"]["dev"]["f1"] > 0.8
    assert abs(record["metrics"]["dev"]["f1"] - single["metrics"]["dev"]["f1"]) < 0.1


@pytest.mark.slow
def test_accelerate_launch_cpu_flag_completes_and_writes_one_record(tiny_model_dir, toy_data_dir, tmp_path):
    """`accelerate launch --num_processes 2 --cpu` as users type it (accelerate runs it as one process)."""
    out = tmp_path / "runs"
    result = accelerate_launch(
        ["--num_processes", "2", "--cpu"],
        ["--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir), "--output-dir", str(out),
         "--epochs", "1", "--max-train-examples", "40"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(out.glob("*.json"))) == 1


@pytest.mark.slow
def test_a_run_leaves_no_model_or_optimizer_behind_for_the_next_run_of_the_process(
    tiny_model_dir, toy_data_dir, tmp_path
):
    """Sweeps and tunings run many configurations in one process: each must let go of its
    model and optimizer, or they stay in memory (on the device) through the next run."""
    import gc

    import torch

    from bertprobe.model import ProbeModel

    def alive(kind) -> int:  # without collecting: what a cycle keeps waits for the next full collection
        # type(), not isinstance(): isinstance also reads __class__, which some of torch's
        # deprecated module-level objects answer with a FutureWarning
        return sum(1 for thing in gc.get_objects() if issubclass(type(thing), kind))

    gc.collect()
    before = alive(ProbeModel), alive(torch.optim.Optimizer)
    for seed in (1, 2):
        run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="finetune", lr=1e-3, epochs=1, seed=seed))
        assert (alive(ProbeModel), alive(torch.optim.Optimizer)) == before


def test_cpu_threads_default_to_the_cores_shared_among_local_processes():
    import os

    from bertprobe.train import cpu_threads

    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(None, {}) == cores
    assert cpu_threads(None, {"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}) == max(1, cores // 2)
    assert cpu_threads(None, {"LOCAL_WORLD_SIZE": str(10 * cores)}) == 1
    assert cpu_threads(3, {"LOCAL_WORLD_SIZE": "2"}) == 3
    with pytest.raises(ConfigError, match="--cpu-threads must be at least 1, got 0"):
        RunConfig(cpu_threads=0).resolved()


@pytest.mark.slow
def test_a_cpu_run_under_accelerate_launch_uses_every_core(tiny_model_dir, toy_data_dir, tmp_path):
    """The launcher sets OMP_NUM_THREADS=1 (the helper passes it, as the launcher would):
    one CPU process still trains on every core it may use, and says so."""
    import os

    out = tmp_path / "runs"
    result = accelerate_launch(
        ["--num_processes", "1"],
        ["--mode", "feature", "--layers", "last", "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir),
         "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(next(out.glob("*.json")).read_text())
    cores = len(os.sched_getaffinity(0))
    assert record["machine"]["torch_threads"] == cores
    assert f"1 process (not distributed) on cpu, {cores} torch threads each" in result.stderr


@pytest.mark.slow
def test_checkpoint_saves_do_not_flood_the_log(tiny_model_dir, toy_data_dir, tmp_path):
    result = cli(
        "--mode", "feature", "--layers", "last", "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir),
        "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--epochs", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epoch 2/3  train loss" in result.stderr  # the results are logged...
    assert "Saving current state" not in result.stderr and "saved in" not in result.stderr  # ...not each file saved


def test_bertprobe_without_arguments_prints_usage_and_starts_nothing(capsys):
    from bertprobe.cli import main

    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: bertprobe [train] [OPTIONS]")
    assert all(command in out for command in ("sweep", "tune", "probe-layers", "table", "plot"))


def test_the_default_cache_lives_in_the_user_cache_folder_not_the_current_one(monkeypatch, tmp_path):
    from bertprobe.config import default_cache_dir

    assert default_cache_dir({"BERTPROBE_CACHE": "/data/cache", "XDG_CACHE_HOME": "/x"}) == "/data/cache"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/bertprobe"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir({}) == str(tmp_path / ".cache" / "bertprobe")
    monkeypatch.setenv("BERTPROBE_CACHE", str(tmp_path / "features"))
    assert RunConfig(mode="feature").resolved().cache_dir == str(tmp_path / "features")
    assert RunConfig(cache_dir="mine").resolved().cache_dir == "mine"
    assert RunConfig(mode="feature").run_name() == RunConfig(mode="feature", cache_dir="mine").run_name()
