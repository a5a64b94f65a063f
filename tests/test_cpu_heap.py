"""Handing free memory back: glibc's heap trimmed, jemalloc's kept pages purged between runs,
and platforms without either say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import find_jemalloc

from bertprobe import cpu_heap

ROOT = Path(__file__).resolve().parent.parent

# Under MALLOC_MMAP_MAX_=0 and a huge MALLOC_TRIM_THRESHOLD_, 256 freed MiB stay resident
# until malloc_trim(0) hands them back.
PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import torch
from bertprobe.cpu_heap import trim_heap

def resident_mib():
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

before = resident_mib()
blocks = [torch.ones(2**20 // 4) for _ in range(256)]  # 256 blocks of 1 MiB, every page touched
del blocks
freed = resident_mib()
released = trim_heap()
print(json.dumps({"before": before, "freed": freed, "trimmed": resident_mib(), "released": released}))
"""


@pytest.mark.skipif(not cpu_heap.heap_trimming_available(), reason="needs glibc")
def test_trim_heap_returns_freed_heap_pages_to_the_kernel():
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    environment.update({"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36)})
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT)], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    memory = json.loads(result.stdout.strip().splitlines()[-1])
    assert memory["freed"] - memory["before"] > 200  # the freed blocks stayed resident
    assert memory["freed"] - memory["trimmed"] > 200  # and trimming gave them back
    assert memory["released"] is True


def test_trim_heap_without_glibc_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(cpu_heap.platform, "system", lambda: "Darwin")
    cpu_heap._glibc.cache_clear()
    try:
        assert cpu_heap.heap_trimming_available() is False
        with pytest.raises(cpu_heap.HeapTrimUnavailableError, match=r"malloc_trim.*Darwin"):
            cpu_heap.trim_heap()
    finally:
        cpu_heap._glibc.cache_clear()


@pytest.mark.skipif(not cpu_heap.heap_trimming_available(), reason="needs glibc")
def test_the_log_points_cpu_fine_tuning_on_long_inputs_at_jemalloc():
    hint = cpu_heap.allocator_hint("cpu", trains_encoder=True, long_inputs=True, environment={})
    assert hint is not None and cpu_heap.JEMALLOC_RECIPE in hint
    jemalloc = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}
    assert cpu_heap.allocator_hint("cpu", True, True, jemalloc) is None
    assert cpu_heap.allocator_hint("cpu", True, True, {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}) is None
    assert cpu_heap.allocator_hint("cpu", True, True, {"LD_PRELOAD": "/usr/lib/libfaketime.so.1"}) is not None
    assert cpu_heap.allocator_hint("cpu", trains_encoder=False, long_inputs=True, environment={}) is None  # no backward
    assert cpu_heap.allocator_hint("cpu", trains_encoder=True, long_inputs=False, environment={}) is None  # no gain
    assert cpu_heap.allocator_hint("cuda", trains_encoder=True, long_inputs=True, environment={}) is None


def test_no_jemalloc_hint_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(cpu_heap, "heap_trimming_available", lambda: False)
    assert cpu_heap.allocator_hint("cpu", trains_encoder=True, long_inputs=True, environment={}) is None


# jemalloc keeping its pages (the recipe the log suggests) holds 256 freed MiB until purged.
PURGE_PROBE = PROBE.replace("import trim_heap", "import release_free_memory").replace(
    "released = trim_heap()", "released = release_free_memory()"
)


@pytest.mark.skipif(find_jemalloc() is None, reason="no libjemalloc on this machine")
def test_between_runs_jemalloc_keeping_its_pages_gives_them_back():
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    environment.update({"LD_PRELOAD": find_jemalloc(), "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"})
    result = subprocess.run(
        [sys.executable, "-c", PURGE_PROBE, str(ROOT)], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    memory = json.loads(result.stdout.strip().splitlines()[-1])
    assert memory["freed"] - memory["before"] > 200  # kept: the freed blocks stayed resident
    assert memory["freed"] - memory["trimmed"] > 200  # and the purge gave them back
    assert memory["released"] == "jemalloc"


@pytest.mark.skipif(not cpu_heap.heap_trimming_available(), reason="needs glibc")
def test_between_runs_glibc_trims_its_heap_where_jemalloc_is_not_loaded():
    if cpu_heap._jemalloc_mallctl() is not None:
        pytest.skip("this test process runs on a preloaded jemalloc")
    assert cpu_heap.release_free_memory() == "glibc"


def test_between_runs_nothing_is_released_without_glibc_or_jemalloc(monkeypatch):
    monkeypatch.setattr(cpu_heap, "_jemalloc_mallctl", lambda: None)
    monkeypatch.setattr(cpu_heap, "heap_trimming_available", lambda: False)
    assert cpu_heap.release_free_memory() is None
