"""What a record says about the machine it ran on, and how records land on disk."""

from __future__ import annotations

import json
import os
import platform
import stat
from pathlib import Path

import pytest

from bertprobe.results import cpu_model, write_json_atomic

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
