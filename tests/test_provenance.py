"""What a record says about the machine it ran on, and how records land on disk."""

from __future__ import annotations

import json
import os
import platform
import stat
import subprocess
from pathlib import Path

import pytest
from test_end_to_end import toy_config

import bertprobe.results
import bertprobe.train
from bertprobe.results import (
    code_commit,
    cpu_model,
    git_commit,
    is_allocator_variable,
    machine_description,
    write_json_atomic,
)

TWO_CORES = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
cpu MHz\t\t: 2596.138

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: Another CPU
cpu MHz\t\t: 3000.000
"""


def test_cpu_model_names_the_first_cpu_with_family_model_and_clock(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(TWO_CORES)
    assert cpu_model(cpuinfo) == "AMD EPYC (cpu family 25, model 17, 2596 MHz)"


def test_cpu_model_without_details_is_the_bare_name(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert cpu_model(cpuinfo) == "Some ARM core"


def test_cpu_model_never_fails_on_an_odd_clock(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: X\ncpu family\t: 6\ncpu MHz\t\t: unknown\n")
    assert cpu_model(cpuinfo) == "X (cpu family 6)"


def test_cpu_model_falls_back_to_the_platform_where_cpuinfo_is_missing(tmp_path: Path):
    assert cpu_model(tmp_path / "absent") == (platform.processor() or "unknown")


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_records_and_figures_get_the_modes_of_ordinary_new_files(tmp_path: Path, umask_022):
    import matplotlib.pyplot as plt

    from bertprobe.plots import save_atomic

    record = write_json_atomic(tmp_path / "record.json", {"f1": 0.5})
    figure = save_atomic(plt.figure(), tmp_path / "figure.png")
    assert stat.S_IMODE(record.stat().st_mode) == 0o644
    assert stat.S_IMODE(figure.stat().st_mode) == 0o644
    assert json.loads(record.read_text()) == {"f1": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "record.json"]  # no temporary left


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path: Path, monkeypatch, failing: str):
    """A killed or failing write (disk full, say) never leaves a half-written record: the
    old file stays as it was and no temporary is left behind."""
    import bertprobe.results as results_module

    target = write_json_atomic(tmp_path / "record.json", {"f1": 0.5})

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_module.os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(target, {"f1": 0.9, "long": "x" * 100_000})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"f1": 0.5}
    assert [path.name for path in tmp_path.iterdir()] == ["record.json"]


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_names_the_checkout_and_marks_changed_tracked_files(tmp_path: Path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "notes.txt").write_text("untracked files are not the code that ran\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{head}-dirty"
    assert git_commit(tmp_path / "code.py") == "unknown"  # not a folder git can run in


@pytest.fixture
def fresh_code_commit():
    code_commit.cache_clear()
    yield
    code_commit.cache_clear()


@pytest.mark.slow
def test_records_name_the_commit_checked_out_when_the_process_first_ran(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch, fresh_code_commit
):
    """A commit that lands while a sweep trains is not the code that runs: the first run's
    record and every later run of the same process name the commit read at the first start."""
    checkout = {"head": "commit-at-start"}
    monkeypatch.setattr(bertprobe.results, "git_commit", lambda root=None: checkout["head"])
    evaluate = bertprobe.train.evaluate

    def evaluate_then_land_a_commit(*args, **kwargs):
        checkout["head"] = "commit-landed-mid-run"
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(bertprobe.train, "evaluate", evaluate_then_land_a_commit)
    options = dict(mode="feature", layers="last", epochs=1, max_train_examples=40)
    first = bertprobe.train.run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, seed=1, **options))
    second = bertprobe.train.run(toy_config(tiny_model_dir, toy_data_dir, tmp_path, seed=2, **options))
    assert checkout["head"] == "commit-landed-mid-run"  # the runs did evaluate
    assert first["git_commit"] == second["git_commit"] == "commit-at-start"
    on_disk = [json.loads(path.read_text())["git_commit"] for path in (tmp_path / "runs").glob("*.json")]
    assert on_disk == ["commit-at-start", "commit-at-start"]


def test_machine_names_the_allocator_settings_that_are_set(monkeypatch):
    """MALLOC_* variables change a CPU run's speed (benchmarks/cpu_allocator.py), so a record
    says which were set; none set, no entry."""
    for name in [name for name in os.environ if is_allocator_variable(name)]:
        monkeypatch.delenv(name)
    assert "allocator_env" not in machine_description()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "68719476736")
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    monkeypatch.setenv("MALLOCATOR", "not one of glibc's")
    assert machine_description()["allocator_env"] == {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
    # another allocator, preloaded, with its settings
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    monkeypatch.setenv("MALLOC_CONF", "dirty_decay_ms:-1")
    allocator = machine_description()["allocator_env"]
    assert allocator["LD_PRELOAD"].endswith("libjemalloc.so.2") and allocator["MALLOC_CONF"] == "dirty_decay_ms:-1"
