"""What long work needs: resume after an interruption, checkpoints, gradient accumulation,
train fractions for learning curves, and TensorBoard logs."""

from __future__ import annotations

import math

import pytest
import torch
from test_end_to_end import toy_config

import bertprobe.train as train_module
from bertprobe.checkpoint import (
    COMPLETE_FILE,
    PROGRESS_FILE,
    TrainingProgress,
    checkpoint_name,
    checkpoint_root,
    latest_checkpoint,
)
from bertprobe.config import RunConfig
from bertprobe.errors import CheckpointError, ConfigError
from bertprobe.tasks.base import select_training_examples
from bertprobe.train import run


class Interrupted(Exception):
    """Stands in for a killed job."""


def interrupt_at_epoch(monkeypatch, epoch: int) -> None:
    """Make the training loop die when it starts epoch ``epoch``."""
    real_bar = train_module.progress_bar

    def bar(iterable, description, enabled=True, leave=False):
        if description.startswith(f"epoch {epoch}/"):
            raise Interrupted(description)
        return real_bar(iterable, description, enabled, leave)

    monkeypatch.setattr(train_module, "progress_bar", bar)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["finetune", "feature"])
def test_resume_after_interruption_gives_the_uninterrupted_result(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, mode
):
    options = dict(mode=mode, epochs=3, max_train_examples=60, lr=1e-3 if mode == "finetune" else 1e-2)
    reference = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path / "reference", **options))

    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path / "interrupted", **options)
    interrupt_at_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(config)
    saved = latest_checkpoint(checkpoint_root(config.output_dir, config.run_name()))
    assert saved is not None and saved.name == "epoch-2"
    assert not list((tmp_path / "interrupted" / "runs").glob("*.json"))  # no record from a half run

    monkeypatch.undo()
    resumed = run(RunConfig(**{**config.to_dict(), "tags": (), "resume": True}))
    assert resumed["resumed_from"] == str(saved)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"] == reference["history"]  # same losses to the last bit
    assert resumed["metrics"] == reference["metrics"]
    assert not checkpoint_root(config.output_dir, config.run_name()).exists()  # cleaned up when done


def test_a_run_resumed_twice_lists_both_checkpoints(tiny_model_dir, toy_data_dir, tmp_path, monkeypatch):
    """A long run that several sessions carry on: the record names every checkpoint it
    resumed from, oldest first, and its times add up over all the processes."""
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, epochs=3, max_train_examples=30, resume=True)
    root = checkpoint_root(config.output_dir, config.run_name())
    resumed_from = []
    for epoch in (2, 3):
        interrupt_at_epoch(monkeypatch, epoch)
        with pytest.raises(Interrupted):
            run(config)
        resumed_from.append(str(latest_checkpoint(root)))
        monkeypatch.undo()
    assert resumed_from == [str(root / "epoch-1"), str(root / "epoch-2")]
    record = run(config)
    assert record["resumes"] == resumed_from and record["resumed_from"] == resumed_from[-1]
    assert record["time"]["total_seconds"] > record["time"]["this_process_seconds"]
    assert record["time"]["total_seconds"] >= record["time"]["train_seconds"] + record["time"]["eval_seconds"]
    # each of the three processes says when it started, from where, and with what code and machine
    processes = record["processes"]
    assert [process["resumed_from"] for process in processes] == [None, *resumed_from]
    assert all(process["git_commit"] == record["git_commit"] for process in processes)
    assert all(process["machine"]["cpu"] == record["machine"]["cpu"] for process in processes)
    assert [process["started_utc"] for process in processes] == sorted(process["started_utc"] for process in processes)


def interrupt_at_training_batch(monkeypatch, number: int) -> None:
    """Make the training loop die on its ``number``-th training batch (counted over epochs)."""
    real_loss, calls = train_module.row_loss, 0

    def loss(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == number:
            raise Interrupted(f"batch {number}")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "row_loss", loss)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "accumulation", "every"), [("finetune", 1, 3), ("feature", 1, 3), ("finetune", 2, 2)])
