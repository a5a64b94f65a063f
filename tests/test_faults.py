"""Faults that must not lose work or give wrong numbers: damaged caches and checkpoints,
folders that cannot be written, full disks, and two runs into one folder."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_end_to_end import toy_config
from test_features import build
from test_long_runs import Interrupted, interrupt_at_training_batch

import bertprobe.train as train_module
from bertprobe.checkpoint import COMPLETE_FILE, checkpoint_root, complete_checkpoints, run_lock
from bertprobe.config import RunConfig
from bertprobe.errors import CacheError, CheckpointError, ConfigError, RecordWriteError
from bertprobe.features import MANIFEST, FeatureCache, weights_digest
from bertprobe.preflight import check_free_space, check_writable
from bertprobe.results import unsaved_record_path
from bertprobe.train import run

# ----------------------------------------------------------------------------- the feature cache


def _truncate(folder: Path) -> None:
    path = folder / "features.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(folder: Path) -> None:
    (folder / "features.npy").write_bytes(b"")


def _bad_header(folder: Path) -> None:
    data = bytearray((folder / "features.npy").read_bytes())
    data[10:20] = b"garbage!!!"
    (folder / "features.npy").write_bytes(bytes(data))


def _bad_manifest(folder: Path) -> None:
    (folder / MANIFEST).write_text("{not json")


def _shuffled_offsets(folder: Path) -> None:
    offsets = np.load(folder / "offsets.npy")
    np.save(folder / "offsets.npy", offsets[::-1].copy())


def _flipped(folder: Path) -> None:
    """A quarter of the feature bytes inverted, past the header: the file parses as before."""
    path = folder / "features.npy"
    data = bytearray(path.read_bytes())
    start = 128
    for index in range(start, start + (len(data) - start) // 4):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def _nan(folder: Path) -> None:
    features = np.load(folder / "features.npy", mmap_mode="r+")
    features[: len(features) // 4] = np.nan
    features.flush()


DAMAGE = {
    "truncated": _truncate,
    "zero-length": _empty,
    "bad header": _bad_header,
    "bad manifest": _bad_manifest,
    "shuffled offsets": _shuffled_offsets,
    "25% of bytes flipped": _flipped,
    "25% set to NaN": _nan,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_is_named_set_aside_and_rebuilt(tmp_path, encoder, windows, damage, caplog):
    cache = FeatureCache(tmp_path, "tiny", weights_digest(encoder))
    original = build(cache, windows, encoder, (2, 4))
    expected = np.array(original.features)
    folder = original.path
    del original
    DAMAGE[damage](folder)

    with caplog.at_level(logging.WARNING, logger="bertprobe.features"):
        assert cache.find(windows, (4,)) is None
    [warning] = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert str(folder) in warning and "moved aside" in warning
    assert len(list(folder.parent.glob(f".damaged-{folder.name}-*"))) == 1  # kept for a look, never found again
    assert not folder.exists()

    rebuilt, built = cache.build_or_find(windows, (4,), (2, 4), encoder, 0, "validation", torch.device("cpu"))
    assert built and rebuilt.path == folder
    assert np.array_equal(np.array(rebuilt.features), expected)
    assert cache.find(windows, (4,)) is not None  # the rebuilt cache verifies


@pytest.mark.slow
def test_a_run_with_a_damaged_dev_cache_scores_as_one_with_a_sound_cache(tiny_model_dir, toy_data_dir, tmp_path):
    options = dict(mode="feature", layers="last", epochs=3, lr=1e-2)
    first = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, **options))
    _flipped(Path(first["feature_cache"]["paths"]["validation"]))
    (tmp_path / "runs" / f"{first['name']}.json").unlink()
    second = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, **options))
    assert second["feature_cache"]["built"] == ["validation"]  # found damaged, rebuilt; the others reused
    assert second["metrics"]["dev"]["f1"] == first["metrics"]["dev"]["f1"] > 0.5


def _build_in_a_child(cache_dir: str, model_dir: str, data_dir: str, queue) -> None:
    """One of several processes building the same cache at once."""
    from transformers import AutoModel, AutoTokenizer

    from bertprobe.alignment import encode_split
    from bertprobe.tasks.conll import load_conll_dir

    torch.set_num_threads(1)
    encoder = AutoModel.from_pretrained(model_dir).eval()
    corpus = load_conll_dir(data_dir)
    labels = {label: i for i, label in enumerate(corpus.label_list())}
    windows = encode_split(corpus.splits["train"], AutoTokenizer.from_pretrained(model_dir), labels, max_length=64)
    cache = FeatureCache(cache_dir, "tiny", weights_digest(encoder))
    cached, built = cache.build_or_find(windows, (4,), (4,), encoder, 0, "train", torch.device("cpu"))
    queue.put((built, str(cached.path)))


@pytest.mark.slow
def test_concurrent_builders_end_with_one_complete_cache_and_no_error(tiny_model_dir, toy_data_dir, tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    args = (str(tmp_path), str(tiny_model_dir), str(toy_data_dir), queue)
    workers = [context.Process(target=_build_in_a_child, args=args) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    results = [queue.get(timeout=5) for _ in workers]
    assert sorted(built for built, _ in results) == [False, False, True]  # one built, two used its cache
    assert len({path for _, path in results}) == 1
    [key] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [p.name for p in key.iterdir() if not p.name.startswith(".")] == ["layers-4"]
    assert not list(key.glob(".building-*"))


# ----------------------------------------------------------------------------- checkpoints


def _interrupted_run(tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, **options):
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path / "interrupted", checkpoint_every=3, **options)
    interrupt_at_training_batch(monkeypatch, 10 + 8)  # epoch 2, after its checkpoints at batches 3 and 6
    with pytest.raises(Interrupted):
        run(config)
    monkeypatch.undo()
    return RunConfig(**{**config.to_dict(), "tags": (), "resume": True})


OPTIONS = dict(mode="finetune", epochs=3, batch_size=6, max_train_examples=60, lr=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_checkpoint_is_refused_and_the_one_before_it_resumed(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, damage, caplog
):
    reference = run(toy_config(tiny_model_dir, toy_data_dir, tmp_path / "reference", **OPTIONS))
    resume = _interrupted_run(tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, **OPTIONS)
    root = checkpoint_root(resume.output_dir, resume.run_name())
    newest, previous = complete_checkpoints(root)
    assert (newest.name, previous.name) == ("epoch-2-batch-6", "epoch-2-batch-3")
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[-4000:-3000] = bytes(b ^ 0x55 for b in data[-4000:-3000])
    weights.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        resumed = run(resume)
    assert resumed["resumed_from"] == str(previous)
    [warning] = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert f"checkpoint {newest} is damaged (model.safetensors" in warning and "moved aside" in warning
    # resuming the earlier checkpoint loses nothing but time: the result is the uninterrupted one
    assert resumed["metrics"] == reference["metrics"]


def test_no_intact_checkpoint_is_an_error_that_names_what_is_wrong(tiny_model_dir, toy_data_dir, tmp_path, monkeypatch):
    resume = _interrupted_run(tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, **OPTIONS)
    root = checkpoint_root(resume.output_dir, resume.run_name())
    for folder in complete_checkpoints(root):
        (folder / "optimizer.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint under .*optimizer\.bin has 0 bytes"):
        run(resume)


def test_a_checkpoint_save_on_a_full_disk_fails_clearly_and_leaves_no_half_folder(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    from accelerate import Accelerator

    saves = []

    def full_disk(self, output_dir, **kwargs):
        saves.append(output_dir)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: No space left")

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=2)
    with pytest.raises(CheckpointError, match=r"could not save the checkpoint .*epoch-1: \[enforce fail.*No space"):
        run(config)
    assert saves and not Path(saves[0]).exists()


# ----------------------------------------------------------------------------- folders and disks


def test_an_unwritable_output_folder_stops_the_run_before_any_model_loads(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(train_module, "load_encoder", lambda *a: pytest.fail("the model was loaded"))
    monkeypatch.setattr(train_module, "load_task", lambda *a: pytest.fail("the data were loaded"))
    for option, value in (("output_dir", blocker / "runs"), ("cache_dir", blocker / "cache")):
        config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", **{option: str(value)})
        flag = "--" + option.replace("_", "-")
        with pytest.raises(ConfigError, match=f"^{flag} {value} is not writable: "):
            run(config)


def test_a_read_only_folder_is_refused_with_its_option(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(ConfigError, match=r"^--output-dir .* is not writable: Permission denied$"):
        check_writable(tmp_path, "--output-dir")


@contextlib.contextmanager
def small_file_system(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (root only; the test skips elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_cache_that_cannot_fit_is_refused_before_anything_is_encoded(tiny_model_dir, toy_data_dir, tmp_path):
    with small_file_system(tmp_path / "small", size="64k") as small:
        config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", cache_dir=str(small))
        with pytest.raises(ConfigError, match=r"the feature cache needs about .* under --cache-dir .* only .* free"):
            run(config)
        assert not [p for p in small.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_a_full_disk_during_a_cache_build_is_a_clear_error_not_a_crash(
    tmp_path, encoder, windows, monkeypatch, tiny_model_dir, toy_data_dir
):
    with small_file_system(tmp_path / "small", size="64k") as small:
        cache = FeatureCache(small, "tiny", weights_digest(encoder))
        with pytest.raises(CacheError, match=r"cannot write the validation feature cache under .*No space left"):
            build(cache, windows, encoder, (0, 1, 2, 3, 4))
        assert not list(small.rglob(".building-*"))  # no half-built folder left


def test_free_space_check_counts_what_is_needed():
    check_free_space("/", 1, "--cache-dir", "the feature cache")
    with pytest.raises(ConfigError, match=r"^the feature cache needs about 8192\.0 TiB under --cache-dir /"):
        check_free_space("/", 8 * 1024**5, "--cache-dir", "the feature cache")


def test_a_record_that_cannot_be_written_is_kept_and_the_message_says_where(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=1)
    real_write = train_module.write_json_atomic
    target = Path(config.output_dir) / f"{config.run_name()}.json"

    def full_disk(path, payload):
        if Path(path) == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, payload)

    monkeypatch.setattr(train_module, "write_json_atomic", full_disk)
    kept = unsaved_record_path(config.run_name())
    kept.unlink(missing_ok=True)
    with pytest.raises(RecordWriteError, match=rf"No space left on device\); it was written to {kept} instead"):
        run(config)
    record = json.loads(kept.read_text())
    assert record["name"] == config.run_name() and record["metrics"]["dev"]["f1"] >= 0
    kept.unlink()


# ----------------------------------------------------------------------------- one run at a time


def test_a_second_identical_run_says_the_first_is_going(tiny_model_dir, toy_data_dir, tmp_path):
    config = toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=1)
    root = checkpoint_root(config.output_dir, config.run_name())
    going = rf"this run is already going \(process {os.getpid()} on "
    with run_lock(root), pytest.raises(CheckpointError, match=going):
        run(config)
    assert run(config)["metrics"]["dev"]["f1"] >= 0  # the lock is gone with its holder
    assert not (root.parent / f"{root.name}.lock").exists()
    assert not list(root.parent.glob(f"{root.name}*")) and not (root / COMPLETE_FILE).exists()


@pytest.mark.parametrize(
    ("variable", "name"), [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")]
)
def test_a_sharded_launch_is_refused_by_name_before_any_model_loads(
    variable, name, tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv(variable, "true")
    monkeypatch.setattr(train_module, "load_encoder", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigError, match=rf"^{name} \({variable}\) is not supported: .*Launch with --multi_gpu"):
        run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="finetune"))
