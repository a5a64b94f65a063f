"""Sentence(-pair) data: awkward files, GLUE on disk and from a stand-in Hub, and scores."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from conftest import GLUE_DIR, needs_glue

from bertprobe.errors import DataFormatError
from bertprobe.sequence_metrics import classification_scores, regression_scores
from bertprobe.tasks.glue import GLUE_TASKS, glue_task, load_glue_dir, load_glue_hub
from bertprobe.tasks.sequence import SequenceExample, build_corpus, load_custom, read_table


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def examples(*labels: str, prefix: str = "t") -> list[SequenceExample]:
    return [SequenceExample(f"text {i}", None, label, f"{prefix}.tsv:{i + 2}") for i, label in enumerate(labels)]


# --------------------------------------------------------------------------- read_table


def test_tsv_with_bom_crlf_blank_lines_and_literal_quotes(tmp_path):
    text = '\ufeffid\tsentence\tlabel\r\n1\t"quoted" start\t1\r\n\r\n2\tan odd " quote\t0\r\n3\tit\'s "fine\t1\r\n'
    rows = read_table(write(tmp_path / "a.tsv", text), ["sentence"], "label")
    assert [r.text_a for r in rows] == ['"quoted" start', 'an odd " quote', "it's \"fine"]
    assert [r.label for r in rows] == ["1", "0", "1"]
    assert all(r.text_b is None for r in rows)
    assert [r.source.rsplit(":", 1)[1] for r in rows] == ["2", "4", "5"]


def test_csv_quoted_commas_and_pairs(tmp_path):
    text = 'premise,hypothesis,label\n"Paris, France",is a city,yes\n"She said ""no""",x,no\n'
    rows = read_table(write(tmp_path / "a.csv", text), ["premise", "hypothesis"], "label")
    assert [(r.text_a, r.text_b, r.label) for r in rows] == [
        ("Paris, France", "is a city", "yes"),
        ('She said "no"', "x", "no"),
    ]


def test_csv_quoted_newline_reports_the_row_start(tmp_path):
    text = 's,label\n"two\nlines",a\nnext,\n'
    with pytest.raises(DataFormatError, match=r"a\.csv:4: the label column 'label' is empty"):
        read_table(write(tmp_path / "a.csv", text), ["s"], "label")
    rows = read_table(write(tmp_path / "b.csv", 's,label\n"two\nlines",a\n'), ["s"], "label")
    assert rows[0].text_a == "two\nlines"
    assert rows[0].source.endswith("b.csv:2")


def test_unclosed_csv_quote_is_a_format_error(tmp_path):
    with pytest.raises(DataFormatError, match=r"a\.csv:2: cannot parse"):
        read_table(write(tmp_path / "a.csv", 's,label\n"never closed,1\n'), ["s"], "label")


def test_jsonl_with_blank_lines_and_numeric_labels(tmp_path):
    text = '{"q": "a?", "p": "b", "y": 1}\n\n{"q": "c\\nd", "p": "e", "y": 0}\r\n'
    rows = read_table(write(tmp_path / "a.jsonl", text), ["q", "p"], "y")
    assert [(r.text_a, r.text_b, r.label) for r in rows] == [("a?", "b", "1"), ("c\nd", "e", "0")]
    assert rows[1].source.endswith("a.jsonl:3")


def test_jsonl_missing_key_and_null_label(tmp_path):
    with pytest.raises(DataFormatError, match=r"a\.jsonl:2: no key 'y'; available keys: \['q', 'z'\]"):
        read_table(write(tmp_path / "a.jsonl", '{"q": "a", "y": 1}\n{"q": "b", "z": 1}\n'), ["q"], "y")
    with pytest.raises(DataFormatError, match=r"b\.jsonl:1: the label 'y' is missing"):
        read_table(write(tmp_path / "b.jsonl", '{"q": "a", "y": null}\n'), ["q"], "y")
    with pytest.raises(DataFormatError, match=r"c\.jsonl:1: expected one JSON object per line"):
        read_table(write(tmp_path / "c.jsonl", '[{"q": "a", "y": 1}]\n'), ["q"], "y")


def test_missing_label_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "bad.tsv", "sentence\tlabel\ngood\t1\nno label here\t \n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:3: the label column 'label' is empty"):
        read_table(path, ["sentence"], "label")