def test_resume_within_an_epoch_gives_the_uninterrupted_result(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, mode, accumulation, every
):
    """--checkpoint-every: killed on batch 5 of epoch 2, the run resumes after the checkpoint
    taken at batch 4 (every 2) or 3 (every 3) of that epoch, and ends bit-identical to a run
    never stopped: same batches, same dropout masks, same optimizer and schedule state."""
    options = dict(
        mode=mode, epochs=3, batch_size=6, max_train_examples=60, gradient_accumulation_steps=accumulation,
        lr=1e-3 if mode == "finetune" else 1e-2,
    )  # fmt: skip
    reference = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path / "reference", **options))
    batches_per_epoch = math.ceil(reference["data"]["windows"]["train"] / 6)
    assert batches_per_epoch == 10

    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path / "interrupted", checkpoint_every=every, **options)
    interrupt_at_training_batch(monkeypatch, batches_per_epoch + 5)
    with pytest.raises(Interrupted):
        run(config)
    saved = latest_checkpoint(checkpoint_root(config.output_dir, config.run_name()))
    done = 5 - 1 - (5 - 1) % every
    assert saved is not None and saved.name == f"epoch-2-batch-{done}"
    # older checkpoints pruned, but for the one before the newest: the fallback if the newest is damaged
    previous = f"epoch-2-batch-{done - every}" if done > every else "epoch-1"
    assert sorted(p.name for p in saved.parent.iterdir()) == sorted([previous, saved.name])

    saved_progress = torch.load(saved / PROGRESS_FILE, weights_only=False)
    # the killed process's wall time up to its checkpoint covers its training and dev passes
    assert saved_progress["wall_seconds"] >= saved_progress["train_seconds"] + saved_progress["eval_seconds"] > 0

    monkeypatch.undo()
    resumed = run(RunConfig(**{**config.to_dict(), "tags": (), "resume": True}))
    assert resumed["resumed_from"] == str(saved) and resumed["resumes"] == [str(saved)]
    timing = resumed["time"]  # the total spans both processes, as train_seconds does
    assert timing["total_seconds"] == pytest.approx(saved_progress["wall_seconds"] + timing["this_process_seconds"])
    assert timing["total_seconds"] >= timing["train_seconds"] + timing["eval_seconds"]
    assert resumed["history"] == reference["history"]  # same mean losses to the last bit
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["final_lr"] == reference["final_lr"]
    assert resumed["name"] == reference["name"]  # checkpointing more often is not another run
    assert not checkpoint_root(config.output_dir, config.run_name()).exists()


def test_a_rerun_without_resume_stops_instead_of_overwriting_the_checkpoint(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, capsys
):
    """Starting over would delete the unfinished run's checkpoint at its first save."""
    from bertprobe.cli import main

    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, epochs=2, max_train_examples=30)
    interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run(config)
    monkeypatch.undo()
    saved = latest_checkpoint(checkpoint_root(config.output_dir, config.run_name()))
    with pytest.raises(CheckpointError, match=r"left a checkpoint at .*epoch-1: pass --resume to continue it"):
        run(config)
    assert latest_checkpoint(checkpoint_root(config.output_dir, config.run_name())) == saved  # still there
    arguments = ["--model", config.model, "--data-dir", config.data_dir, "--output-dir", config.output_dir]
    arguments += ["--cache-dir", config.cache_dir, "--epochs", "2", "--batch-size", "8", "--lstm-hidden", "32"]
    arguments += ["--seed", "3", "--max-train-examples", "30"]
    assert main(arguments) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert run(RunConfig(**{**config.to_dict(), "tags": (), "resume": True}))["resumed_from"] == str(saved)


def test_a_checkpoint_of_other_data_is_refused_before_anything_is_loaded(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_data_dir, data)
    config = toy_config(tiny_model_dir, data, tmp_path, epochs=2, max_train_examples=30, resume=True)
    interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run(config)
    monkeypatch.undo()
    originals = {path: path.read_text(encoding="utf-8") for path in data.iterdir()}
    for path, text in originals.items():  # same number of labels, other names: would train on silently
        path.write_text(text.replace("B-LOC", "B-GPE"), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"trained on other labels \(.*'B-LOC'.*then, .*'B-GPE'.* now\)"):
        run(config)
    train = data / "train.txt"
    for path, text in originals.items():
        path.write_text(text, encoding="utf-8")
    train.write_text(originals[train].replace("the NN O O", "a NN O O"), encoding="utf-8")  # every sentence
    with pytest.raises(CheckpointError, match="trained on other training data"):
        run(config)
    train.write_text(originals[train], encoding="utf-8")
    assert run(config)["resumed_from"] is not None  # the same data again: resumes


