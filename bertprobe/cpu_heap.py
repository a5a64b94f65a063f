"""The CPU's memory allocator in long runs: glibc's heap trimmed, and a hint towards jemalloc.

Fine-tuning on the CPU under glibc's default settings spends much of each step in the
kernel zero-filling pages: every block above the mmap threshold (at most 32 MB) is a fresh
``mmap``, unmapped again on ``free``. ``MALLOC_MMAP_MAX_=0`` with a large
``MALLOC_TRIM_THRESHOLD_`` keeps such blocks in the heap to be reused, but batches of
varying shapes fragment it, and resident memory then grows until the kernel kills the run
(``benchmarks/cpu_allocator.py``). ``malloc_trim(0)`` hands every whole free page of every
arena back to the kernel: called every N steps (:func:`trim_heap`, an arm of that
benchmark), it bounds the memory the heap keeps between calls, but not the peak within N
steps, which in the Table 7 fine-tuning run still crept up; so runs do not offer it.

jemalloc, preloaded and keeping its pages, does better than either on long inputs (steps
as fast as glibc's kept heap, memory flat): :func:`allocator_hint` says so when a run
fine-tunes in document context on the CPU without it. Pages kept for one run are not what
the next run needs, so every run ends by handing its free pages back
(:func:`release_free_memory`).
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Callable, Mapping

from bertprobe.errors import HeapTrimUnavailableError


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def heap_trimming_available() -> bool:
    """Whether this process's C library is glibc, whose ``malloc_trim`` :func:`trim_heap` calls."""
    return _glibc() is not None


def trim_heap() -> bool:
    """Return the free pages of every malloc arena to the kernel; True if any were returned."""
    libc = _glibc()
    if libc is None:
        raise HeapTrimUnavailableError(
            f"trimming the heap needs glibc's malloc_trim, which {platform.system()}'s C library lacks"
        )
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))


#: jemalloc's name for every arena at once (``MALLCTL_ARENAS_ALL``), as in ``arena.4096.purge``
_ALL_ARENAS = 4096


@functools.cache
def _jemalloc_mallctl() -> Callable[..., int] | None:
    """jemalloc's ``mallctl`` where jemalloc is this process's allocator (preloaded), else None."""
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    return mallctl


def release_free_memory() -> str | None:
    """Hand the allocator's free pages back to the kernel, between the runs of one process.

    jemalloc told to keep its pages (``dirty_decay_ms:-1``, :data:`JEMALLOC_RECIPE`) never
    returns them: within a run that is what makes its steps fast, but a tuning's process
    under it, with nothing released between trials, peaked higher with every trial (3 GB in
    its first 10%-CoNLL fine-tuning trial, 24 GB by its eighth, where glibc's peaks stayed
    near 2 GB) until the machine ran out. Purging every arena after each run starts the
    next one from what is live. Under glibc, ``malloc_trim(0)`` does the same for its heap.
    Returns the allocator that released ("jemalloc", "glibc"), or None where neither is at
    hand.
    """
    mallctl = _jemalloc_mallctl()
    if mallctl is not None:
        return "jemalloc" if mallctl(f"arena.{_ALL_ARENAS}.purge".encode(), None, None, None, 0) == 0 else None
    if heap_trimming_available():
        trim_heap()
        return "glibc"
    return None


JEMALLOC_RECIPE = (
    "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1"
)


def allocator_hint(
    device_type: str, trains_encoder: bool, long_inputs: bool, environment: Mapping[str, str]
) -> str | None:
    """A line for the log when a run fine-tunes on long inputs (document context) on a Linux
    CPU with glibc's malloc, where jemalloc keeping its pages made steps about 1.45x faster
    (``benchmarks/cpu_allocator.py``: windows of 128-512 tokens); ``None`` elsewhere. On
    short inputs (sentence context) it bought about 5% and held 2-4x the memory (a tuning's
    fine-tuning runs: 4.5-8.8 GB against 1.6-2.1 GB), so it is not suggested there."""
    if device_type != "cpu" or not trains_encoder or not long_inputs or not heap_trimming_available():
        return None
    preloaded = environment.get("LD_PRELOAD", "")
    if any(allocator in preloaded for allocator in ("jemalloc", "tcmalloc", "mimalloc")):
        return None  # another allocator already replaces glibc's
    return (
        "fine-tuning on long inputs on the CPU with glibc's malloc: steps run about 1.45x faster with jemalloc "
        f"keeping its pages, at more resident memory (apt install libjemalloc2; {JEMALLOC_RECIPE} before the command)"
    )
