"""Reading CoNLL files and Hub-style records: structure, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertprobe.errors import DataFormatError
from bertprobe.tasks.conll import (
    Sentence,
    corpus_from_records,
    load_conll_dir,
    read_conll_file,
    write_conll_file,
)

SAMPLE = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_sentences_words_tags_and_documents(tmp_path):
    split = read_conll_file(write(tmp_path / "train.txt", SAMPLE), "train")
    assert [s.words for s in split.sentences] == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert [s.tags for s in split.sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert split.documents() == [[0, 1], [2]]
    assert split.sentences[1].source.endswith("train.txt:7")


def test_written_file_reads_back_with_its_documents(tmp_path):
    sentences = [
        Sentence(["EU", "rejects"], ["B-ORG", "O"], 0),
        Sentence(["German", "call"], ["B-MISC", "O"], 0),
        Sentence(["Peter"], ["B-PER"], 1),
    ]
    write_conll_file(tmp_path / "x.txt", sentences)
    read = read_conll_file(tmp_path / "x.txt", "x")
    assert [(s.words, s.tags, s.document) for s in read.sentences] == [
        (["EU", "rejects"], ["B-ORG", "O"], 0),
        (["German", "call"], ["B-MISC", "O"], 0),
        (["Peter"], ["B-PER"], 1),
    ]
    assert (tmp_path / "x.txt").read_text(encoding="utf-8").count("-DOCSTART-") == 2


def test_byte_order_mark_and_missing_final_blank_line(tmp_path):
    split = read_conll_file(write(tmp_path / "t.txt", "\ufeffEU NNP B-NP B-ORG\nsays VBZ B-VP O"), "train")
    assert split.sentences[0].words == ["EU", "says"]


def test_single_column_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.txt", "EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: expected a word and a tag"):
        read_conll_file(path, "train")


def test_non_iob_tag_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.txt", "\nEU NNP B-NP ORG\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: 'ORG' in the tag column is not an IOB tag"):
        read_conll_file(path, "train")


def test_a_line_missing_a_column_names_file_and_line(tmp_path):
    # `German JJ I-NP` lost its NER tag: read by position, its chunk tag would pass for an entity
    text = "-DOCSTART- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ I-NP\n"
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(DataFormatError, match=r"bad\.txt:5: 3 columns, but the file's lines have 4 \(from line 3\)"):
        read_conll_file(path, "train")
    two_columns = write(tmp_path / "two.txt", "-DOCSTART- -X- -X- O\n\nEU B-ORG\nrejects O\n")
    assert read_conll_file(two_columns, "train").sentences[0].tags == ["B-ORG", "O"]  # DOCSTART sets no width


def test_a_non_breaking_space_stays_inside_its_word(tmp_path):
    # columns are split at spaces and tabs only: U+00A0 is part of the word, not a fourth separator
    text = "EU NNP B-NP B-ORG\nNew\u00a0York NNP I-NP B-LOC\nsays\tVBZ\tB-VP\tO\n"
    split = read_conll_file(write(tmp_path / "nbsp.txt", text), "train")
    assert [(s.words, s.tags) for s in split.sentences] == [(["EU", "New\u00a0York", "says"], ["B-ORG", "B-LOC", "O"])]
    padded = write(tmp_path / "padded.txt", "EU B-ORG\u00a0\n")  # nor stripped: the tag is not IOB (shown escaped)
    with pytest.raises(DataFormatError) as caught:
        read_conll_file(padded, "train")
    assert str(caught.value) == (
        f"{padded}:1: 'B-ORG\\xa0' in the tag column is not an IOB tag (O, or B-, I-, E-, S- and a type such as "
        "B-PER) in line 'EU B-ORG\\xa0'"
    )


def test_a_byte_that_is_not_utf8_names_the_file_and_its_line(tmp_path):
    path = tmp_path / "latin1.txt"
    body = b"".join(b"word%d NNP B-NP O\n" % index for index in range(5000))  # past the reader's first chunk
    path.write_bytes(b"-DOCSTART- -X- -X- O\n\n" + body + "Z\u00fcrich NNP B-NP B-LOC\n".encode("latin-1"))
    with pytest.raises(DataFormatError) as caught:
        read_conll_file(path, "train")
    assert str(caught.value) == (
        f"{path}:5003: byte 0xfc is not UTF-8; data files must be UTF-8 encoded "
        "(convert the file, e.g. with iconv, and read it again)"
    )


def _corpus_dir(tmp_path: Path, train: str, dev: str, test: str) -> Path:
    write(tmp_path / "train.txt", train)
    write(tmp_path / "validation.txt", dev)
    write(tmp_path / "test.txt", test)
    return tmp_path


def test_label_list_comes_from_train_with_o_first(tmp_path):
    corpus = load_conll_dir(_corpus_dir(tmp_path, SAMPLE, SAMPLE, SAMPLE))
    assert corpus.label_list() == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_tag_unseen_in_train_is_an_error_naming_the_place(tmp_path):
    folder = _corpus_dir(tmp_path, SAMPLE, "Rome NNP B-NP B-LOC\nmeets VBZ B-VP B-EVENT\n", SAMPLE)
    with pytest.raises(
        DataFormatError, match=r"'validation' has tags never seen in train: \['B-EVENT'\].*validation\.txt:1"
    ):
        load_conll_dir(folder)


def test_empty_split_is_an_error(tmp_path):
    folder = _corpus_dir(tmp_path, SAMPLE, "-DOCSTART- -X- -X- O\n\n", SAMPLE)
    with pytest.raises(DataFormatError, match=r"split 'validation' .* has no sentences"):
        load_conll_dir(folder)


def test_missing_split_file_says_which_names_are_accepted(tmp_path):
    write(tmp_path / "train.txt", SAMPLE)
    with pytest.raises(FileNotFoundError, match=r"no validation file .*validation\.txt"):
        load_conll_dir(tmp_path)


def test_hub_records_keep_documents_when_docstart_rows_exist():
    records = [
        (["-DOCSTART-"], ["O"]),
        (["EU"], ["B-ORG"]),
        (["Peter"], ["B-PER"]),
        (["-DOCSTART-"], ["O"]),
        (["Rome"], ["B-LOC"]),
    ]
    corpus = corpus_from_records({"train": records, "validation": records, "test": records}, "hub:x")
    assert corpus.has_documents
    assert corpus.splits["train"].documents() == [[0, 1], [2]]


def test_hub_records_without_docstart_mark_documents_unknown():
    records = [(["EU"], ["B-ORG"]), (["Peter"], ["B-PER"])]
    corpus = corpus_from_records({"train": records, "validation": records, "test": records}, "hub:x")
    assert not corpus.has_documents


def test_hub_path_maps_class_label_ids_to_tag_names(monkeypatch):
    import datasets

    from bertprobe.tasks.conll import load_conll_hub

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    rows = {"tokens": [["EU", "rejects", "German"], ["Peter", "Blackburn"]], "ner_tags": [[3, 0, 7], [1, 2]]}
    split = datasets.Dataset.from_dict(rows, features=features)
    fake = datasets.DatasetDict({"train": split, "validation": split, "test": split})
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name: asked.append(name) or fake)
    corpus = load_conll_hub("conll2003")
    assert asked == ["conll2003"]
    assert [s.tags for s in corpus.splits["train"].sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert corpus.splits["test"].sentences[1].words == ["Peter", "Blackburn"]
    assert not corpus.has_documents


def test_local_files_without_docstart_refuse_document_context(tmp_path, tiny_tokenizer):
    """Without -DOCSTART- lines a whole file would be one document: unrelated sentences as context."""
    from bertprobe.errors import DataFormatError
    from bertprobe.tasks.conll import load_conll_dir
    from bertprobe.tasks.tagging import TaggingTask

    for name in ("train", "validation", "test"):
        lines = ["-DOCSTART- -X- -X- O", ""] if name == "train" else []
        (tmp_path / f"{name}.txt").write_text("\n".join([*lines, "Rome NNP B-NP B-LOC", ""]) + "\n", encoding="utf-8")
    corpus = load_conll_dir(tmp_path)
    assert corpus.splits["train"].has_documents and not corpus.has_documents
    with pytest.raises(DataFormatError, match=r"needs document boundaries .* \(splits: validation, test\)"):
        TaggingTask("conll2003", corpus, tiny_tokenizer, 64, "document", None, 1)
    assert TaggingTask("conll2003", corpus, tiny_tokenizer, 64, "sentence", None, 1).windows["validation"]
