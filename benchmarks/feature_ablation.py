"""The six feature-based rows of Table 7, with the frozen-feature cache and without it.

Both arms run the same rows, seed, data and head in one process, one after the other:

* cached: the first row builds one cache holding every layer the six rows need (one
  encoder pass per split); every row then trains its head on stored features;
* uncached (``--no-feature-cache``): every row runs the frozen encoder on every batch of
  every epoch and every evaluation.

It prints both wall times and their ratio, and compares the cached arm with its floor:
one encoder pass plus the heads' own training. A JSON report with the command, commit,
machine and versions goes to ``--report``.

    python benchmarks/feature_ablation.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --data-dir ../shared/data/conll2003 --max-train-examples 1000

``--max-dev-examples``/``--max-test-examples`` keep the first N sentences of dev and test
(the training file stays whole; ``--max-train-examples`` picks from it as a run would).
The uncached arm runs the encoder over dev after every epoch, so with a cut training set
and a whole dev set most of its time is evaluation; cutting dev and test as well keeps the
splits near the full data's proportions (14,041 : 3,250 : 3,453 sentences).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bertprobe.config import RunConfig
from bertprobe.results import code_commit, provenance, write_json_atomic
from bertprobe.tasks.conll import find_split_file, load_conll_dir, write_conll_file
from bertprobe.train import run

FEATURE_ROWS = ("embeddings", "second_last", "last", "last4weighted", "last4concat", "allweighted")


def cut_evaluation_splits(
    data_dir: str | Path, out_dir: Path, max_dev: int | None, max_test: int | None
) -> dict[str, int]:
    """A data folder with ``data_dir``'s training file as it is and the first ``max_dev`` dev
    and ``max_test`` test sentences (all of a split where its limit is ``None``); the number
    of sentences in each split."""
    source = Path(data_dir)
    corpus = load_conll_dir(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(find_split_file(source, "train"), out_dir / "train.txt")
    sizes = {"train": len(corpus.splits["train"].sentences)}
    for split, limit in (("validation", max_dev), ("test", max_test)):
        sentences = corpus.splits[split].sentences[:limit]
        write_conll_file(out_dir / f"{split}.txt", sentences)
        sizes[split] = len(sentences)
    return sizes


def run_arm(base: RunConfig, cached: bool, workdir: Path) -> dict[str, object]:
    records = []
    started = time.perf_counter()
    for layers in FEATURE_ROWS:
        config = RunConfig.from_dict(
            {
                **base.to_dict(),
                "layers": layers,
                "feature_cache": cached,
                "cache_layers": ";".join(FEATURE_ROWS) if cached else None,
                "cache_dir": str(workdir / "cache"),
                "output_dir": str(workdir / ("cached" if cached else "uncached")),
            }
        )
        records.append(run(config))
    wall = time.perf_counter() - started
    return {
        "wall_seconds": wall,
        "rows": {
            r["layers"]["strategy"]: {
                "dev_f1": r["metrics"]["dev"]["f1"],
                "time": r["time"],
                "cache_built": (r.get("feature_cache") or {}).get("built"),  # splits this row encoded; None: no cache
            }
            for r in records
        },
        "encoder_pass_seconds": sum(r["time"].get("cache_seconds", 0.0) for r in records),
        "head_train_seconds": sum(r["time"]["train_seconds"] for r in records),
        "setup_seconds": sum(r["time"]["setup_seconds"] for r in records),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", default="../shared/data/conll2003")
    parser.add_argument("--max-train-examples", type=int, default=1000)
    parser.add_argument("--max-dev-examples", type=int, default=None, help="the first N dev sentences (default all)")
    parser.add_argument("--max-test-examples", type=int, default=None, help="the first N test sentences (default all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lstm-hidden", type=int, default=256)
    parser.add_argument("--context", default="sentence")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", default="results/benchmarks/feature_ablation.json")
    args = parser.parse_args()
    commit = code_commit()  # the code that runs, before a commit can land mid-benchmark

    with tempfile.TemporaryDirectory(prefix="bertprobe-bench-") as scratch:
        workdir = Path(scratch)
        data_dir, split_sizes = args.data_dir, None
        if args.max_dev_examples is not None or args.max_test_examples is not None:
            data_dir = str(workdir / "data")
            split_sizes = cut_evaluation_splits(
                args.data_dir, Path(data_dir), args.max_dev_examples, args.max_test_examples
            )
        base = RunConfig(
            mode="feature",
            model=args.model,
            data_dir=data_dir,
            max_train_examples=args.max_train_examples,
            epochs=args.epochs,
            lstm_hidden=args.lstm_hidden,
            context=args.context,
            seed=args.seed,
        )
        cached = run_arm(base, cached=True, workdir=workdir)
        uncached = run_arm(base, cached=False, workdir=workdir)

    floor = cached["encoder_pass_seconds"] + cached["head_train_seconds"]
    speedup = uncached["wall_seconds"] / cached["wall_seconds"]
    over_floor = cached["wall_seconds"] / floor
    report = {
        "benchmark": "feature_ablation",
        "settings": vars(args),
        "split_sentences": split_sizes,  # the files the runs read when dev or test was cut (train before selection)
        "cached": cached,
        "uncached": uncached,
        "speedup_cached_vs_uncached": speedup,
        "cached_over_floor": over_floor,
        "floor_seconds": floor,
        **provenance(commit),
    }
    write_json_atomic(args.report, report)
    print()
    print(f"{'row':<15}{'dev F1 cached':>15}{'dev F1 uncached':>17}")
    for row in FEATURE_ROWS:
        print(f"{row:<15}{100 * cached['rows'][row]['dev_f1']:>15.2f}{100 * uncached['rows'][row]['dev_f1']:>17.2f}")
    print(f"\nsix rows, uncached (encoder every epoch): {uncached['wall_seconds']:8.1f} s")
    print(f"six rows, cached (encoder once):          {cached['wall_seconds']:8.1f} s")
    print(f"speed-up with the cache:                  {speedup:8.2f}x   (goal >= 5x)")
    print(
        f"cached ablation / (one encoder pass {cached['encoder_pass_seconds']:.1f} s + heads' training "
        f"{cached['head_train_seconds']:.1f} s): {over_floor:.2f}x   (goal <= 2x)"
    )
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
