"""Every mode under two data-parallel processes (gloo on the CPU stands in for NCCL).

Each test launches ``accelerate launch --multi_gpu --num_processes 2 run.py ...`` as a user
would, so they are slow: about ten seconds each on two cores.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import FILLER, PEOPLE, PLACES, accelerate_launch

pytestmark = pytest.mark.slow

MODES = {
    "finetune": ["--mode", "finetune", "--lr", "1e-3"],
    "partial": ["--mode", "partial", "--freeze-layers", "2", "--lr", "1e-3"],
    "lora": ["--mode", "lora", "--lr", "1e-2"],
    "feature": ["--mode", "feature", "--layers", "last", "--lr", "1e-2"],
}
#: what no head reads, and so no loss: BERT's pooler, frozen in every mode that trains the encoder
POOLER = ["pooler.dense.weight", "pooler.dense.bias"]
DEV_SENTENCES = 37  # eval batch 8 over 2 processes leaves a short, padded last round


@pytest.fixture(scope="module")
def sentence_files(tmp_path_factory) -> Path:
    """A sentence task: is the sentence about a person or a place?"""
    folder = tmp_path_factory.mktemp("sentences")
    for split, size, seed in (("train", 90, 1), ("dev", DEV_SENTENCES, 2)):
        rng = random.Random(seed)
        rows = ["sentence\tlabel"]
        for _ in range(size):
            label = rng.choice(["person", "place"])
            words = [rng.choice(FILLER), rng.choice(PEOPLE if label == "person" else PLACES), rng.choice(FILLER)]
            rows.append(f"{' '.join(words)}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def short_dev_conll(toy_data_dir, tmp_path_factory) -> Path:
    """The toy CoNLL data with a dev set of DEV_SENTENCES sentences."""
    folder = tmp_path_factory.mktemp("conll_short_dev")
    for name in ("train.txt", "test.txt"):
        (folder / name).write_text((toy_data_dir / name).read_text())
    blocks = (toy_data_dir / "validation.txt").read_text().strip().split("\n\n")
    kept, sentences = [], 0
    for block in blocks:
        is_sentence = not block.startswith("-DOCSTART-")
        if is_sentence and sentences == DEV_SENTENCES:
            break
        kept.append(block)
        sentences += is_sentence
    (folder / "validation.txt").write_text("\n\n".join(kept) + "\n")
    return folder


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("task", ["tagging", "sentence"])
def test_every_mode_trains_under_two_processes_with_one_record_and_each_dev_example_scored_once(
    mode, task, tiny_model_dir, short_dev_conll, sentence_files, tmp_path
):
    out = tmp_path / "runs"
    if task == "tagging":
        data = ["--data-dir", str(short_dev_conll), "--max-train-examples", "96"]
    else:
        data = [
            "--task", "custom", "--train-file", str(sentence_files / "train.tsv"),
            "--validation-file", str(sentence_files / "dev.tsv"), "--text-columns", "sentence",
            "--label-column", "label",
        ]  # fmt: skip
    head = ["--lstm-hidden", "8"] if task == "tagging" and mode == "feature" else []
    result = accelerate_launch(
        ["--multi_gpu", "--num_processes", "2"],
        [*MODES[mode], *data, *head, "--model", str(tiny_model_dir), "--output-dir", str(out),
         "--cache-dir", str(tmp_path / "cache"), "--epochs", "2", "--batch-size", "8", "--eval-batch-size", "8",
         "--save-predictions"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 processes" in result.stderr  # the process count is logged at start
    [record_path] = out.glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["distributed"]["num_processes"] == 2
    assert record["final_lr"] == 0.0
    memory = record["memory"]
    assert memory["over_processes"] == 2 and set(memory["phases"]) == (
        {"training", "cache_build"} if mode == "feature" else {"training"}
    )
    assert memory["process_max_rss_bytes"] == max(phase["process_max_rss_bytes"] for phase in memory["phases"].values())
    if mode == "feature":
        assert "not_trained" not in record["adaptation"] and record["encoder_unchanged"] is True
    else:
        # LoRA freezes every encoder weight itself, and adds no adapter to the pooler by default
        unread = [] if mode == "lora" else POOLER
        assert record["adaptation"]["not_trained"] == {"names": unread, "count": len(unread) and 32 * 32 + 32}
        assert record["parameters"]["total"] - record["parameters"]["trainable"] >= 32 * 32 + 32
    [dev_file] = out.glob("*.dev.*")
    if task == "tagging":
        assert dev_file.read_text().count("\n\n") == DEV_SENTENCES
        gold = sum(v["support"] for v in record["metrics"]["dev"]["per_type"].values())
        lines = [line.split() for line in dev_file.read_text().splitlines() if line]
        assert gold == sum(gold_tag.startswith("B-") for _, gold_tag, _ in lines)
    else:
        predictions = [json.loads(line) for line in dev_file.read_text().splitlines()]
        assert len(predictions) == DEV_SENTENCES
        correct = sum(p["gold"] == p["predicted"] for p in predictions)
        assert record["metrics"]["dev"]["accuracy"] == pytest.approx(correct / DEV_SENTENCES)


def test_three_processes_train_every_window_and_end_the_schedule_at_zero(tiny_model_dir, toy_data_dir, tmp_path):
    """41 training sentences in batches of 4: 11 batches, one short, cut into 12 (4 rounds of 3)."""
    out = tmp_path / "runs"
    result = accelerate_launch(
        ["--multi_gpu", "--num_processes", "3"],
        ["--mode", "feature", "--layers", "last", "--head", "linear", "--model", str(tiny_model_dir),
         "--data-dir", str(toy_data_dir), "--max-train-examples", "41", "--output-dir", str(out),
         "--cache-dir", str(tmp_path / "cache"), "--epochs", "6", "--batch-size", "4", "--lr", "1e-2"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["distributed"]["num_processes"] == 3
    assert record["optimizer_steps_per_epoch"] == 4
    assert record["final_lr"] == 0.0


INTERRUPTING_RUN = """
import sys
import bertprobe.train as train
from bertprobe.cli import main

