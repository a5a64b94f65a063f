"""What a record says about the machine it ran on."""

from __future__ import annotations

import platform
from pathlib import Path

from bertprobe.results import cpu_model

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


def test_cpu_model_falls_back_to_the_platform_where_cpuinfo_is_missing(tmp_path: Path):
    assert cpu_model(tmp_path / "absent") == (platform.processor() or "unknown")