def test_wrong_number_of_fields_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.tsv", "sentence\tlabel\ngood\t1\ntoo\tmany\t1\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:3: expected 2 fields \(the header at line 1\), got 3"):
        read_table(path, ["sentence"], "label")


def test_header_missing_a_column_lists_the_available_ones(tmp_path):
    path = write(tmp_path / "bad.tsv", "\ufefftext\ttarget\nx\t1\n")
    with pytest.raises(
        DataFormatError, match=r"bad\.tsv:1: no column 'label' .*available columns: \['text', 'target'\]"
    ):
        read_table(path, ["text"], "label")


def test_header_less_file_with_given_column_names(tmp_path):
    path = write(tmp_path / "train.tsv", "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n")
    rows = read_table(path, ["sentence"], "label", column_names=["source", "label", "original", "sentence"])
    assert rows[0].label == "1"
    assert rows[0].text_a.startswith("The sailors")
    assert rows[0].source.endswith("train.tsv:1")


def test_unknown_extension_needs_a_delimiter(tmp_path):
    path = write(tmp_path / "a.txt", "s|label\nx|1\n")
    with pytest.raises(DataFormatError, match="cannot tell the format"):  # the CLI's clear-error path
        read_table(path, ["s"], "label")
    with pytest.raises(DataFormatError, match="one or two columns"):
        read_table(path, ["s", "t", "u"], "label", delimiter="|")
    assert read_table(path, ["s"], "label", delimiter="|")[0].label == "1"


def error_of(call, *args, **kwargs) -> str:
    """The message of the :class:`DataFormatError` that ``call(*args, **kwargs)`` raises."""
    with pytest.raises(DataFormatError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a.tsv", "sentence\tlabel\ngood\tpos\nbad\tNaN\n"),
        ("a.csv", "sentence,label\ngood,pos\nbad, nan \n"),
    ],
    ids=["tsv", "csv"],
)
def test_a_nan_label_is_a_missing_label_not_a_class(tmp_path, name, text):
    path = write(tmp_path / name, text)
    value = "NaN" if name.endswith(".tsv") else "nan"
    assert error_of(read_table, path, ["sentence"], "label") == (
        f"{path}:3: the label column 'label' is {value!r}, a missing label; give the example its label or remove it"
    )


def test_a_json_nan_label_bare_or_quoted_is_a_missing_label(tmp_path):
    bare = write(tmp_path / "bare.jsonl", '{"t": "a", "y": "pos"}\n{"t": "b", "y": NaN}\n')
    assert error_of(read_table, bare, ["t"], "y") == f"{bare}:2: the label 'y' is nan, a missing label"
    quoted = write(tmp_path / "quoted.jsonl", '{"t": "a", "y": "pos"}\n\n{"t": "b", "y": "NaN"}\n')
    assert error_of(read_table, quoted, ["t"], "y") == f"{quoted}:3: the label 'y' is 'NaN', a missing label"
    infinite = write(tmp_path / "inf.jsonl", '{"t": "a", "y": Infinity}\n')
    assert error_of(read_table, infinite, ["t"], "y") == f"{infinite}:1: the label 'y' is inf, not a finite number"


def test_a_nan_among_integer_scores_is_an_error_not_a_classification(tmp_path):
    scores = "".join(f"s{score}\t{score}\n" for score in range(21))
    dev = write(tmp_path / "dev.tsv", "text\tscore\nx\t3\ny\t17\n")
    clean = write(tmp_path / "clean.tsv", "text\tscore\n" + scores)
    assert load_custom(clean, dev, text_columns=["text"], label_column="score").is_regression  # 21 distinct
    train = write(tmp_path / "train.tsv", "text\tscore\n" + scores + "s21\tNaN\n")
    assert error_of(load_custom, train, dev, text_columns=["text"], label_column="score") == (
        f"{train}:23: the label column 'score' is 'NaN', a missing label; give the example its label or remove it"
    )


