"""Word/sub-word alignment and context windows."""

from __future__ import annotations

import pytest

from bertprobe.alignment import encode_split
from bertprobe.errors import DataFormatError
from bertprobe.tasks.conll import Sentence, TaggedSplit

LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3}


def split_of(*sentences: tuple[list[str], list[str], int]) -> TaggedSplit:
    return TaggedSplit("t", [Sentence(w, t, d, f"t.txt:{i}") for i, (w, t, d) in enumerate(sentences)])


def pieces(tokenizer, window):
    return tokenizer.convert_ids_to_tokens(window.input_ids)


def test_label_sits_on_the_first_piece_of_each_word(tiny_tokenizer):
    words = ["springville", "riverton", "john", "went", "to", "paris"]
    tags = ["B-LOC", "B-LOC", "B-PER", "O", "O", "B-LOC"]
    [window] = encode_split(split_of((words, tags, 0)), tiny_tokenizer, LABELS, max_length=64)
    tokens = pieces(tiny_tokenizer, window)
    assert tokens == ["[CLS]", "spring", "##ville", "river", "##ton", "john", "went", "to", "paris", "[SEP]"]
    assert window.word_positions == [1, 3, 5, 6, 7, 8]
    assert window.labels == [3, 3, 1, 0, 0, 3]


def test_word_with_many_pieces_and_a_word_with_none(tiny_tokenizer):
    # "springvilles" -> spring ##ville ##s ; "\u200b" vanishes in the tokenizer and becomes [UNK]
    words = ["springvilles", "\u200b", "tom"]
    [window] = encode_split(split_of((words, ["B-LOC", "O", "B-PER"], 0)), tiny_tokenizer, LABELS, max_length=64)
    tokens = pieces(tiny_tokenizer, window)
    assert tokens == ["[CLS]", "spring", "##ville", "##s", "[UNK]", "tom", "[SEP]"]
    assert window.word_positions == [1, 4, 5]
    assert window.labels == [3, 0, 1]


def test_document_context_fills_the_window_but_labels_only_the_target(tiny_tokenizer):
    docs = split_of(
        (["the", "john"], ["O", "B-PER"], 0),
        (["met", "mary"], ["O", "B-PER"], 0),
        (["in", "oslo"], ["O", "B-LOC"], 0),
        (["tom"], ["B-PER"], 1),
    )
    windows = encode_split(docs, tiny_tokenizer, LABELS, max_length=64, context="document")
    assert [w.sentence_index for w in windows] == [0, 1, 2, 3]
    whole_document = ["[CLS]", "the", "john", "met", "mary", "in", "oslo", "[SEP]"]
    middle = windows[1]
    assert pieces(tiny_tokenizer, middle) == whole_document
    assert middle.word_positions == [3, 4]
    assert middle.labels == [0, 1]
    # the first and last sentences take their context from the one side they have
    assert pieces(tiny_tokenizer, windows[0]) == whole_document and windows[0].word_positions == [1, 2]
    assert pieces(tiny_tokenizer, windows[2]) == whole_document and windows[2].word_positions == [5, 6]
    # the next document never leaks in
    assert pieces(tiny_tokenizer, windows[3]) == ["[CLS]", "tom", "[SEP]"]


def test_document_context_grows_alternately_and_stops_at_the_limit(tiny_tokenizer):
    docs = split_of(
        (["went", "to", "the"], ["O"] * 3, 0),  # one piece per word
        (["john"], ["B-PER"], 0),
        (["met", "mary", "in"], ["O", "B-PER", "O"], 0),
    )
    # budget 5 pieces: the target plus two words each side, nearest first, left first
    first, middle, last = encode_split(docs, tiny_tokenizer, LABELS, max_length=7, context="document")
    assert pieces(tiny_tokenizer, middle) == ["[CLS]", "to", "the", "john", "met", "mary", "[SEP]"]
    assert middle.word_positions == [3]
    # at a document's edge the other side takes the whole budget
    assert pieces(tiny_tokenizer, first) == ["[CLS]", "went", "to", "the", "john", "met", "[SEP]"]
    assert first.word_positions == [1, 2, 3]
    assert pieces(tiny_tokenizer, last) == ["[CLS]", "the", "john", "met", "mary", "in", "[SEP]"]
    assert last.word_positions == [3, 4, 5]
    # an odd number of free pieces: the left, which grows first, gets the extra one
    _, middle, _ = encode_split(docs, tiny_tokenizer, LABELS, max_length=6, context="document")
    assert pieces(tiny_tokenizer, middle) == ["[CLS]", "to", "the", "john", "met", "[SEP]"]


