"""Checkpoints, so that an interrupted run resumes where it stopped.

After every epoch the loop saves, under ``CHECKPOINT_ROOT / <run name> / epoch-<n>``
(and, with ``--checkpoint-every B``, every B batches within an epoch, under
``epoch-<n>-batch-<b>``: b batches of epoch n done):

* Accelerate's training state (``accelerator.save_state``): model, optimizer, scheduler
  and every random-number generator, so the next epoch draws the same dropout masks and
  the same batch order as an uninterrupted run would;
* ``progress.pt``: the loop's own bookkeeping (history, best epoch, best-dev weights and
  predictions, time spent so far, the checkpoints that earlier processes resumed, and each
  process's commit, command and machine).

``progress.pt`` is written last, atomically; a checkpoint folder without it is an
interrupted save and is ignored. Only the newest complete checkpoint is kept.

Two guards keep a checkpoint from being lost or misused: a run that finds a checkpoint of
itself but was not told to resume stops instead of overwriting it
(:func:`refuse_to_overwrite`), and a run resumes only a checkpoint trained on the same
labels and training data (:func:`training_fingerprint`, checked by
:func:`load_checkpoint` before any state is loaded).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bertprobe.alignment import EncodedWindow
from bertprobe.features import windows_digest

PROGRESS_FILE = "progress.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that must not be overwritten, or cannot be resumed by this run."""


@dataclass
class TrainingProgress:
    """What the loop knows at a checkpoint besides the weights and optimizer."""

    epoch: int = 0  # epochs finished
    step: int = 0  # batches trained on, over all epochs
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` done (0 at an epoch's end)
    epoch_loss_sum: float = 0.0  # their summed loss, which the epoch's mean loss needs
    history: list[dict[str, object]] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_dev: tuple[dict, list] | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    # wall time of the processes that ran before this checkpoint, up to it; a resumed run
    # adds its own, so the record's total covers every process, like train_seconds does
    wall_seconds: float = 0.0
    resumed_from: list[str] = field(default_factory=list)  # checkpoints resumed, oldest first
    # each process that trained the run: when it started, from which checkpoint, its commit,
    # command and machine (checkpoints saved before this field existed lack the earlier ones)
    processes: list[dict[str, object]] = field(default_factory=list)
    # what the run trained on (:func:`training_fingerprint`); None in checkpoints saved
    # before it was kept, which resume unchecked
    fingerprint: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def checkpoint_root(output_dir: str | Path, run_name: str) -> Path:
    return Path(output_dir) / "checkpoints" / run_name


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint folder whose save completed, or ``None``."""
    if not root.is_dir():
        return None
    complete = [path for path in root.glob("epoch-*") if (path / PROGRESS_FILE).is_file()]
    return max(complete, key=_position, default=None)


def checkpoint_name(progress: TrainingProgress) -> str:
    """``epoch-2`` after epoch 2; ``epoch-3-batch-150`` 150 batches into epoch 3."""
    if progress.batch_in_epoch == 0:
        return f"epoch-{progress.epoch}"
    return f"epoch-{progress.epoch + 1}-batch-{progress.batch_in_epoch}"


def _position(folder: Path) -> tuple[int, int]:
    """(epochs finished, batches into the next) of a folder named by ``checkpoint_name``."""
    parts = folder.name.split("-")
    if len(parts) == 4 and parts[2] == "batch":
        return int(parts[1]) - 1, int(parts[3])
    return int(parts[1]), 0


def save_checkpoint(accelerator, root: Path, progress: TrainingProgress) -> Path:
    """Save the training state and the loop's progress (every process must call this;
    only the main process writes the progress file and prunes older checkpoints)."""
    folder = root / checkpoint_name(progress)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        temporary = folder / f".{PROGRESS_FILE}.tmp"
        with temporary.open("wb") as stream:
            torch.save(progress.to_dict(), stream)
            stream.flush()
            os.fsync(stream.fileno())  # on disk before the rename marks the checkpoint complete
        os.replace(temporary, folder / PROGRESS_FILE)
        for older in root.glob("epoch-*"):  # the newest is the one just written
            if older != folder:
                shutil.rmtree(older, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def training_fingerprint(labels: Sequence[object], train_windows: Sequence[EncodedWindow]) -> dict[str, object]:
    """The label list and a digest of the training windows (inputs, word positions and
    labels): what a checkpoint must share with the run that resumes it. The run's name
    already covers every option; this covers the data files' contents, which it does not."""
    digest = hashlib.sha256(windows_digest(train_windows).encode())
    for window in train_windows:
        digest.update(np.asarray(window.labels, dtype=np.float64).tobytes())
        digest.update(b";")
    return {"labels": [str(label) for label in labels], "train": digest.hexdigest()}


def refuse_to_overwrite(root: Path, resume: bool) -> None:
    """Stop a run that would start over on top of its own unfinished checkpoint: its first
    save would delete the checkpoint, and the hours it holds, without a word."""
    found = latest_checkpoint(root)
    if found is not None and not resume:
        raise CheckpointError(
            f"an unfinished run of this configuration left a checkpoint at {found}: pass --resume to continue it, "
            f"or delete {root} to start over"
        )


def load_checkpoint(accelerator, folder: Path, fingerprint: dict[str, object] | None = None) -> TrainingProgress:
    """Restore the training state saved in ``folder`` and return the loop's progress.

    With ``fingerprint``, a checkpoint trained on other labels or training data is refused
    before anything is loaded (a different label count would fail deep in the loader, the
    same count would silently train on).
    """
    saved = torch.load(folder / PROGRESS_FILE, weights_only=False)
    kept = saved.get("fingerprint")
    if fingerprint is not None and kept is not None and kept != fingerprint:
        what = "labels" if kept.get("labels") != fingerprint.get("labels") else "training data"
        detail = f" ({kept.get('labels')} then, {fingerprint.get('labels')} now)" if what == "labels" else ""
        raise CheckpointError(
            f"the checkpoint at {folder} was trained on other {what}{detail}: the data files changed since it was "
            f"saved; restore them, or delete {folder.parent} to start over"
        )
    accelerator.load_state(str(folder))
    return TrainingProgress(**saved)


def remove_checkpoints(accelerator, root: Path) -> None:
    """Delete a finished run's checkpoints (main process)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(root, ignore_errors=True)
        if root.parent.is_dir() and not any(root.parent.iterdir()):
            root.parent.rmdir()
