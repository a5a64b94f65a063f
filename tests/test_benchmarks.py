"""Helpers of benchmarks/throughput.py (the stock recipe's label alignment and the token counts) and a
whole run of benchmarks/cache_build.py on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import find_jemalloc

from bertprobe.alignment import encode_split
from bertprobe.tasks.conll import load_conll_dir

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` as a module (registered, so its dataclasses can find it)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return load_benchmark("throughput")


def test_stock_labels_sit_on_first_sub_tokens_and_predictions_map_back(throughput, tiny_tokenizer):
    words = ["the", "springville", "rivertons", "."]  # spring ##ville; river ##ton ##s
    encoded = tiny_tokenizer(words, is_split_into_words=True, truncation=True)
    assert tiny_tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == [
        "[CLS]", "the", "spring", "##ville", "river", "##ton", "##s", ".", "[SEP]",
    ]  # fmt: skip
    word_ids = encoded.word_ids()
    assert throughput.first_subtoken_labels(word_ids, [0, 3, 4, 0]) == [-100, 0, 3, -100, 4, -100, -100, 0, -100]

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # predictions at continuation pieces and special tokens must be ignored
    token_predictions = [1, 0, 3, 2, 4, 1, 1, 0, 2]
    assert throughput.word_tags_from_tokens(word_ids, token_predictions, len(words), labels) == [
        "O", "B-LOC", "I-LOC", "O",
    ]  # fmt: skip


def test_a_word_without_sub_tokens_is_tagged_o(throughput):
    word_ids = [None, 0, 2, None]  # word 1 produced no piece (or was cut off by truncation)
    assert throughput.word_tags_from_tokens(word_ids, [0, 1, 1, 0], 3, ["O", "B-PER"]) == ["B-PER", "O", "B-PER"]


def test_both_arms_count_the_same_real_tokens(throughput, tiny_tokenizer, toy_data_dir):
    corpus = load_conll_dir(toy_data_dir)
    label_to_id = {label: i for i, label in enumerate(corpus.label_list())}
    split = corpus.splits["validation"]
    windows = encode_split(split, tiny_tokenizer, label_to_id, max_length=64, context="sentence")
    dataset, word_ids = throughput.tokenize_split(tiny_tokenizer, split, label_to_id)

    pieces = sum(len(tiny_tokenizer.tokenize(word)) for sentence in split.sentences for word in sentence.words)
    expected = pieces + 2 * len(split.sentences)  # and [CLS], [SEP] per sentence; no padding
    assert throughput.real_token_count(windows) == expected
    assert sum(len(ids) for ids in dataset["input_ids"]) == expected
    labelled = [sum(label != -100 for label in row) for row in dataset["labels"]]
    assert labelled == [len(sentence.words) for sentence in split.sentences]
    assert len(word_ids) == len(split.sentences)


def test_padded_token_count(throughput):
    lengths = [5, 3, 2, 7]
    assert throughput.padded_token_count([[0, 1], [2, 3]], lengths) == 2 * 5 + 2 * 7
    assert throughput.padded_token_count([[0, 1, 2], [3]], lengths, width=10) == 40


def test_subset_folder_holds_the_sentences_bertprobe_would_train_on(throughput, toy_data_dir, tmp_path):
    from bertprobe.tasks.base import select_training_examples

    sizes = throughput.write_subset(toy_data_dir, tmp_path, max_train=50, max_dev=7, max_test=3, seed=5)
    assert sizes == {"train": 50, "validation": 7, "test": 3}
    original = load_conll_dir(toy_data_dir).splits["train"].sentences
    chosen = sorted(select_training_examples(len(original), 50, 5))
    subset = load_conll_dir(tmp_path)
    assert [s.words for s in subset.splits["train"].sentences] == [original[i].words for i in chosen]
    assert [s.tags for s in subset.splits["train"].sentences] == [original[i].tags for i in chosen]


@pytest.mark.slow
def test_cache_build_benchmark_reports_both_arms_on_the_same_features(tiny_model_dir, toy_data_dir, tmp_path):
    report_path = tmp_path / "cache_build.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "cache_build.py"), "--model", str(tiny_model_dir),
        "--data-dir", str(toy_data_dir), "--repeats", "2", "--report", str(report_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert (report["windows"], report["distinct_inputs"]) == (40, 8)  # 8 documents of 5 sentences
    assert report["real_tokens"]["shared"] * 5 == report["real_tokens"]["per_window"]
    assert [len(report["seconds"][arm]) for arm in ("shared", "per_window")] == [2, 2]
    lines = (toy_data_dir / "validation.txt").read_text().splitlines()
    assert report["features"]["words"] == sum(1 for line in lines if line and not line.startswith("-DOCSTART-"))
    assert report["features"]["max_abs_difference"] < 1e-2
    assert "speed-up" in result.stdout and report["git_commit"]


@pytest.mark.slow
def test_cache_verify_benchmark_times_both_arms_on_one_cache(tiny_model_dir, toy_data_dir, tmp_path):
    report_path = tmp_path / "cache_verify.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "cache_verify.py"), "--model", str(tiny_model_dir),
        "--data-dir", str(toy_data_dir), "--split", "validation", "--layers", "allweighted",
        "--cache-dir", str(tmp_path / "cache"), "--repeats", "2", "--report", str(report_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["cache"]["windows"] == 40 and report["cache"]["built_now"] is True
    words = sum(
        1 for line in (toy_data_dir / "validation.txt").read_text().splitlines() if line and "DOCSTART" not in line
    )
    assert report["cache"]["bytes"] > words * 4 * 32 * 2  # 4 layers of 32 float16 numbers per word, and the headers
    assert [len(report["seconds"][arm]) for arm in ("verify", "read")] == [2, 2]
    assert report["verify_over_read"] == report["median_seconds"]["verify"] / report["median_seconds"]["read"]
    assert "verify / read" in result.stdout and report["git_commit"]


@pytest.mark.slow
def test_feature_ablation_benchmark_runs_six_rows_in_both_arms_on_cut_evaluation_splits(
    tiny_model_dir, toy_data_dir, tmp_path
):
    report_path = tmp_path / "feature_ablation.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "feature_ablation.py"), "--model", str(tiny_model_dir),
        "--data-dir", str(toy_data_dir), "--max-train-examples", "30", "--max-dev-examples", "12",
        "--max-test-examples", "7", "--epochs", "1", "--lstm-hidden", "8", "--context", "document",
        "--report", str(report_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["split_sentences"] == {"train": 240, "validation": 12, "test": 7}
    rows = ("embeddings", "second_last", "last", "last4weighted", "last4concat", "allweighted")
    for arm in ("cached", "uncached"):
        assert tuple(report[arm]["rows"]) == rows
    assert report["cached"]["encoder_pass_seconds"] > 0 and report["uncached"]["encoder_pass_seconds"] == 0
    # one cache serves all six rows: the first row encodes every split, the others read it
    built = [report["cached"]["rows"][row]["cache_built"] for row in rows]
    assert built == [["train", "validation", "test"], [], [], [], [], []]
    assert [report["uncached"]["rows"][row]["cache_built"] for row in rows] == [None] * 6
    assert report["speedup_cached_vs_uncached"] == pytest.approx(
        report["uncached"]["wall_seconds"] / report["cached"]["wall_seconds"]
    )
    assert report["cached_over_floor"] == pytest.approx(report["cached"]["wall_seconds"] / report["floor_seconds"])
    assert "speed-up with the cache" in result.stdout and report["git_commit"]


def test_cut_evaluation_splits_keeps_training_whole_and_the_first_sentences(toy_data_dir, tmp_path):
    sizes = load_benchmark("feature_ablation").cut_evaluation_splits(toy_data_dir, tmp_path, max_dev=12, max_test=None)
    assert sizes == {"train": 240, "validation": 12, "test": 40}
    assert (tmp_path / "train.txt").read_bytes() == (toy_data_dir / "train.txt").read_bytes()
    original, cut = load_conll_dir(toy_data_dir), load_conll_dir(tmp_path)
    for split, count in (("validation", 12), ("test", 40)):
        kept = original.splits[split].sentences[:count]
        assert [(s.words, s.tags, s.document) for s in cut.splits[split].sentences] == [
            (s.words, s.tags, s.document) for s in kept
        ]


def run_cpu_allocator(model_dir: Path, tmp_path: Path, *arguments: str) -> tuple[subprocess.CompletedProcess, dict]:
    """benchmarks/cpu_allocator.py on tiny windows, one process an arm: its output and report."""
    report_path = tmp_path / "cpu_allocator.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "cpu_allocator.py"), "--model", str(model_dir),
        "--batch-size", "2", "--min-length", "4", "--length", "16", "--repeats", "1",
        "--report", str(report_path), *arguments,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result, json.loads(report_path.read_text())


@pytest.mark.slow
def test_cpu_allocator_benchmark_runs_every_arm_on_the_same_steps(tiny_model_dir, tmp_path):
    """Each arm is its own process with its own MALLOC_* settings (and trimming cadence);
    all draw the same window lengths and must compute the same losses to the bit (the
    allocator moves no number)."""
    result, report = run_cpu_allocator(tiny_model_dir, tmp_path, "--steps", "3")
    assert report["losses_bit_identical"] is True
    assert set(report["runs"]) == {"glibc_default", "heap_only", "heap_trim_1", "heap_trim_8"}
    assert report["arms"]["heap_trim_8"] == {
        "environment": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36)},
        "trim_every": 8,
    }
    runs = [run for arm_runs in report["runs"].values() for run in arm_runs]
    assert len(runs) == 4
    assert all(run["lengths"] == runs[0]["lengths"] for run in runs)
    assert all(4 <= length <= 16 for length in runs[0]["lengths"])
    assert all(len(run["step_seconds"]) == 3 and len(run["resident_gib"]) == 4 for run in runs)
    assert report["machine"].get("allocator_env") is None  # the parent sets none; each arm its own
    assert set(report["speedup_vs_default"]) == {"heap_only", "heap_trim_1", "heap_trim_8"}
    assert "speed-up" in result.stdout and report["git_commit"]


@pytest.mark.skipif(find_jemalloc() is None, reason="no libjemalloc on this machine")
def test_cpu_allocator_benchmark_runs_jemalloc_preloaded(tiny_model_dir, tmp_path):
    _, report = run_cpu_allocator(
        tiny_model_dir, tmp_path, "--steps", "2", "--jemalloc", find_jemalloc(),
        "--arms", "glibc_default", "jemalloc", "jemalloc_kept",
    )  # fmt: skip
    assert report["losses_bit_identical"] is True
    assert report["runs"]["glibc_default"][0]["preloaded"] == []
    for arm in ("jemalloc", "jemalloc_kept"):
        assert [Path(path).name for path in report["runs"][arm][0]["preloaded"]] == ["libjemalloc.so.2"]
    assert report["arms"]["jemalloc_kept"]["environment"]["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--jemalloc", "/no/such/libjemalloc.so.2"], "no such file"),
        (["--arms", "glibc_default", "jemalloc"], "the jemalloc arms need --jemalloc"),
        (["--arms", "heap_only"], "must include glibc_default"),
    ],
)
def test_cpu_allocator_benchmark_refuses_arms_it_cannot_run(arguments, message, tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "cpu_allocator.py"), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "results").exists()  # nothing ran, nothing written


@pytest.mark.slow
def test_cache_build_processes_benchmark_times_one_and_two_processes(tiny_model_dir, toy_data_dir, tmp_path):
    report_path = tmp_path / "processes.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "cache_build_processes.py"), "--model", str(tiny_model_dir),
        "--data-dir", str(toy_data_dir), "--max-train-examples", "40", "--layers", "last", "--repeats", "1",
        "--report", str(report_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert [len(report["cache_seconds"][arm]) for arm in ("1", "2")] == [1, 1]
    assert report["n_over_1"] == report["median_cache_seconds"]["2"] / report["median_cache_seconds"]["1"]
    assert "2 / 1" in result.stdout and report["git_commit"]


@pytest.mark.slow
def test_sweep_memory_benchmark_reports_each_runs_peak(tiny_model_dir, toy_data_dir, tmp_path):
    report_path = tmp_path / "sweep_memory.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "sweep_memory.py"), "--model", str(tiny_model_dir),
        "--data-dir", str(toy_data_dir), "--runs", "3", "--max-train-examples", "16", "--batch-size", "8",
        "--report", str(report_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    peaks = report["peak_rss_bytes"]
    assert len(peaks) == 3 and all(peak > 0 for peak in peaks)
    assert report["growth_over_first_bytes"] == [peaks[1] - peaks[0], peaks[2] - peaks[0]]
    assert "run 3: peak resident memory" in result.stdout and report["git_commit"]


def test_sweep_memory_benchmark_refuses_a_single_run(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "sweep_memory.py"), "--runs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "--runs must be at least 2" in result.stderr