@pytest.mark.parametrize("context", ["document", "sentence"])
def test_a_subset_encodes_the_windows_the_whole_split_gives_it(tiny_tokenizer, context):
    docs = split_of(
        (["went", "to", "the"], ["O"] * 3, 0),
        (["john"], ["B-PER"], 0),
        (["met", "mary", "in"], ["O", "B-PER", "O"], 0),
        (["springville", "john", "riverton", "mary"], ["B-LOC", "B-PER", "B-LOC", "B-PER"], 1),  # split in two
        (["tom"], ["B-PER"], 1),
    )
    everything = encode_split(docs, tiny_tokenizer, LABELS, max_length=6, context=context)
    subset = encode_split(docs, tiny_tokenizer, LABELS, max_length=6, context=context, only={1, 3})
    assert subset == [window for window in everything if window.sentence_index in {1, 3}]
    assert [w.sentence_index for w in subset] == [1, 3, 3]  # the long sentence keeps both its windows
    if context == "document":  # the unchosen neighbours still fill the middle sentence's window
        assert pieces(tiny_tokenizer, subset[0]) == ["[CLS]", "to", "the", "john", "met", "[SEP]"]
    assert encode_split(docs, tiny_tokenizer, LABELS, max_length=6, context=context, only=set()) == []


def test_sentence_context_adds_nothing(tiny_tokenizer):
    docs = split_of((["the", "john"], ["O", "B-PER"], 0), (["met", "mary"], ["O", "B-PER"], 0))
    windows = encode_split(docs, tiny_tokenizer, LABELS, max_length=64, context="sentence")
    assert pieces(tiny_tokenizer, windows[1]) == ["[CLS]", "met", "mary", "[SEP]"]


def test_over_long_sentence_is_split_and_every_word_predicted_once(tiny_tokenizer):
    words = ["springville", "john", "riverton", "mary", "to", "paris", "tom"]  # 9 pieces
    tags = ["B-LOC", "B-PER", "B-LOC", "B-PER", "O", "B-LOC", "B-PER"]
    windows = encode_split(split_of((words, tags, 0)), tiny_tokenizer, LABELS, max_length=6)  # 4 pieces each
    covered = []
    for window in windows:
        assert len(window.input_ids) <= 6
        tokens = pieces(tiny_tokenizer, window)
        for offset, position in enumerate(window.word_positions):
            word = words[window.word_offset + offset]
            assert tokens[position] == tiny_tokenizer.tokenize(word)[0]
        covered.extend(range(window.word_offset, window.word_offset + len(window.labels)))
        assert window.labels == [LABELS[t] for t in tags[window.word_offset : window.word_offset + len(window.labels)]]
    assert covered == list(range(len(words)))
    # each window is filled: its targets first, then the rest of the sentence as context
    assert [pieces(tiny_tokenizer, window) for window in windows] == [
        ["[CLS]", "spring", "##ville", "john", "[SEP]"],  # "riverton" (2 pieces) does not fit as context
        ["[CLS]", "river", "##ton", "mary", "to", "[SEP]"],
        ["[CLS]", "mary", "to", "paris", "tom", "[SEP]"],  # targets paris and tom, "mary to" before them
    ]
    assert [window.word_positions for window in windows] == [[1, 3], [1, 3, 4], [3, 4]]


def test_a_single_word_longer_than_the_limit_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(DataFormatError, match=r"t\.txt:0: word 1 .* 3 sub-tokens, more than the model's limit of 2"):
        encode_split(split_of((["springvilles"], ["B-LOC"], 0)), tiny_tokenizer, LABELS, max_length=4)


def test_unknown_context_mode(tiny_tokenizer):
    with pytest.raises(ValueError, match="context mode 'paragraph'"):
        encode_split(split_of((["tom"], ["B-PER"], 0)), tiny_tokenizer, LABELS, 16, context="paragraph")


def test_a_tagging_task_with_a_training_subset_encodes_only_the_chosen_sentences(tiny_tokenizer, toy_data_dir):
    from bertprobe.tasks.base import select_training_examples
    from bertprobe.tasks.conll import load_conll_dir
    from bertprobe.tasks.tagging import TaggingTask

    corpus = load_conll_dir(toy_data_dir)
    whole = TaggingTask("conll2003", corpus, tiny_tokenizer, 64, "document", None, seed=3)
    subset = TaggingTask("conll2003", corpus, tiny_tokenizer, 64, "document", 25, seed=3)
    chosen = select_training_examples(len(corpus.splits["train"].sentences), 25, 3)
    assert {w.sentence_index for w in subset.windows["train"]} == chosen
    assert subset.windows["train"] == [w for w in whole.windows["train"] if w.sentence_index in chosen]
    assert subset.windows["validation"] == whole.windows["validation"]  # dev and test stay whole
