"""Workers as Slurm array tasks share one tuning study: every trial runs once between them.

Needs a reachable Slurm with an idle node (``scripts/start_slurm.sh`` starts a one-node one;
CI runs it first). Without one the tests are skipped and say why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertprobe.tuning import Tuning
from tests.test_tuning import write_tuning


def idle_slurm_node() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        states = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return states.returncode == 0 and "idle" in states.stdout.split()


START_SLURM = Path(__file__).resolve().parent.parent / "scripts" / "start_slurm.sh"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or not idle_slurm_node() or not MUNGE_SOCKET.exists(),
    reason="needs root and a running one-node Slurm whose munged listens on " + str(MUNGE_SOCKET),
)
def test_start_slurm_restarts_a_dead_munged_whose_socket_was_left_behind():
    """A munged that died leaves its socket file, and Slurm's commands then retry for minutes
    before failing: the script must ask munge itself, not trust the file, and bring Slurm back."""
    subprocess.run(["pkill", "-KILL", "-x", "munged"], check=False)
    for _ in range(50):
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            break
        time.sleep(0.1)
    assert MUNGE_SOCKET.exists()  # the stale socket of the fault
    started = subprocess.run(["bash", str(START_SLURM)], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, (started.stdout, started.stderr)
    assert "already running" not in started.stdout  # it saw that munge no longer answered
    assert idle_slurm_node()


@pytest.mark.slow
@pytest.mark.skipif(not idle_slurm_node(), reason="no Slurm with an idle node (scripts/start_slurm.sh starts one)")
def test_slurm_array_tasks_share_one_study_and_run_each_trial_once(tiny_model_dir, toy_data_dir, tmp_path):
    path = write_tuning(tmp_path, tiny_model_dir, toy_data_dir, trials=6)
    worker = f"{sys.executable} -m bertprobe tune {path}"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    submitted = subprocess.run(
        ["sbatch", "--wait", "--array=0-1", "--cpus-per-task=1", "--job-name=bertprobe-test",
         f"--output={tmp_path}/worker_%a.log", f"--chdir={tmp_path}", f"--wrap={worker}"],
        capture_output=True, text=True, env=environment, timeout=900,
    )  # fmt: skip
    logs = [(tmp_path / f"worker_{task}.log").read_text() for task in (0, 1)]
    assert submitted.returncode == 0, (submitted.stdout, submitted.stderr, logs)  # --wait: every task exited 0
    # a task that ends while the other still runs its last trial reports 5/6 complete
    ran = [re.search(r"frozen_last: [56]/6 trials complete \((\d+) run by this worker\)", log) for log in logs]
    assert all(ran), logs
    assert sum(int(match.group(1)) for match in ran) == 6  # between the two tasks, every trial once
    tuning = Tuning(path)
    [system] = tuning.systems
    assert [settings for _, settings, _ in tuning.trials_of(system)] == system.trials(6, 7)
    assert len(list((tmp_path / "out" / "trials").glob("*.json"))) == 6
