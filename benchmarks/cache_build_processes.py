"""The frozen-feature cache built by one process against N data-parallel processes.

Under ``accelerate launch --multi_gpu --num_processes N`` the processes share each split's
cache build, every one encoding every N-th batch (``FeatureCache.build_sharded``). This
script launches the same feature run (one epoch, a fresh cache folder each) with 1 and with
``--processes`` processes, in alternating order over ``--repeats``, and compares the
records' ``time.cache_seconds``. On a machine without GPUs the processes are gloo CPU
processes that share its cores (each gets its share of the threads), so the ratio there
shows the cost of sharing, not the speed-up N GPUs give. A JSON report with the command,
commit, machine and versions goes to ``--report``.

    python benchmarks/cache_build_processes.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --data-dir ../shared/data/conll2003 --max-train-examples 2000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bertprobe.results import code_commit, provenance, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def launch(processes: int, args: argparse.Namespace, scratch: Path) -> dict[str, object]:
    """One feature run under ``accelerate launch`` with ``processes`` processes; its record."""
    output = scratch / f"runs-{processes}-{len(list(scratch.iterdir()))}"
    launcher = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_machines", "1", "--mixed_precision",
        "no", "--dynamo_backend", "no", str(ROOT / "run.py"), "--mode", "feature", "--layers", args.layers,
        "--head", "linear", "--epochs", "1", "--model", args.model, "--data-dir", args.data_dir,
        "--max-train-examples", str(args.max_train_examples), "--output-dir", str(output),
        "--cache-dir", str(output / "cache"), "--no-checkpoint",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if finished.returncode != 0:
        raise SystemExit(f"the {processes}-process run failed:\n{finished.stderr[-3000:]}")
    return json.loads(next(output.glob("*.json")).read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", default="../shared/data/conll2003")
    parser.add_argument("--layers", default="last4concat")
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--report", default="results/benchmarks/cache_build_processes_cpu.json")
    args = parser.parse_args()
    commit = code_commit()
    seconds: dict[str, list[float]] = {"1": [], str(args.processes): []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            order = (1, args.processes) if repeat % 2 == 0 else (args.processes, 1)
            for processes in order:
                record = launch(processes, args, Path(scratch))
                seconds[str(processes)].append(record["time"]["cache_seconds"])
    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    ratio = median[str(args.processes)] / median["1"]
    report = {
        "benchmark": "cache_build_processes",
        "settings": vars(args),
        "cache_seconds": seconds,
        "median_cache_seconds": median,
        "n_over_1": ratio,
        **provenance(commit),
    }
    write_json_atomic(args.report, report)
    print(f"median cache build, 1 process:  {median['1']:7.1f} s")
    print(f"median cache build, {args.processes} processes: {median[str(args.processes)]:7.1f} s")
    print(f"{args.processes} / 1:                      {ratio:7.2f}")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
