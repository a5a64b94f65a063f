"""CoNLL-format token-tagging data: local column files and the Hub's ``conll2003``.

Both sources end as the same :class:`TaggedCorpus`: documents of sentences of
``(word, tag)`` pairs. Everything after loading (document context, sub-word alignment,
batching) is shared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bertprobe.errors import DataFormatError
from bertprobe.results import write_text_atomic
from bertprobe.tasks.text_files import numbered_lines

DOCSTART = "-DOCSTART-"
SPLIT_FILE_NAMES = {
    "train": ("train.txt", "eng.train", "train.conll"),
    "validation": ("validation.txt", "dev.txt", "valid.txt", "eng.testa", "dev.conll"),
    "test": ("test.txt", "eng.testb", "test.conll"),
}


#: What separates CoNLL columns: runs of ordinary spaces and tabs, never other Unicode spaces.
COLUMN_SEPARATOR = re.compile(r"[ \t]+")
#: What :func:`read_conll_file` strips from each end of a line (line ends included).
_LINE_PADDING = " \t\r\n"


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    document: int
    source: str = ""  # "file:line" of the sentence's first word, for error messages


@dataclass
class TaggedSplit:
    """One split: sentences in file order, each tagged with its document number."""

    name: str
    sentences: list[Sentence] = field(default_factory=list)
    has_documents: bool = False  # whether its source marks documents (-DOCSTART- lines)

    def documents(self) -> list[list[int]]:
        """Sentence indices grouped by document, in order."""
        grouped: dict[int, list[int]] = {}
        for index, sentence in enumerate(self.sentences):
            grouped.setdefault(sentence.document, []).append(index)
        return list(grouped.values())

    def tag_set(self) -> set[str]:
        return {tag for sentence in self.sentences for tag in sentence.tags}


@dataclass
class TaggedCorpus:
    splits: dict[str, TaggedSplit]
    source: str
    #: False when the source drops ``-DOCSTART-`` lines (the Hub's copy does), so
    #: document context cannot be rebuilt.
    has_documents: bool = True

    def label_list(self) -> list[str]:
        """Tags seen in train, ``O`` first, then sorted by entity type and B before I."""
        tags = self.splits["train"].tag_set()
        return sorted(tags, key=lambda t: (t != "O", t[2:] if len(t) > 2 else t, t))

    def check(self) -> None:
        """Fail on an empty split or a dev/test tag that train never shows."""
        for split in self.splits.values():
            if not split.sentences:
                raise DataFormatError(f"split {split.name!r} of {self.source} has no sentences")
        known = self.splits["train"].tag_set()
        for name, split in self.splits.items():
            unseen = split.tag_set() - known
            if unseen:
                where = next(s.source for s in split.sentences if set(s.tags) & unseen)
                raise DataFormatError(
                    f"split {name!r} has tags never seen in train: {sorted(unseen)} "
                    f"(first at {where}); the label set must come from the training data"
                )


def read_conll_file(path: Path, split_name: str, tag_column: int = -1) -> TaggedSplit:
    """Read a column file: a word first, the tag in ``tag_column``.

    Columns are separated by runs of ordinary spaces and tabs only (:data:`COLUMN_SEPARATOR`).
    Other Unicode spaces, such as the non-breaking space U+00A0, are part of the word they
    stand in: ``New York B-LOC`` with a non-breaking space inside ``New York`` is one word
    and a tag, not three columns. The file must be UTF-8. Blank lines end sentences;
    ``-DOCSTART-`` lines start documents. A byte that is not UTF-8, a line with a single
    column, a line with another number of columns than the file's first (CoNLL-2003 has
    four: a line that lost its NER tag would otherwise pass its chunk tag, ``I-NP``, off as
    an entity), or a tag that is not IOB-shaped (``O``, ``B-X``, ``I-X``, ``E-X``, ``S-X``),
    is an error naming the file and line.
    """
    split = TaggedSplit(split_name)
    document = 0
    words: list[str] = []
    tags: list[str] = []
    start_line = 0
    seen_content_in_document = False
    first_width: tuple[int, int] | None = None  # (columns, line number) of the first word line

    def flush() -> None:
        nonlocal words, tags
        if words:
            split.sentences.append(Sentence(words, tags, document, f"{path}:{start_line}"))
        words, tags = [], []

    for line_number, raw in numbered_lines(path):
        line = raw.strip(_LINE_PADDING)
        if not line:
            flush()
            continue
        columns = COLUMN_SEPARATOR.split(line)
        if columns[0] == DOCSTART:
            flush()
            split.has_documents = True
            if seen_content_in_document:
                document += 1
            seen_content_in_document = False
            continue
        if len(columns) < 2:
            raise DataFormatError(
                f"{path}:{line_number}: expected a word and a tag separated by spaces or tabs, got {line!r}"
            )
        if first_width is None:
            first_width = len(columns), line_number
        elif len(columns) != first_width[0]:
            raise DataFormatError(
                f"{path}:{line_number}: {len(columns)} columns, but the file's lines have {first_width[0]} "
                f"(from line {first_width[1]}): a column is missing or extra in {line!r}"
            )
        tag = columns[tag_column]
        if not _is_iob_tag(tag):
            raise DataFormatError(
                f"{path}:{line_number}: {tag!r} in the tag column is not an IOB tag "
                f"(O, or B-, I-, E-, S- and a type such as B-PER) in line {line!r}"
            )
        if not words:
            start_line = line_number
        words.append(columns[0])
        tags.append(tag)
        seen_content_in_document = True
    flush()
    return split


def write_conll_file(path: Path, sentences: Sequence[Sentence]) -> None:
    """``sentences`` as a CoNLL file that :func:`read_conll_file` reads back: ``word tag``
    lines, a blank line after each sentence, a ``-DOCSTART-`` line where a document starts.
    Written atomically (a temporary file renamed into place)."""
    lines: list[str] = []
    document = None
    for sentence in sentences:
        if sentence.document != document:
            lines += [f"{DOCSTART} -X- -X- O", ""]
            document = sentence.document
        lines += [f"{word} {tag}" for word, tag in zip(sentence.words, sentence.tags, strict=True)]
        lines.append("")
    write_text_atomic(path, "\n".join(lines) + "\n")


def _is_iob_tag(tag: str) -> bool:
    """``O``, or ``B-``, ``I-``, ``E-`` or ``S-`` and a type without whitespace (a stray
    non-breaking space after ``B-ORG`` would otherwise make a class of its own)."""
    if tag == "O":
        return True
    return len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-" and not any(char.isspace() for char in tag)


def find_split_file(data_dir: Path, split: str) -> Path:
    for name in SPLIT_FILE_NAMES[split]:
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {split} file in {data_dir}: expected one of {', '.join(SPLIT_FILE_NAMES[split])}")


def load_conll_dir(data_dir: str | Path) -> TaggedCorpus:
    """Read train/validation/test CoNLL files from a folder."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data-dir {folder} is not a folder")
    splits = {name: read_conll_file(find_split_file(folder, name), name) for name in SPLIT_FILE_NAMES}
    corpus = TaggedCorpus(splits, source=str(folder), has_documents=all(s.has_documents for s in splits.values()))
    corpus.check()
    return corpus