def test_checkpoints_are_ordered_by_training_done(tmp_path):
    assert checkpoint_name(TrainingProgress(epoch=2)) == "epoch-2"
    assert checkpoint_name(TrainingProgress(epoch=2, batch_in_epoch=150)) == "epoch-3-batch-150"
    root = tmp_path / "checkpoints" / "run"
    for name in ("epoch-2", "epoch-3-batch-40", "epoch-3-batch-150", "epoch-3-batch-900"):
        (root / name).mkdir(parents=True)
        (root / name / COMPLETE_FILE).write_bytes(b"done")
    (root / "epoch-3-batch-900" / COMPLETE_FILE).unlink()  # killed while saving
    assert latest_checkpoint(root) == root / "epoch-3-batch-150"  # 150 > 40, numerically
    (root / "epoch-3").mkdir()
    (root / "epoch-3" / COMPLETE_FILE).write_bytes(b"done")
    assert latest_checkpoint(root) == root / "epoch-3"


def test_checkpoint_every_must_fall_on_optimizer_steps():
    RunConfig(checkpoint_every=4, gradient_accumulation_steps=2).resolved()
    for every, accumulation in ((3, 2), (-1, 1)):
        with pytest.raises(ConfigError, match="--checkpoint-every"):
            RunConfig(checkpoint_every=every, gradient_accumulation_steps=accumulation).resolved()


def test_resume_without_a_checkpoint_starts_from_the_beginning(tiny_model_dir, toy_data_dir, tmp_path):
    record = run(
        toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=1, resume=True)
    )
    assert record["resumed_from"] is None and record["resumes"] == [] and len(record["history"]) == 1
    assert record["time"]["total_seconds"] == record["time"]["this_process_seconds"]


def test_an_unfinished_checkpoint_save_is_never_used(tmp_path):
    root = tmp_path / "checkpoints" / "run"
    (root / "epoch-1").mkdir(parents=True)
    (root / "epoch-1" / COMPLETE_FILE).write_bytes(b"done")
    (root / "epoch-2").mkdir()  # killed while saving: no digests written last
    assert latest_checkpoint(root) == root / "epoch-1"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_gradient_accumulation_takes_fewer_steps_and_ends_the_schedule_exactly(tiny_model_dir, toy_data_dir, tmp_path):
    config = toy_config(
        tiny_model_dir, toy_data_dir, tmp_path, mode="finetune", lr=1e-3, epochs=2,
        batch_size=4, gradient_accumulation_steps=3, max_train_examples=50,
    )  # fmt: skip
    record = run(config)
    batches = math.ceil(record["data"]["windows"]["train"] / 4)
    assert record["optimizer_steps_per_epoch"] == math.ceil(batches / 3)
    windows_per_second = record["data"]["windows"]["train"] * 2 / record["time"]["train_seconds"]
    assert record["time"]["train_examples_per_second"] == pytest.approx(windows_per_second)
    assert record["final_lr"] == pytest.approx(0.0, abs=1e-12)


def test_train_fraction_picks_nested_seeded_subsets():
    small = select_training_examples(1000, None, seed=5, fraction=0.01)
    medium = select_training_examples(1000, None, seed=5, fraction=0.1)
    assert len(small) == 10 and len(medium) == 100 and small < medium
    assert select_training_examples(1000, None, seed=5, fraction=0.1) == medium  # same for every mode
    assert select_training_examples(1000, None, seed=6, fraction=0.1) != medium  # another seed, another draw
    assert select_training_examples(1000, None, seed=5, fraction=1.0) is None
    assert len(select_training_examples(7, None, seed=5, fraction=0.01)) == 1  # never empty


def test_train_fraction_reaches_the_run_and_is_validated(tiny_model_dir, toy_data_dir, tmp_path):
    record = run(
        toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=1, train_fraction=0.25)
    )
    full = record["data"]["sentences"]["train"]
    assert record["data"]["windows"]["train"] == math.ceil(0.25 * full)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="--train-fraction"):
            RunConfig(train_fraction=bad).resolved()
    with pytest.raises(ConfigError, match="not both"):
        RunConfig(train_fraction=0.5, max_train_examples=10).resolved()


def test_options_added_later_keep_older_run_names():
    config = RunConfig(mode="feature", layers="last4concat", seed=1)
    assert config.run_name() == RunConfig(**{**config.to_dict(), "tags": (), "resume": True}).run_name()
    assert config.run_name() == RunConfig(**{**config.to_dict(), "tags": (), "cpu_threads": 3}).run_name()
    assert config.run_name() != RunConfig(**{**config.to_dict(), "tags": (), "train_fraction": 0.1}).run_name()