@pytest.mark.parametrize("name", ["a.tsv", "a.csv"])
def test_a_header_repeated_inside_the_file_is_an_error(tmp_path, name):
    separator = "\t" if name.endswith(".tsv") else ","
    lines = [["sentence", "label"], ["good", "pos"], ["bad", "neg"], ["sentence", "label"], ["fine", "pos"]]
    path = write(tmp_path / name, "".join(separator.join(line) + "\n" for line in lines))
    assert error_of(read_table, path, ["sentence"], "label") == (
        f"{path}:4: the row repeats the header (line 1); a file has one header row, its first "
        "(were files joined without removing the later headers?)"
    )


@pytest.mark.parametrize(
    ("labels", "line", "shown", "first"),
    [
        (["0", "1", '"pos"', '"neg"'], 3, "a string ('pos')", "numbers"),
        (['"1"', '"0"', "1"], 3, "a number (1)", "strings"),
        (["true", "false", "0"], 3, "a number (0)", "booleans"),
        (["1", "true"], 2, "a boolean (True)", "numbers"),
    ],
    ids=["numbers-then-strings", "strings-then-a-number", "booleans-then-a-number", "a-number-then-a-boolean"],
)
def test_json_labels_of_mixed_types_name_the_first_line_that_differs(tmp_path, labels, line, shown, first):
    text = "".join(f'{{"t": "x{index}", "y": {label}}}\n' for index, label in enumerate(labels))
    path = write(tmp_path / "a.jsonl", text)
    assert error_of(read_table, path, ["t"], "y") == (
        f"{path}:{line}: the label 'y' is {shown}, but the labels before it are {first} (from line 1); "
        "a file's JSON labels must all be of one type (numbers, strings or booleans)"
    )


def test_a_word_among_regression_scores_names_its_own_file_and_line(tmp_path):
    train = write(
        tmp_path / "train.tsv", "text\tscore\n" + "".join(f"s{i}\t{i / 4}\n" for i in range(14)) + "z\thigh\n"
    )
    dev = write(tmp_path / "dev.tsv", "text\tscore\nx\t0.3\ny\t4.9\n")
    inferred = error_of(load_custom, train, dev, text_columns=["text"], label_column="score")
    assert inferred == (
        f"{train}:16: label 'high' in split 'train' is not a finite number, but the training labels hold 14 "
        "distinct numbers, so the task is taken for regression; correct the label, or declare the task "
        "classification (--no-regression) if the labels are classes"
    )
    declared = error_of(load_custom, train, dev, text_columns=["text"], label_column="score", regression=True)
    assert declared == f"{train}:16: label 'high' in split 'train' is not a number (regression)"


@pytest.mark.parametrize(
    ("name", "header", "row"),
    [
        ("a.tsv", b"text\tlabel\n", b"%s\tpos\n"),
        ("a.csv", b"text,label\n", b"%s,pos\n"),
        ("a.jsonl", b"", b'{"text": "%s", "label": "pos"}\n'),
    ],
    ids=["tsv", "csv", "jsonl"],
)
def test_a_byte_that_is_not_utf8_names_the_file_and_its_line(tmp_path, name, header, row):
    # far past the reader's first chunk, so the line is counted in the file, not in a buffer
    lines = [row % b"fine words" for _ in range(6000)] + [row % "caf\u00e9 au lait".encode("latin-1")]
    path = tmp_path / name
    path.write_bytes(header + b"".join(lines) + row % b"last")
    line = 6001 + (1 if header else 0)
    assert error_of(read_table, path, ["text"], "label") == (
        f"{path}:{line}: byte 0xe9 is not UTF-8; data files must be UTF-8 encoded "
        "(convert the file, e.g. with iconv, and read it again)"
    )


