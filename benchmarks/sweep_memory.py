"""Peak resident memory of each of several fine-tuning runs made in one process, as a sweep
or a tuning makes them.

A run that kept its model and optimizer alive would add their size (weights, gradients and
two Adam moments: four times the parameters) to every later run's peak. The test suite checks
the cause exactly (``test_a_run_leaves_no_model_or_optimizer_behind...`` counts the live
models and optimizers); this script measures the effect, which allocator noise makes unfit
for a test: it runs ``--runs`` short fine-tuning runs of ``--model`` on ``--data-dir`` one
after another in this process, each with its own seed and output folder, and reports each
run's peak resident memory (``record.memory.process_max_rss_bytes``, reset per run through
``/proc/self/clear_refs`` where the system allows), each later peak's growth over the first,
and the model's parameter bytes times four beside it: the growth a kept run would add.

    python benchmarks/sweep_memory.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --data-dir ../shared/data/conll2003 --runs 3 --max-train-examples 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bertprobe.config import RunConfig
from bertprobe.results import code_commit, provenance, write_json_atomic
from bertprobe.train import run

MIB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", default="../shared/data/conll2003")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-train-examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--report", default="results/benchmarks/sweep_memory_cpu.json")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2: the benchmark compares later runs with the first")
    commit = code_commit()

    records = []
    with tempfile.TemporaryDirectory(prefix="bertprobe-sweep-memory-") as scratch:
        for seed in range(1, args.runs + 1):
            config = RunConfig(
                model=args.model, data_dir=args.data_dir, mode="finetune", epochs=1, seed=seed,
                batch_size=args.batch_size, max_train_examples=args.max_train_examples,
                checkpoint=False,
                output_dir=str(Path(scratch) / f"seed{seed}"), cache_dir=str(Path(scratch) / "cache"),
            )  # fmt: skip
            records.append(run(config))
    peaks = [record["memory"]["process_max_rss_bytes"] for record in records]
    parameter_bytes = records[0]["parameters"]["total"] * 4  # float32
    report = {
        "benchmark": "sweep_memory",
        "settings": vars(args),
        "peak_is_per_run": all(record["memory"]["per_run"] for record in records),
        "peak_rss_bytes": peaks,
        "growth_over_first_bytes": [peak - peaks[0] for peak in peaks[1:]],
        "kept_run_would_add_bytes": 4 * parameter_bytes,  # weights, gradients, two Adam moments
        **provenance(commit),
    }
    write_json_atomic(args.report, report)
    if not report["peak_is_per_run"]:
        print("this system cannot reset a process's peak memory: each peak includes the runs before it")
    for index, peak in enumerate(peaks, start=1):
        growth = "" if index == 1 else f"  ({(peak - peaks[0]) / MIB:+.0f} MiB over run 1)"
        print(f"run {index}: peak resident memory {peak / MIB:,.0f} MiB{growth}")
    print(f"a run kept alive would add about {4 * parameter_bytes / MIB:,.0f} MiB to each later peak")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