def test_tensorboard_logs_every_epoch(tiny_model_dir, toy_data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = toy_config(
        tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=2, report_to="tensorboard"
    )
    run(config)
    folder = tmp_path / "runs" / "tensorboard" / config.run_name()
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("dev/f1")] == [1, 2]
    assert all(math.isfinite(event.value) for event in accumulator.Scalars("train/loss"))


def test_mixed_precision_option_is_validated_and_reaches_accelerate(tiny_model_dir, toy_data_dir, tmp_path):
    with pytest.raises(ConfigError, match="--mixed-precision"):
        RunConfig(mixed_precision="fp8").resolved()
    record = run(
        toy_config(
            tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=1, mixed_precision="bf16"
        )
    )
    assert record["distributed"]["mixed_precision"] == "bf16"
    assert torch.isfinite(torch.tensor(record["history"][0]["train_loss"]))


@pytest.mark.slow
def test_peak_memory_is_counted_per_run_not_per_process(tiny_model_dir, toy_data_dir, tmp_path):
    from bertprobe.results import peak_memory_bytes

    ballast = bytearray(1_500_000_000)  # an earlier, bigger job in the same process (a sweep)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    process_peak = peak_memory_bytes("cpu")["process_max_rss_bytes"]
    del ballast
    record = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=1))
    if record["memory"]["per_run"]:
        assert record["memory"]["process_max_rss_bytes"] < process_peak - 1_000_000_000
    else:  # no /proc/self/clear_refs here: the record says the peak is the process's
        assert record["memory"]["process_max_rss_bytes"] >= process_peak


@pytest.mark.slow
def test_eval_every_skips_dev_passes_but_always_evaluates_the_last_epoch(tiny_model_dir, toy_data_dir, tmp_path):
    record = run(
        toy_config(
            tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=5, eval_every=2, lr=1e-2
        )
    )
    history = record["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert [h["epoch"] for h in history if "dev_f1" in h] == [2, 4, 5]
    assert record["best_epoch"] in (2, 4, 5)
    best = next(h for h in history if h["epoch"] == record["best_epoch"])
    assert record["metrics"]["dev"]["f1"] == best["dev_f1"] == max(h.get("dev_f1", -1) for h in history)
    with pytest.raises(ConfigError, match="--eval-every must be at least 1"):
        RunConfig(eval_every=0).resolved()


@pytest.mark.slow
def test_compile_wraps_the_model_and_the_run_still_learns(tiny_model_dir, toy_data_dir, tmp_path, monkeypatch):
    """--compile goes through torch.compile with dynamic shapes; the eager backend stands in
    for inductor (whose C++ build takes minutes on a CPU) so the test checks our wiring:
    the compiled wrapper trains, its best weights are restored and scored."""
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        calls.append(kwargs)
        return real_compile(model, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    record = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="finetune", lr=1e-3, epochs=3, compile=True))
    torch._dynamo.reset()
    assert calls == [{"dynamic": True}]
    assert record["config"]["compile"] is True
    assert record["metrics"]["dev"]["f1"] > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("compiled_first", [True, False])
def test_resume_with_compile_toggled_gives_the_uninterrupted_result(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, compiled_first
):
    """--compile is not part of a run's name, so its checkpoint may be resumed with it
    toggled: the weights are stored under the bare model's names, not ``_orig_mod.``."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: real_compile(model, **kwargs, backend="eager"))
    options = dict(mode="finetune", epochs=3, max_train_examples=60, lr=1e-3)
    torch._dynamo.reset()
    reference = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path / "reference", **options))

    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path / "interrupted", compile=compiled_first, **options)
    real_bar = train_module.progress_bar
    interrupt_at_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(config)
    monkeypatch.setattr(train_module, "progress_bar", real_bar)
    resumed = run(RunConfig(**{**config.to_dict(), "tags": (), "resume": True, "compile": not compiled_first}))
    torch._dynamo.reset()
    assert resumed["resumed_from"] is not None
    assert resumed["history"] == reference["history"]
    assert resumed["metrics"] == reference["metrics"]


def test_every_run_hands_its_free_memory_back_when_it_ends_or_stops(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    """So the next run of a sweep's or a tuning's process starts from what is live."""
    released = []
    monkeypatch.setattr(train_module, "release_free_memory", lambda: released.append("purged"))
    run(toy_config(tiny_model_dir, toy_data_dir, tmp_path / "finished", epochs=1, max_train_examples=20))
    assert released == ["purged"]
    interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run(toy_config(tiny_model_dir, toy_data_dir, tmp_path / "stopped", epochs=2, max_train_examples=20))
    assert released == ["purged", "purged"]