def test_empty_texts_are_counted_in_the_data_summary_and_warned_about(tmp_path, tiny_tokenizer, caplog):
    from bertprobe.tasks.classification import SequenceTask

    train = write(tmp_path / "train.tsv", "a\tb\ty\nfine\tpair\tpos\n\tno first\tneg\nno second\t \tpos\n")
    dev = write(tmp_path / "dev.tsv", "a\tb\ty\nfine\tpair\tneg\n")
    test = write(tmp_path / "test.tsv", "a\tb\ty\n\t\tneg\n")
    corpus = load_custom(train, dev, test, text_columns=["a", "b"], label_column="y")
    with caplog.at_level(logging.WARNING, logger="bertprobe.tasks.classification"):
        task = SequenceTask("custom", corpus, tiny_tokenizer, 32, "first", "accuracy", None, None, 0)
    assert task.data_summary()["empty_texts"] == {"train": 2, "validation": 0, "test": 1}
    assert [record.getMessage() for record in caplog.records] == [
        f"custom: examples with an empty text (train 2, test 1; first at {train}:3, {train}:4, {test}:2); "
        "they are kept, and counted in the run record under data.empty_texts"
    ]
    caplog.clear()
    clean = load_custom(dev, dev, text_columns=["a", "b"], label_column="y")
    with caplog.at_level(logging.WARNING, logger="bertprobe.tasks.classification"):
        quiet = SequenceTask("custom", clean, tiny_tokenizer, 32, "first", "accuracy", None, None, 0)
    assert quiet.data_summary()["empty_texts"] == {"train": 0, "validation": 0}
    assert caplog.records == []


# --------------------------------------------------------------------------- build_corpus


def test_labels_sorted_numerically_when_numeric():
    corpus = build_corpus({"train": examples("10", "2", "2", "1")}, source="mem")
    assert corpus.label_list == ["1", "2", "10"]
    assert not corpus.is_regression
    assert corpus.num_labels == 3


def test_label_unseen_in_train_names_split_label_and_line():
    splits = {"train": examples("pos", "neg"), "validation": examples("pos", "meh", prefix="dev")}
    with pytest.raises(DataFormatError, match=r"split 'validation' .*\['meh'\] \(first at dev\.tsv:3\)"):
        build_corpus(splits, source="mem")


def test_empty_split_is_an_error():
    with pytest.raises(DataFormatError, match="split 'validation' of mem has no examples"):
        build_corpus({"train": examples("a"), "validation": []}, source="mem")


def test_regression_inferred_from_many_numeric_labels():
    scores = [str(i / 4) for i in range(12)]
    corpus = build_corpus({"train": examples(*scores), "validation": examples("0.3", "4.9")}, source="mem")
    assert corpus.is_regression
    assert corpus.label_list == []
    assert corpus.num_labels == 1
    assert corpus.splits["validation"].labels() == [0.3, 4.9]


def test_a_constant_regression_dev_set_is_refused_before_training():
    scores = [str(i / 4) for i in range(12)]
    with pytest.raises(DataFormatError, match=r"split 'validation' of mem: every label is 2\.5; .*undefined"):
        build_corpus({"train": examples(*scores), "validation": examples("2.5", "2.5", "2.50")}, source="mem")
    constant_train = {"train": examples("1", "1", "1"), "validation": examples("0", "1")}
    assert build_corpus(constant_train, source="mem", regression=True).is_regression  # dev varies: scorable


def test_few_numeric_labels_stay_classes_unless_told():
    splits = {"train": examples("0", "1", "0.5")}
    assert not build_corpus(splits, source="mem").is_regression
    assert build_corpus(splits, source="mem", regression=True).splits["train"].labels() == [0.0, 1.0, 0.5]
    with pytest.raises(DataFormatError, match=r"t\.tsv:3: label 'x' .* is not a number"):
        build_corpus({"train": examples("0", "x")}, source="mem", regression=True)


def test_load_custom_reads_each_format(tmp_path):
    write(tmp_path / "train.csv", 'a,b,y\n"x, y",z,good\nw,v,bad\n')
    write(tmp_path / "dev.jsonl", '{"a": "p", "b": "q", "y": "good"}\n')
    write(tmp_path / "test.tsv", "a\tb\ty\nm\tn\tbad\n")
    corpus = load_custom(
        tmp_path / "train.csv", tmp_path / "dev.jsonl", tmp_path / "test.tsv", text_columns=["a", "b"], label_column="y"
    )
    assert sorted(corpus.splits) == ["test", "train", "validation"]
    assert corpus.label_list == ["bad", "good"]
    assert corpus.is_pair
    assert corpus.splits["train"].examples[0].text_a == "x, y"


def test_an_empty_custom_file_is_named(tmp_path):
    write(tmp_path / "train.tsv", "a\ty\nx\tgood\n")
    write(tmp_path / "dev.tsv", "a\ty\n")  # a header alone
    with pytest.raises(DataFormatError, match=r"dev\.tsv: the validation file has no examples"):
        load_custom(tmp_path / "train.tsv", tmp_path / "dev.tsv", text_columns=["a"], label_column="y")