real_loss, calls = train.row_loss, 0


def loss(*args, **kwargs):
    global calls
    calls += 1
    if calls == {stop_at}:
        raise SystemExit(3)  # stands in for a killed job, after the checkpoint of epoch 1
    return real_loss(*args, **kwargs)


train.row_loss = loss
sys.exit(main(sys.argv[1:]))
"""


def _resume_options(model_dir, data_dir, out) -> list[str]:
    return [
        "--mode", "finetune", "--lr", "1e-3", "--model", str(model_dir), "--data-dir", str(data_dir),
        "--output-dir", str(out), "--epochs", "3", "--batch-size", "8", "--max-train-examples", "96",
    ]  # fmt: skip


@pytest.mark.parametrize(("interrupted_by", "resumed_by"), [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_with_another_process_count(
    interrupted_by, resumed_by, tiny_model_dir, toy_data_dir, tmp_path
):
    """Weights are stored under the bare model's names, so the DDP wrapper of N processes
    (``module.``) neither leaves its prefix in a checkpoint nor misses it when resuming."""
    out = tmp_path / "runs"
    options = _resume_options(tiny_model_dir, toy_data_dir, out)
    script = tmp_path / "interrupting_run.py"
    batches_per_process = 96 // 8 // interrupted_by
    script.write_text(INTERRUPTING_RUN.replace("{stop_at}", str(batches_per_process + 2)))
    launch = ["--multi_gpu", "--num_processes", str(interrupted_by)] if interrupted_by > 1 else ["--cpu"]
    result = accelerate_launch(launch, options, script=script)
    assert result.returncode != 0 and not list(out.glob("*.json"))
    [checkpoint] = out.glob("checkpoints/*/epoch-1")
    assert (checkpoint / "checkpoint.json").is_file()
    from safetensors.torch import load_file

    assert not [name for name in load_file(checkpoint / "model.safetensors") if name.startswith("module.")]

    launch = ["--multi_gpu", "--num_processes", str(resumed_by)] if resumed_by > 1 else ["--cpu"]
    result = accelerate_launch(launch, [*options, "--resume"])
    assert result.returncode == 0, result.stderr[-4000:]
    [record_path] = out.glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["resumed_from"] == str(checkpoint) and record["distributed"]["num_processes"] == resumed_by
    assert [entry["epoch"] for entry in record["history"]] == [1, 2, 3]
    assert record["metrics"]["dev"]["f1"] > 0.5


SEPARATE_FOLDERS = """
import os
import sys

from bertprobe.cli import main

# two "machines" without a shared file system: each process writes to a folder of its own
argv = [a.replace("RANK", os.environ["RANK"]) for a in sys.argv[1:]]
sys.exit(main(argv))
"""


def test_machines_without_a_shared_output_folder_stop_at_start_with_the_reason(tiny_model_dir, toy_data_dir, tmp_path):
    script = tmp_path / "separate_folders.py"
    script.write_text(SEPARATE_FOLDERS)
    result = accelerate_launch(
        ["--multi_gpu", "--num_processes", "2"],
        ["--mode", "feature", "--layers", "last", "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir),
         "--output-dir", str(tmp_path / "node-RANK"), "--cache-dir", str(tmp_path / "cache-RANK"), "--epochs", "1"],
        script=script,
    )  # fmt: skip
    assert result.returncode != 0
    assert re.search(r"--output-dir \S+node-0 is not shared: process\(es\) 1 cannot see a file", result.stderr)
    assert not list(tmp_path.glob("node-*/*.json")) and not list(tmp_path.glob("cache-*/*"))  # stopped before work


NAN_ON_ONE_PROCESS = """
import os
import sys

