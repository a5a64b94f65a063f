"""Result records: what a run measured and everything needed to reproduce it."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "seqeval", "tokenizers", "numpy")


def unsaved_record_path(run_name: str) -> Path:
    """Where a record goes when its output folder cannot take it: the system's temporary
    folder, under ``bertprobe-unsaved-records``."""
    return Path(tempfile.gettempdir()) / "bertprobe-unsaved-records" / f"{run_name}.json"


def write_json_atomic(path: str | Path, payload: object) -> Path:
    """Write JSON so that readers see either the old file or the complete new one."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def temporary_beside(target: Path) -> tuple[int, str]:
    """A new temporary file in ``target``'s folder, to be renamed onto ``target``.

    ``mkstemp`` makes the file private (mode 0600); it gets the mode any new file would
    get here (0666 less the umask), so a renamed record or figure is as readable as one
    written directly. Returns the open handle and the file's path.
    """
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return handle, temporary


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text so that readers see either the old file or the complete new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = temporary_beside(target)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def git_commit(root: Path = PACKAGE_ROOT) -> str:
    """The commit checked out in ``root`` now, with ``-dirty`` when tracked files have changes;
    ``unknown`` where ``root`` is no git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


@functools.cache
def code_commit() -> str:
    """The commit of the code this process runs: read once, when its first run starts.

    Python imported bertprobe before that, so later commits (a change landed while a
    long sweep trains) are not the code that runs; reading the work tree when a record
    is written would name them.
    """
    return git_commit()


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's name as Linux reports it, with its family/model numbers and clock.

    Virtual machines often report a bare brand ("AMD EPYC"); the family and model numbers
    still tell one generation from another, which is what makes two runs' times comparable.
    Where ``cpuinfo`` cannot be read (macOS, Windows), ``platform.processor()`` is used.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown"
    details = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
    # no clock, or one that is not a number: the name and model numbers still say enough
    with contextlib.suppress(KeyError, ValueError):
        details.append(f"{float(fields['cpu MHz']):.0f} MHz")
    return f"{name} ({', '.join(details)})" if details else name


def is_allocator_variable(name: str) -> bool:
    """Whether an environment variable sets the memory allocator, which changes a run's speed,
    never its results (benchmarks/cpu_allocator.py): glibc's ``MALLOC_*`` tunables,
    jemalloc's ``MALLOC_CONF``, and a preloaded allocator (``LD_PRELOAD``)."""
    return name.startswith("MALLOC_") or name == "LD_PRELOAD"


def machine_description() -> dict[str, object]:
    import torch

    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    allocator = {name: value for name, value in sorted(os.environ.items()) if is_allocator_variable(name)}
    if allocator:
        info["allocator_env"] = allocator
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def command_line() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def provenance(commit: str) -> dict[str, object]:
    """What a benchmark's report records beside its numbers: the command, the commit of the
    code (:func:`code_commit`, read when the script started), the machine and the versions."""
    return {
        "command": command_line(),
        "git_commit": commit,
        "machine": machine_description(),
        "versions": package_versions(),
    }


def read_record(path: str | Path) -> dict[str, object]:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def reset_peak_memory(device_type: str) -> bool:
    """Start a run's peak-memory count afresh: the process's peak resident set (Linux:
    ``/proc/self/clear_refs``; ``False`` where that is unavailable, and the record then
    carries the whole process's peak) and the CUDA allocator's peak."""
    import torch

    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def peak_memory_bytes(device_type: str) -> dict[str, int]:
    """Peak accelerator memory where there is one, and the process's peak resident set:
    since :func:`reset_peak_memory` where it worked (``VmHWM``), else over the process's
    life (``ru_maxrss``), which in a sweep includes earlier runs."""
    import resource

    import torch

    peaks = {"process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    peaks["process_max_rss_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    if device_type == "cuda":
        peaks["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return peaks