# --------------------------------------------------------------------------- GLUE


def test_registry_and_unknown_task():
    assert {"sst2", "mrpc", "rte", "cola", "qnli", "qqp", "mnli", "stsb"} <= set(GLUE_TASKS)
    assert glue_task("SST-2") is GLUE_TASKS["sst2"]
    assert glue_task("STS-B").is_regression
    assert GLUE_TASKS["mrpc"].metrics == ("f1", "accuracy")
    assert GLUE_TASKS["cola"].metrics == ("matthews",)
    with pytest.raises(ValueError, match=r"unknown GLUE task 'wnli2'; known tasks: sst2, mrpc, rte"):
        glue_task("wnli2")
    with pytest.raises(ValueError, match="known tasks"):
        load_glue_dir("nope", GLUE_DIR)


@needs_glue
@pytest.mark.parametrize(
    ("task", "train", "dev", "labels"),
    [
        ("sst2", 67_349, 872, ["negative", "positive"]),
        # The file holds 3,667 pairs (3,668 lines with the header); the Hub's train split has 3,668.
        ("mrpc", 3_667, 408, ["not_equivalent", "equivalent"]),
        ("rte", 2_490, 277, ["entailment", "not_entailment"]),
    ],
)
def test_local_glue_sizes_and_labels(task, train, dev, labels):
    corpus = load_glue_dir(task, GLUE_DIR)
    assert sorted(corpus.splits) == ["train", "validation"]
    assert (len(corpus.splits["train"]), len(corpus.splits["validation"])) == (train, dev)
    assert corpus.label_list == labels
    assert not corpus.is_regression
    assert corpus.is_pair == (task != "sst2")
    if task != "sst2":
        assert all(e.text_b for split in corpus.splits.values() for e in split.examples)


@needs_glue
def test_local_mrpc_first_pair_keeps_literal_quotes():
    corpus = load_glue_dir("mrpc", GLUE_DIR / "MRPC")
    first = corpus.splits["train"].examples[0]
    assert first.label == "equivalent"
    assert first.text_a.startswith('Amrozi accused his brother , whom he called " the witness "')
    assert first.text_b.startswith("Referring to him as only")
    assert first.source.endswith("train.tsv:2")


def _fake_glue(config: str):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    if config == "stsb":
        features = Features({"sentence1": Value("string"), "sentence2": Value("string"), "label": Value("float32")})
        rows = {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [4.5, 0.25], "idx": [0, 1]}
        features["idx"] = Value("int32")
        return DatasetDict({s: Dataset.from_dict(rows, features=features) for s in ("train", "validation")})
    spec = GLUE_TASKS[config]
    features = Features({column: Value("string") for column in spec.hub_text_columns})
    features["label"] = ClassLabel(names=list(spec.label_names))
    features["idx"] = Value("int32")

    def rows(labels: list[int]) -> dict[str, list]:
        data: dict[str, list] = {c: [f"{c} {i}" for i in range(len(labels))] for c in spec.hub_text_columns}
        return {**data, "label": labels, "idx": list(range(len(labels)))}

    return DatasetDict(
        {
            "train": Dataset.from_dict(rows([1, 0, 1]), features=features),
            "validation": Dataset.from_dict(rows([0, 1]), features=features),
            "test": Dataset.from_dict(rows([-1]), features=features),
        }
    )


def test_hub_path_maps_class_ids_to_names(monkeypatch):
    import datasets

    calls: list[tuple[str, str]] = []

    def fake_load_dataset(name: str, config: str, **kwargs):
        calls.append((name, config))
        return _fake_glue(config)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    mrpc = load_glue_hub("mrpc")
    assert calls == [("glue", "mrpc")]
    assert sorted(mrpc.splits) == ["train", "validation"]
    assert mrpc.label_list == ["not_equivalent", "equivalent"]
    assert mrpc.splits["train"].labels() == ["equivalent", "not_equivalent", "equivalent"]
    first = mrpc.splits["train"].examples[0]
    assert (first.text_a, first.text_b) == ("sentence1 0", "sentence2 0")
    assert first.source == "hub:glue/mrpc[train][0]"
    assert load_glue_hub("sst2").label_list == ["negative", "positive"]
    assert load_glue_hub("rte").label_list == ["entailment", "not_entailment"]
    stsb = load_glue_hub("stsb")
    assert stsb.is_regression and stsb.splits["train"].labels() == [4.5, 0.25]


