"""What verifying a frozen-feature cache costs beside reading it.

Every time a cache is opened, bertprobe checks each file's size and XXH3-128 checksum against its
manifest (``bertprobe.features.damage``). This script builds (or finds) the cache of one
split with the layers of ``--layers`` and then, in alternating order over ``--repeats``,
times the two arms side by side in one process:

* ``verify``: :func:`bertprobe.features.damage` on the cache folder;
* ``read``: every window's features read once through ``FeatureDataset``, as one epoch of
  head training reads them.

It prints both medians and their ratio, and writes a JSON report with the command, commit,
machine and versions to ``--report``. Both arms read the same files, so after the first
repeat both come from the page cache: the ratio compares work, not disk speed.

    python benchmarks/cache_verify.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --data-dir ../shared/data/conll2003 --split train --cache-dir .bertprobe_cache
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bertprobe.alignment import encode_split
from bertprobe.encoder import describe, load_config, load_encoder, load_tokenizer
from bertprobe.features import DATA_FILES, FeatureCache, FeatureDataset, damage, weights_digest
from bertprobe.layer_spec import resolve_strategy
from bertprobe.preflight import human_bytes
from bertprobe.results import code_commit, provenance, write_json_atomic
from bertprobe.tasks.conll import load_conll_dir


def read_all(dataset: FeatureDataset) -> int:
    """Read every window's features once; the number of bytes read."""
    return sum(dataset[index]["features"].numel() * 2 for index in range(len(dataset)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", default="../shared/data/conll2003")
    parser.add_argument("--split", default="train", choices=("train", "validation", "test"))
    parser.add_argument("--layers", default="last4concat")
    parser.add_argument("--cache-dir", default=".bertprobe_cache")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", default="results/benchmarks/cache_verify_cpu.json")
    args = parser.parse_args()
    commit = code_commit()

    info = describe(args.model, load_config(args.model))
    tokenizer = load_tokenizer(args.model)
    corpus = load_conll_dir(args.data_dir)
    labels = {label: index for index, label in enumerate(corpus.label_list())}
    windows = encode_split(corpus.splits[args.split], tokenizer, labels, max_length=info.max_positions)
    layers = resolve_strategy(args.layers, info.num_layers).indices
    encoder = load_encoder(args.model).eval()
    cache = FeatureCache(args.cache_dir, args.model, weights_digest(encoder))
    cached, built = cache.build_or_find(
        windows, layers, layers, encoder, tokenizer.pad_token_id, args.split, torch.device("cpu"), progress=True
    )
    dataset = FeatureDataset(cached, windows, layers)
    size = sum((cached.path / name).stat().st_size for name in DATA_FILES)

    seconds: dict[str, list[float]] = {"verify": [], "read": []}
    for repeat in range(args.repeats):
        order = ("verify", "read") if repeat % 2 == 0 else ("read", "verify")
        for arm in order:
            started = time.perf_counter()
            if arm == "verify":
                assert damage(cached.path) is None, "the cache is damaged"
            else:
                read_all(dataset)
            seconds[arm].append(time.perf_counter() - started)
    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    ratio = median["verify"] / median["read"]
    report = {
        "benchmark": "cache_verify",
        "settings": vars(args),
        "cache": {"path": str(cached.path), "built_now": built, "bytes": size, "windows": len(windows)},
        "seconds": seconds,
        "median_seconds": median,
        "verify_over_read": ratio,
        **provenance(commit),
    }
    write_json_atomic(args.report, report)
    print(f"{args.split} cache of {args.layers}: {len(windows):,} windows, {human_bytes(size)}")
    print(f"median verify (checksum of every file): {median['verify']:7.2f} s")
    print(f"median read (every window once):       {median['read']:7.2f} s")
    print(f"verify / read:                         {ratio:7.2f}")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