def corpus_from_records(splits: dict[str, Iterable[tuple[list[str], list[str]]]], source: str) -> TaggedCorpus:
    """Build a corpus from ``(words, tags)`` records; a ``-DOCSTART-`` record starts a document."""
    result: dict[str, TaggedSplit] = {}
    saw_docstart = False
    for name, records in splits.items():
        split = TaggedSplit(name)
        document = 0
        seen_content = False
        for number, (words, tags) in enumerate(records):
            if words and words[0] == DOCSTART:
                saw_docstart = split.has_documents = True
                document += 1 if seen_content else 0
                seen_content = False
                continue
            if not words:
                continue
            split.sentences.append(Sentence(list(words), list(tags), document, f"{source}[{name}][{number}]"))
            seen_content = True
        result[name] = split
    corpus = TaggedCorpus(result, source=source, has_documents=saw_docstart)
    corpus.check()
    return corpus


def load_conll_hub(dataset_name: str = "conll2003") -> TaggedCorpus:
    """Load CoNLL-2003 from the Hugging Face Hub with ``datasets`` (needs the network)."""
    from datasets import load_dataset

    dataset = load_dataset(dataset_name)
    names = dataset["train"].features["ner_tags"].feature.names
    splits = {
        split: ((row["tokens"], [names[i] for i in row["ner_tags"]]) for row in dataset[split])
        for split in ("train", "validation", "test")
    }
    return corpus_from_records(splits, source=f"hub:{dataset_name}")