@needs_glue
def test_hub_and_local_paths_agree_on_labels(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, **kwargs: _fake_glue(config))
    for task in ("sst2", "mrpc", "rte"):
        local = load_glue_dir(task, GLUE_DIR)
        hub = load_glue_hub(task)
        assert hub.label_list == local.label_list
        assert set(local.splits["train"].labels()) == set(hub.label_list)


def test_local_label_outside_the_task_is_an_error(tmp_path):
    folder = tmp_path / "MRPC"
    folder.mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(folder / "train.tsv", header + "1\t1\t2\ta\tb\n0\t3\t4\tc\td\n")
    write(folder / "dev.tsv", header + "2\t5\t6\te\tf\n")
    with pytest.raises(
        DataFormatError, match=r"dev\.tsv:2: label '2' is not a mrpc label; expected one of \['0', '1'\]"
    ):
        load_glue_dir("mrpc", tmp_path)


# --------------------------------------------------------------------------- metrics


def test_classification_scores_by_hand():
    gold = ["a", "a", "b", "b"]
    predicted = ["a", "b", "b", "b"]
    scores = classification_scores(gold, predicted, positive_label="b")
    assert scores["accuracy"] == pytest.approx(3 / 4)
    # b: TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 0.8; a: P 1, R 1/2, F1 2/3.
    assert scores["f1"] == pytest.approx(0.8)
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2*1 - 1*0) / sqrt(3*2*2*1)
    assert scores["matthews"] == pytest.approx(2 / math.sqrt(12))
    assert "f1" not in classification_scores(gold, predicted)


def test_accuracy_and_macro_f1_with_unbalanced_classes():
    # a: 3 gold, 2 found (P 1, R 2/3, F1 0.8); b: 1 gold, found once with one false alarm (P 1/2, R 1, F1 2/3)
    scores = classification_scores(["a", "a", "a", "b"], ["a", "a", "b", "b"])
    assert scores["accuracy"] == pytest.approx(0.75)  # balanced accuracy would be (2/3 + 1) / 2
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)  # weighted by support would be 0.767


def test_matthews_for_a_larger_confusion_matrix():
    # TP 6, FN 2, FP 1, TN 3.
    gold = ["equivalent"] * 8 + ["not_equivalent"] * 4
    predicted = ["equivalent"] * 6 + ["not_equivalent"] * 2 + ["equivalent"] + ["not_equivalent"] * 3
    scores = classification_scores(gold, predicted, positive_label="equivalent")
    assert scores["matthews"] == pytest.approx((6 * 3 - 1 * 2) / math.sqrt(7 * 8 * 4 * 5))
    assert scores["f1"] == pytest.approx(2 * 6 / (2 * 6 + 1 + 2))
    assert scores["accuracy"] == pytest.approx(9 / 12)


def test_classification_scores_reject_bad_input():
    with pytest.raises(ValueError, match="gold has 1 items but predicted has 2"):
        classification_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        classification_scores([], [])


def test_regression_scores_by_hand():
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    linear = regression_scores(x, [2 * v + 1 for v in x])
    assert linear["pearson"] == pytest.approx(1.0)
    assert linear["spearman"] == pytest.approx(1.0)
    assert linear["mse"] == pytest.approx(sum((v + 1) ** 2 for v in x) / 5)
    cubic = regression_scores(x, [v**3 for v in x])
    assert cubic["spearman"] == pytest.approx(1.0)
    assert cubic["pearson"] < 0.99
    assert regression_scores(x, list(reversed(x)))["spearman"] == pytest.approx(-1.0)
    assert math.isnan(regression_scores(x, [1.0] * 5)["pearson"])
    # two swapped neighbours: Spearman 1 - 6 * 4 / (5 * 24) = 0.8 (Kendall's tau would be 0.6)
    assert regression_scores([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0])["spearman"] == pytest.approx(0.8)
