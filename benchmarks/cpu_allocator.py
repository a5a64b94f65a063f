"""Fine-tuning steps on the CPU with glibc's default allocator settings and with large
blocks kept in the heap.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and returns it to the kernel on ``free``. A fine-tuning step on long windows
allocates and frees many activations larger than that, so every step touches fresh pages,
and the kernel zero-fills each one on its first touch: on some machines the process then
spends more time in the kernel than in the maths. ``MALLOC_MMAP_MAX_=0`` (never ``mmap``)
with a large ``MALLOC_TRIM_THRESHOLD_`` (never give the heap's top back) lets the freed
blocks be reused. Neither changes a single number the step computes, only where its
memory comes from; the script checks that both arms' losses are bit-identical.

Each arm runs in its own process (the settings are read when the process starts), in
alternating order over ``--repeats``; the script prints the median step time, page faults
and kernel time per step of each arm and their ratio, and writes a JSON report with the
command, commit, machine and versions to ``--report``.

    python benchmarks/cpu_allocator.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --batch-size 8 --length 512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bertprobe.encoder import load_encoder
from bertprobe.results import code_commit, command_line, machine_description, package_versions, write_json_atomic

ARMS: dict[str, dict[str, str]] = {
    "glibc_default": {},
    "heap_only": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36)},
}
ALLOCATOR_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def worker(args: argparse.Namespace) -> dict[str, object]:
    """Time ``args.steps`` fine-tuning steps (after one untimed warm-up step) in this process."""
    torch.manual_seed(0)
    encoder = load_encoder(args.model).train()
    classifier = torch.nn.Linear(encoder.config.hidden_size, 9)
    parameters = [*encoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=5e-5)
    vocab = encoder.config.vocab_size
    input_ids = torch.randint(1000, vocab, (args.batch_size, args.length))
    labels = torch.randint(0, 9, (args.batch_size, args.length))

    def step() -> float:
        logits = classifier(encoder(input_ids=input_ids).last_hidden_state)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    losses = [step()]
    before, seconds = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(args.steps):
        started = time.perf_counter()
        losses.append(step())
        seconds.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "step_seconds": seconds,
        "losses": losses,
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / args.steps,
        "user_seconds_per_step": (after.ru_utime - before.ru_utime) / args.steps,
        "kernel_seconds_per_step": (after.ru_stime - before.ru_stime) / args.steps,
        "torch_threads": torch.get_num_threads(),
    }


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, object]:
    environment = {name: value for name, value in os.environ.items() if name not in ALLOCATOR_VARIABLES}
    environment.update(ARMS[arm])
    command = [
        sys.executable, __file__, "--worker", "--model", args.model, "--batch-size", str(args.batch_size),
        "--length", str(args.length), "--steps", str(args.steps),
    ]  # fmt: skip
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the {arm} worker failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=512, help="sub-tokens per window")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per process")
    parser.add_argument("--repeats", type=int, default=2, help="processes per arm, in alternating order")
    parser.add_argument("--report", default="results/benchmarks/cpu_allocator_cpu.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    commit = code_commit()

    names = list(ARMS)
    runs: dict[str, list[dict[str, object]]] = {arm: [] for arm in names}
    for repeat in range(args.repeats):
        for arm in names if repeat % 2 == 0 else names[::-1]:
            runs[arm].append(run_arm(arm, args))
            median_step = statistics.median(runs[arm][-1]["step_seconds"])
            print(f"repeat {repeat + 1}, {arm:<13}: median step {median_step:6.2f} s", flush=True)

    summary = {}
    for arm, results in runs.items():
        summary[arm] = {
            key: statistics.median(value for result in results for value in _values(result[key]))
            for key in ("step_seconds", "minor_faults_per_step", "user_seconds_per_step", "kernel_seconds_per_step")
        }
    speedup = summary["glibc_default"]["step_seconds"] / summary["heap_only"]["step_seconds"]
    first_losses = runs[names[0]][0]["losses"]
    same_losses = all(result["losses"] == first_losses for results in runs.values() for result in results)
    report = {
        "benchmark": "cpu_allocator",
        "settings": {key: value for key, value in vars(args).items() if key != "worker"},
        "arms": ARMS,
        "runs": runs,
        "median": summary,
        "speedup_heap_only_vs_default": speedup,
        "losses_bit_identical": same_losses,
        "command": command_line(),
        "git_commit": commit,
        "machine": machine_description(),
        "versions": package_versions(),
    }
    write_json_atomic(args.report, report)
    print(f"\n{args.batch_size} windows of {args.length} sub-tokens, {args.model}, medians per step:")
    print(f"{'arm':<15}{'seconds':>9}{'page faults':>13}{'user s':>9}{'kernel s':>10}")
    for arm, values in summary.items():
        print(
            f"{arm:<15}{values['step_seconds']:>9.2f}{values['minor_faults_per_step']:>13,.0f}"
            f"{values['user_seconds_per_step']:>9.2f}{values['kernel_seconds_per_step']:>10.2f}"
        )
    print(f"speed-up, heap only vs default: {speedup:.2f}x")
    print(f"losses bit-identical across arms: {same_losses}")
    print(f"report: {args.report}")
    return 0 if same_losses else 1


def _values(value: object) -> list[float]:
    return [float(item) for item in value] if isinstance(value, list) else [float(value)]


if __name__ == "__main__":
    raise SystemExit(main())