import torch

import bertprobe.train as train
from bertprobe.cli import main

real_loss = train.row_loss


def loss(*args, **kwargs):
    value = real_loss(*args, **kwargs)
    return value * float("nan") if os.environ["RANK"] == "1" else value


train.row_loss = loss
sys.exit(main(sys.argv[1:]))
"""


def test_a_non_finite_loss_on_one_process_stops_every_process(tiny_model_dir, toy_data_dir, tmp_path):
    script = tmp_path / "nan_on_one.py"
    script.write_text(NAN_ON_ONE_PROCESS)
    result = accelerate_launch(
        ["--multi_gpu", "--num_processes", "2"],
        ["--mode", "feature", "--layers", "last", "--head", "linear", "--model", str(tiny_model_dir),
         "--data-dir", str(toy_data_dir), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c"),
         "--epochs", "2", "--check-loss-every", "3"],
        script=script,
    )  # fmt: skip
    assert result.returncode != 0  # and it returned: no process was left waiting in a collective
    assert result.stderr.count("training loss became non-finite by epoch 1, step 3") == 2  # both processes


def test_two_processes_share_a_cache_build_and_store_what_one_process_stores(tiny_model_dir, toy_data_dir, tmp_path):
    """Each process encodes every other batch into one file; the main process finishes it.
    The features are those a single process builds, to the bit."""
    import numpy as np
    from test_end_to_end import toy_config

    from bertprobe.train import run

    options = ["--mode", "feature", "--layers", "allweighted", "--model", str(tiny_model_dir), "--data-dir",
               str(toy_data_dir), "--epochs", "1", "--lstm-hidden", "8", "--seed", "3"]  # fmt: skip
    shared = tmp_path / "shared"
    result = accelerate_launch(
        ["--multi_gpu", "--num_processes", "2"],
        [*options, "--output-dir", str(shared / "runs"), "--cache-dir", str(shared / "cache")],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path / "single", mode="feature", layers="allweighted",
                            epochs=1, lstm_hidden=8, seed=3))  # fmt: skip
    two = json.loads(next((shared / "runs").glob("*.json")).read_text())
    for split in ("train", "validation", "test"):
        folders = [Path(two["feature_cache"]["paths"][split]), Path(single["feature_cache"]["paths"][split])]
        manifests = [json.loads((folder / "manifest.json").read_text()) for folder in folders]
        assert [manifest["processes"] for manifest in manifests] == [2, 1]
        features = [np.load(folder / "features.npy") for folder in folders]
        assert features[0].shape == features[1].shape and np.array_equal(features[0], features[1])


def test_a_mid_epoch_resume_under_two_processes_logs_the_uninterrupted_loss(tiny_model_dir, toy_data_dir, tmp_path):
    """The epoch's partial loss saved at a mid-epoch checkpoint is the processes' mean, not
    the main process's: the resumed run's epoch loss and scores equal an uninterrupted run's."""
    options = [
        "--mode", "finetune", "--lr", "1e-3", "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir),
        "--epochs", "2", "--batch-size", "8", "--max-train-examples", "96", "--checkpoint-every", "2",
    ]  # fmt: skip
    two = ["--multi_gpu", "--num_processes", "2"]
    reference = accelerate_launch(two, [*options, "--output-dir", str(tmp_path / "reference")])
    assert reference.returncode == 0, reference.stderr[-3000:]
    script = tmp_path / "interrupting_run.py"
    script.write_text(INTERRUPTING_RUN.replace("{stop_at}", "6 + 5"))  # epoch 2, after its checkpoint at batch 4
    out = tmp_path / "interrupted"
    assert accelerate_launch(two, [*options, "--output-dir", str(out)], script=script).returncode != 0
    [checkpoint] = out.glob("checkpoints/*/epoch-2-batch-4")
    resumed = accelerate_launch(two, [*options, "--output-dir", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads(next((tmp_path / "reference").glob("*.json")).read_text())
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["resumed_from"] == str(checkpoint)
    assert record["history"] == expected["history"] and record["metrics"] == expected["metrics"]


def test_a_check_that_fails_on_the_main_process_stops_every_process(tiny_model_dir, toy_data_dir, tmp_path):
    """The free-space check runs on the main process; its refusal must reach the others,
    which would otherwise wait in the next collective until its timeout."""
    from test_faults import small_file_system

    with small_file_system(tmp_path / "small", size="64k") as small:
        result = accelerate_launch(
            ["--multi_gpu", "--num_processes", "2"],
            ["--mode", "feature", "--layers", "last", "--model", str(tiny_model_dir), "--data-dir",
             str(toy_data_dir), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(small)],
        )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("the feature cache needs about") == 2  # both processes stop with the reason
