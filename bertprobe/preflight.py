"""Checks made before any model loads: the folders a run writes to can be written, and
the disk has room for what it will write there."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bertprobe.errors import ConfigError


def human_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_writable(folder: str | Path, option: str) -> None:
    """Write (then remove) a file in ``folder``, or, where it does not exist yet, in the
    nearest folder above it that does (where it will be made); a folder that cannot take
    one stops the run now, in one line naming the option, instead of after hours of
    training. Nothing is left behind."""
    path = Path(folder)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path} is not writable: {existing} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".bertprobe-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(f"{option} {path} is not writable: {error.strerror or error}") from None


def check_free_space(folder: str | Path, needed: int, option: str, what: str) -> None:
    """Stop when ``needed`` bytes (with 5% to spare) will not fit in ``folder``'s file system."""
    if needed <= 0:
        return
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < needed * 1.05:
        raise ConfigError(
            f"{what} needs about {human_bytes(needed)} under {option} {folder}, but only {human_bytes(free)} is free "
            f"there: free some space or point {option} elsewhere"
        )


#: Launcher settings (environment variables ``accelerate launch`` sets from its config) that
#: shard the model or the optimizer. bertprobe refuses them: its best-epoch snapshot, the
#: frozen-weights digest and the scalar-mix readout read whole tensors, and its loaders use
#: a batch sampler, which DeepSpeed's "auto" batch size cannot read. Data parallelism
#: (``--multi_gpu``) replicates the model and is supported.
SHARDING_LAUNCHERS = {
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
}


def refuse_sharding(environ: dict[str, str]) -> None:
    """Stop a run launched with model sharding, naming it, before any model loads."""
    for variable, name in SHARDING_LAUNCHERS.items():
        if environ.get(variable, "false").lower() in ("true", "1", "yes"):
            raise ConfigError(
                f"{name} ({variable}) is not supported: bertprobe keeps whole models on every process (snapshots of "
                f"the best epoch, the frozen-weights check and the layer weights read whole tensors). Launch with "
                f"--multi_gpu (data parallel) instead; the models it wraps fit one device."
            )


def check_shared_folder(accelerator, folder: Path) -> None:
    """Every process must see the files the main process writes in ``folder``: checkpoints
    are saved by the main process and resumed by all, so processes on machines that do not
    share the folder would resume different points and hang. The main process writes a
    file, every process looks for it, and one that cannot see it stops the run."""
    import socket
    import uuid

    from accelerate.utils import broadcast_object_list, gather_object

    name = broadcast_object_list([f".bertprobe-shared-{uuid.uuid4().hex}" if accelerator.is_main_process else None])[0]
    marker = Path(folder) / name
    if accelerator.is_main_process:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(socket.gethostname())
    accelerator.wait_for_everyone()
    seen = marker.is_file()
    everyone = gather_object([seen])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker.unlink(missing_ok=True)
    if not all(everyone):
        blind = [index for index, saw in enumerate(everyone) if not saw]
        raise ConfigError(
            f"--output-dir {folder.parent} is not shared: process(es) {', '.join(map(str, blind))} cannot see a file "
            f"the main process wrote in it. Checkpoints are saved by the main process and resumed by every "
            f"process, so a run on several machines needs one --output-dir on a file system they all share "
            f"(or --no-checkpoint)"
        )
