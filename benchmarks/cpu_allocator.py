"""Fine-tuning steps on the CPU with glibc's default allocator settings and with large
blocks kept in the heap (trimmed or not): step time, page faults and resident memory.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and returns it to the kernel on ``free``. A fine-tuning step on long windows
allocates and frees many activations larger than that, so every step touches fresh pages,
and the kernel zero-fills each one on its first touch. ``MALLOC_MMAP_MAX_=0`` (never
``mmap``) with a large ``MALLOC_TRIM_THRESHOLD_`` (never give the heap's top back) lets
freed blocks be reused, which is faster, but the heap fragments when the batches' shapes
vary, and resident memory grows step after step (a fine-tuning run of the Table 7 row
with these settings was killed by the kernel at 24 GB after 100 batches). The
``heap_trim_N`` arms keep the heap too but call ``malloc_trim(0)``
(:func:`bertprobe.cpu_heap.trim_heap`) after every N-th step, which hands the free pages
back: do they keep the speed and bound the memory? ``--jemalloc LIBRARY`` adds two arms
that preload jemalloc instead (``LD_PRELOAD``; Debian's ``libjemalloc2``), with its
defaults and with ``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1`` (it keeps every page
it has touched); each worker checks that the library was really loaded. No setting changes
a number the step computes; the script checks that every arm's losses are bit-identical.

Each step draws its window length between ``--min-length`` and ``--length`` from a fixed
seed, the same in every arm (``--min-length`` equal to ``--length`` gives fixed shapes).
Each arm runs in its own process (the settings are read when the process starts), in
alternating order over ``--repeats``; the script prints each arm's median step time, page
faults and kernel time per step, its resident memory after the first and the last step
and its peak, and each arm's step-time ratio to glibc's defaults, and writes a JSON report
with the command, commit, machine and versions to ``--report``.

    python benchmarks/cpu_allocator.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --batch-size 8 --min-length 128 --length 512 --steps 24 \\
        --jemalloc /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bertprobe.cpu_heap import trim_heap
from bertprobe.encoder import load_encoder
from bertprobe.results import code_commit, is_allocator_variable, provenance, write_json_atomic

HEAP_ONLY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36)}


@dataclass(frozen=True)
class Arm:
    """glibc settings for the worker's environment, and how often it calls ``malloc_trim(0)`` (0: never)."""

    environment: dict[str, str]
    trim_every: int = 0


ARMS: dict[str, Arm] = {
    "glibc_default": Arm({}),
    "heap_only": Arm(HEAP_ONLY),
    "heap_trim_1": Arm(HEAP_ONLY, trim_every=1),
    "heap_trim_8": Arm(HEAP_ONLY, trim_every=8),
}


