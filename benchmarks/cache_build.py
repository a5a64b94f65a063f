"""The frozen-feature cache build, each distinct input encoded once against every window.

With document context, every sentence of a document that fits the length limit gets the
same window (the whole document) and labels other words of it. The cache build encodes
each distinct input once (``shared`` arm); the ``per_window`` arm encodes every window,
as the build did before. Both arms build the same split with the same encoder, layers and
batch budget in one process, in alternating order over ``--repeats``; the script prints
the windows, distinct inputs, both times and their ratio, and how far the two caches'
features differ. A JSON report with the command, commit, machine and versions goes to
``--report``.

    python benchmarks/cache_build.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --data-dir ../shared/data/conll2003 --split validation --context document
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bertprobe.alignment import EncodedWindow, encode_split
from bertprobe.encoder import describe, load_config, load_encoder, load_tokenizer
from bertprobe.features import FeatureCache, same_input_groups, weights_digest
from bertprobe.results import code_commit, provenance, write_json_atomic
from bertprobe.tasks.conll import TaggedSplit, load_conll_dir

ARMS = ("shared", "per_window")


def input_counts(windows: list[EncodedWindow]) -> dict[str, object]:
    """Windows, distinct inputs, and the real sub-tokens that each build encodes."""
    groups = same_input_groups(windows)
    return {
        "windows": len(windows),
        "distinct_inputs": len(groups),
        "real_tokens": {
            "per_window": sum(len(window.input_ids) for window in windows),
            "shared": sum(len(windows[group[0]].input_ids) for group in groups),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", default="../shared/data/conll2003")
    parser.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    parser.add_argument("--context", default="document", choices=("sentence", "document"))
    parser.add_argument("--max-sentences", type=int, default=None, help="first N sentences of the split")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--report", default="results/benchmarks/cache_build_cpu.json")
    args = parser.parse_args()
    commit = code_commit()  # the code that runs, before a commit can land mid-benchmark

    info = describe(args.model, load_config(args.model))
    tokenizer = load_tokenizer(args.model)
    corpus = load_conll_dir(args.data_dir)
    label_to_id = {label: i for i, label in enumerate(corpus.label_list())}
    counts, windows = {}, []
    for name, split in corpus.splits.items():  # every split counted, the chosen one built
        if args.max_sentences is not None:
            split = TaggedSplit(split.name, split.sentences[: args.max_sentences])
        split_windows = encode_split(split, tokenizer, label_to_id, info.max_positions, args.context)
        counts[name] = input_counts(split_windows)
        if name == args.split:
            windows = split_windows
    encoder = load_encoder(args.model).eval()
    digest = weights_digest(encoder)
    layers = tuple(range(info.num_layers + 1))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder.to(device)

    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    features: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="bertprobe-cache-build-") as scratch:
        for repeat in range(args.repeats):
            for arm in ARMS if repeat % 2 == 0 else ARMS[::-1]:
                cache = FeatureCache(Path(scratch) / f"{arm}-{repeat}", args.model, digest)
                started = time.perf_counter()
                built = cache.build(
                    windows, layers, encoder, tokenizer.pad_token_id, args.split, device, share_inputs=arm == "shared"
                )
                seconds[arm].append(time.perf_counter() - started)
                features[arm] = np.asarray(built.features, dtype=np.float32)
                print(f"repeat {repeat + 1}, {arm:<10}: {seconds[arm][-1]:8.1f} s", flush=True)
        difference = np.abs(features["shared"] - features["per_window"])

    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    speedup = median["per_window"] / median["shared"]
    report = {
        "benchmark": "cache_build",
        "settings": vars(args),
        **counts[args.split],
        "splits": counts,
        "layers": list(layers),
        "seconds": seconds,
        "median_seconds": median,
        "speedup_shared_vs_per_window": speedup,
        "features": {
            "words": int(features["shared"].shape[0]),
            "max_abs_difference": float(difference.max()),
            "fraction_bit_identical": float((difference == 0).mean()),
        },
        **provenance(commit),
    }
    write_json_atomic(args.report, report)
    print(f"\n{args.context} context: windows, distinct inputs, real sub-tokens to encode (per window / shared)")
    for name, count in counts.items():
        tokens = count["real_tokens"]
        print(
            f"  {name:<11}{count['windows']:>8,}{count['distinct_inputs']:>8,}{tokens['per_window']:>12,}"
            f"{tokens['shared']:>12,}  ({tokens['per_window'] / tokens['shared']:.1f}x)"
        )
    print(f"built and timed: {args.split}")
    print(f"median build, per window: {median['per_window']:8.1f} s")
    print(f"median build, shared:     {median['shared']:8.1f} s")
    print(f"speed-up:                 {speedup:8.2f}x")
    features_report = report["features"]
    print(
        f"features: max |difference| {features_report['max_abs_difference']:.2e}, "
        f"{100 * features_report['fraction_bit_identical']:.2f}% bit-identical (float16)"
    )
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