def jemalloc_arms(library: str) -> dict[str, Arm]:
    """jemalloc preloaded in place of glibc's malloc: with its defaults (unused pages go back
    to the kernel over about ten seconds), and keeping every page it has touched."""
    return {
        "jemalloc": Arm({"LD_PRELOAD": library}),
        "jemalloc_kept": Arm({"LD_PRELOAD": library, "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
    }


def loaded_libraries(names: list[str]) -> list[str]:
    """Those of ``names`` (file paths) mapped into this process, as /proc/self/maps lists them."""
    with open("/proc/self/maps", encoding="ascii", errors="replace") as stream:
        mapped = {os.path.realpath(line.split()[-1]) for line in stream if "/" in line}
    return [name for name in names if os.path.realpath(name) in mapped]


def resident_gib() -> float:
    """This process's resident memory now (Linux), in GiB."""
    with open("/proc/self/statm", encoding="ascii") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def worker(args: argparse.Namespace) -> dict[str, object]:
    """Time ``args.steps`` fine-tuning steps (after one untimed warm-up step) in this process."""
    torch.manual_seed(0)
    encoder = load_encoder(args.model).train()
    classifier = torch.nn.Linear(encoder.config.hidden_size, 9)
    parameters = [*encoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=5e-5)
    vocab = encoder.config.vocab_size
    first_id = 1000 if vocab > 1000 else 0  # past BERT's special and unused ids, where there are so many
    lengths = random.Random(0).choices(range(args.min_length, args.length + 1), k=args.steps + 1)

    def step(length: int) -> float:
        input_ids = torch.randint(first_id, vocab, (args.batch_size, length))
        labels = torch.randint(0, 9, (args.batch_size, length))
        logits = classifier(encoder(input_ids=input_ids).last_hidden_state)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    losses = [step(lengths[0])]
    resident = [resident_gib()]
    before, seconds = resource.getrusage(resource.RUSAGE_SELF), []
    for number, length in enumerate(lengths[1:], start=1):
        started = time.perf_counter()
        losses.append(step(length))
        if args.trim_every and number % args.trim_every == 0:
            trim_heap()
        seconds.append(time.perf_counter() - started)
        resident.append(resident_gib())
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "lengths": lengths,
        "step_seconds": seconds,
        "losses": losses,
        "resident_gib": resident,
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / args.steps,
        "user_seconds_per_step": (after.ru_utime - before.ru_utime) / args.steps,
        "kernel_seconds_per_step": (after.ru_stime - before.ru_stime) / args.steps,
        "torch_threads": torch.get_num_threads(),
        # a preload the dynamic loader could not use is skipped with a warning: say what was loaded
        "preloaded": loaded_libraries(os.environ.get("LD_PRELOAD", "").split()),
    }


def run_arm(name: str, arm: Arm, args: argparse.Namespace) -> dict[str, object]:
    # no allocator setting of this process leaks into an arm
    environment = {variable: value for variable, value in os.environ.items() if not is_allocator_variable(variable)}
    environment.update(arm.environment)
    command = [
        sys.executable, __file__, "--worker", "--model", args.model, "--batch-size", str(args.batch_size),
        "--min-length", str(args.min_length), "--length", str(args.length), "--steps", str(args.steps),
        "--trim-every", str(arm.trim_every),
    ]  # fmt: skip
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the {name} worker failed:\n{finished.stderr[-3000:]}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    if "LD_PRELOAD" in arm.environment and not result["preloaded"]:
        raise RuntimeError(f"the {name} worker ran without {arm.environment['LD_PRELOAD']}: the loader skipped it")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--min-length", type=int, default=128, help="shortest window, in sub-tokens")
    parser.add_argument("--length", type=int, default=512, help="longest window, in sub-tokens")
    parser.add_argument("--steps", type=int, default=24, help="timed steps per process")
    parser.add_argument("--repeats", type=int, default=2, help="processes per arm, in alternating order")
    parser.add_argument("--report", default="results/benchmarks/cpu_allocator_cpu.json")
    parser.add_argument("--jemalloc", metavar="LIBRARY", help="also run jemalloc arms, preloading this libjemalloc.so")
    parser.add_argument("--arms", nargs="+", help="which arms to run (default: all; the jemalloc ones need --jemalloc)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trim-every", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.min_length <= args.length:
        parser.error(f"--min-length {args.min_length} must be between 1 and --length {args.length}")
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    arms = dict(ARMS)
    if args.jemalloc:
        if not Path(args.jemalloc).is_file():
            parser.error(f"--jemalloc {args.jemalloc}: no such file")
        arms.update(jemalloc_arms(str(Path(args.jemalloc).resolve())))
    names = list(dict.fromkeys(args.arms or arms))
    unknown = [name for name in names if name not in arms]
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {list(arms)} (the jemalloc arms need --jemalloc)")
    if "glibc_default" not in names:
        parser.error("--arms must include glibc_default, the arm the others are measured against")
    commit = code_commit()

    runs: dict[str, list[dict[str, object]]] = {arm: [] for arm in names}
    for repeat in range(args.repeats):
        for arm in names if repeat % 2 == 0 else names[::-1]:
            runs[arm].append(run_arm(arm, arms[arm], args))
            result = runs[arm][-1]
            print(
                f"repeat {repeat + 1}, {arm:<13}: {sum(result['step_seconds']):7.1f} s, resident "
                f"{result['resident_gib'][0]:.2f} -> {result['resident_gib'][-1]:.2f} GiB",
                flush=True,
            )

    summary = {}
    for arm, results in runs.items():
        summary[arm] = {  # medians over the arm's processes
            "seconds": statistics.median(sum(result["step_seconds"]) for result in results),
            **{
                key: statistics.median(result[key] for result in results)
                for key in ("minor_faults_per_step", "user_seconds_per_step", "kernel_seconds_per_step")
            },
            "resident_gib_first_step": statistics.median(result["resident_gib"][0] for result in results),
            "resident_gib_last_step": statistics.median(result["resident_gib"][-1] for result in results),
            "resident_gib_max": statistics.median(max(result["resident_gib"]) for result in results),
        }
    baseline = summary["glibc_default"]["seconds"]
    speedups = {arm: baseline / values["seconds"] for arm, values in summary.items() if arm != "glibc_default"}
    first_losses = runs[names[0]][0]["losses"]
    same_losses = all(result["losses"] == first_losses for results in runs.values() for result in results)
    report = {
        "benchmark": "cpu_allocator",
        "settings": {key: value for key, value in vars(args).items() if key not in ("worker", "trim_every")},
        "arms": {arm: asdict(arms[arm]) for arm in names},
        "runs": runs,
        "median": summary,
        "speedup_vs_default": speedups,
        "losses_bit_identical": same_losses,
        **provenance(commit),
    }
    write_json_atomic(args.report, report)
    print(
        f"\n{args.steps} steps of {args.batch_size} windows of {args.min_length}-{args.length} sub-tokens, "
        f"{args.model} (medians over {args.repeats} processes an arm)"
    )
    print(
        f"{'arm':<15}{'seconds':>9}{'faults/step':>13}{'user s/step':>13}{'kernel s/step':>15}"
        f"{'resident GiB':>18}{'max':>7}"
    )
    for arm, values in summary.items():
        print(
            f"{arm:<15}{values['seconds']:>9.1f}{values['minor_faults_per_step']:>13,.0f}"
            f"{values['user_seconds_per_step']:>13.2f}{values['kernel_seconds_per_step']:>15.2f}"
            f"{values['resident_gib_first_step']:>10.2f} -> {values['resident_gib_last_step']:.2f}"
            f"{values['resident_gib_max']:>7.2f}"
        )
    for arm, speedup in speedups.items():
        print(f"speed-up, {arm} vs default: {speedup:.2f}x")
    print(f"losses bit-identical across arms: {same_losses}")
    print(f"report: {args.report}")
    return 0 if same_losses else 1


if __name__ == "__main__":
    raise SystemExit(main())
