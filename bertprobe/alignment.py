"""From labelled words to model inputs: sub-word alignment and context windows.

Every labelled word becomes exactly one prediction, read at the position of its first
sub-token; later sub-tokens and context words carry no label.

A *window* is one model input. It holds a run of *target* words from one sentence (the
words it labels) and, around them, as much *context* as fits in the model's limit:

* ``context="sentence"``: context comes from the same sentence only. A sentence that
  fits is one window with no extra context.
* ``context="document"``: context comes from the whole document, growing one word at a
  time to the left and right in turn (the BERT paper's "maximal document context").

A sentence whose sub-words exceed the limit is split into consecutive windows whose
targets partition its words, so every word is still predicted; the rest of the sentence
then serves as context. Only a single word longer than the whole limit is an error.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bertprobe.errors import DataFormatError

if TYPE_CHECKING:  # the CoNLL reader's types, for annotations only: alignment reads no file
    from bertprobe.tasks.conll import TaggedSplit

CONTEXT_MODES = ("sentence", "document")


@dataclass
class EncodedWindow:
    """One model input and where its labelled words sit in it."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    word_positions: list[int]  # position of each target word's first sub-token
    labels: list[int]  # one label id per target word
    sentence_index: int
    word_offset: int  # index within the sentence of the first target word


@dataclass(frozen=True)
class _WindowPlan:
    sentence_index: int
    target_start: int  # flat (scope-level) word index of the first target word
    target_end: int
    context_start: int
    context_end: int
    word_offset: int


def sanitize_words(words: Sequence[str], piece_counts: Sequence[int], unk_token: str) -> list[str]:
    """Replace words that the tokenizer turns into nothing (e.g. lone control characters) by
    the unknown token, so that no labelled word loses its prediction."""
    return [word if count > 0 else unk_token for word, count in zip(words, piece_counts, strict=True)]


def special_token_count(tokenizer) -> int:
    """How many special tokens (``[CLS]``, ``</s>``, ...) the tokenizer adds to one sequence,
    measured on a one-word input so that it matches what :func:`encode_split` produces."""
    with_specials = tokenizer([["a"]], is_split_into_words=True)["input_ids"][0]
    without = tokenizer([["a"]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0]
    return len(with_specials) - len(without)


def count_pieces(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
    """Sub-token count of every word, tokenizing each sentence's words as pre-split words."""
    if not sentences:
        return []
    encoded = tokenizer([list(words) for words in sentences], is_split_into_words=True, add_special_tokens=False)
    counts: list[list[int]] = []
    for batch_index, words in enumerate(sentences):
        per_word = [0] * len(words)
        for word_id in encoded.word_ids(batch_index):
            if word_id is not None:
                per_word[word_id] += 1
        counts.append(per_word)
    return counts


def plan_windows(
    scopes: Sequence[Sequence[int]],
    sentence_spans: Sequence[tuple[int, int, int]],
    piece_counts: Sequence[int],
    budget: int,
    where: Sequence[str],
    targets: Collection[int] | None = None,
) -> list[_WindowPlan]:
    """Decide each window's target and context words.

    ``piece_counts`` are per word over a flat word list; ``sentence_spans[i]`` is
    ``(scope_id, start, end)`` of sentence ``i`` in that list; ``scopes[scope_id]`` is the
    flat ``(start, end)`` of the words that may serve as its context. With ``targets``,
    only those sentences get windows; every sentence may still serve as context.
    """
    plans: list[_WindowPlan] = []
    for sentence_index, (scope_id, start, end) in enumerate(sentence_spans):
        if targets is not None and sentence_index not in targets:
            continue
        scope_start, scope_end = scopes[scope_id]
        chunk_start = start
        while chunk_start < end:
            used = 0
            chunk_end = chunk_start
            while chunk_end < end and used + piece_counts[chunk_end] <= budget:
                used += piece_counts[chunk_end]
                chunk_end += 1
            if chunk_end == chunk_start:
                raise DataFormatError(
                    f"{where[sentence_index]}: word {chunk_start - start + 1} of this sentence has "
                    f"{piece_counts[chunk_start]} sub-tokens, more than the model's limit of "
                    f"{budget}; it cannot be labelled"
                )
            left, right = chunk_start, chunk_end
            grow_left = True
            while True:
                can_left = left > scope_start and used + piece_counts[left - 1] <= budget
                can_right = right < scope_end and used + piece_counts[right] <= budget
                if not (can_left or can_right):
                    break
                if can_left and (grow_left or not can_right):
                    left -= 1
                    used += piece_counts[left]
                else:
                    used += piece_counts[right]
                    right += 1
                grow_left = not grow_left
            plans.append(_WindowPlan(sentence_index, chunk_start, chunk_end, left, right, chunk_start - start))
            chunk_start = chunk_end
    return plans


def _lay_out_words(
    sentences: Sequence, words: list[list[str]], piece_counts: list[list[int]], context: str
) -> tuple[list[str], list[int], list[tuple[int, int]], list[tuple[int, int, int]]]:
    """The split's words end to end with their piece counts (at least 1 each), the scopes a
    window may draw context from (each sentence alone, or each document's span) and, per
    sentence, ``(scope, start, end)`` in the flat word list."""
    flat_words: list[str] = []
    flat_counts: list[int] = []
    sentence_spans: list[tuple[int, int, int]] = []
    scopes: list[tuple[int, int]] = []
    document_scope: dict[int, int] = {}
    for sentence, sentence_words, counts in zip(sentences, words, piece_counts, strict=True):
        start = len(flat_words)
        flat_words.extend(sentence_words)
        flat_counts.extend(max(count, 1) for count in counts)
        end = len(flat_words)
        if context == "document":
            if sentence.document not in document_scope:
                document_scope[sentence.document] = len(scopes)
                scopes.append((start, end))
            scope_id = document_scope[sentence.document]
            scopes[scope_id] = (scopes[scope_id][0], end)
        else:
            scope_id = len(scopes)
            scopes.append((start, end))
        sentence_spans.append((scope_id, start, end))
    return flat_words, flat_counts, scopes, sentence_spans


def first_subtoken_positions(word_ids: Sequence[int | None], first_target: int, n_targets: int) -> list[int]:
    """The position of each target word's first sub-token in a window whose tokenizer gave
    ``word_ids``; the targets are words ``first_target .. first_target + n_targets - 1`` of
    the window's text."""
    positions = [-1] * n_targets
    for position, word_id in enumerate(word_ids):
        if word_id is None:
            continue
        target = word_id - first_target
        if 0 <= target < n_targets and positions[target] < 0:
            positions[target] = position
    assert min(positions) >= 0, "every target word must have a first sub-token"
    return positions


def encode_split(
    split: TaggedSplit,
    tokenizer,
    label_to_id: dict[str, int],
    max_length: int,
    context: str = "sentence",
    only: Collection[int] | None = None,
) -> list[EncodedWindow]:
    """Encode a tagged split into windows (see the module docstring).

    ``only`` names the sentences (indices into ``split.sentences``) to encode, all when
    ``None``: a training subset encodes just its own windows, which are the very windows the
    whole split would give them, since the other sentences still serve as context.
    """
    if context not in CONTEXT_MODES:
        raise ValueError(f"unknown context mode {context!r}; choose one of {', '.join(CONTEXT_MODES)}")
    budget = max_length - special_token_count(tokenizer)
    sentences = split.sentences
    raw_counts = count_pieces(tokenizer, [s.words for s in sentences])
    words = [
        sanitize_words(s.words, counts, tokenizer.unk_token) for s, counts in zip(sentences, raw_counts, strict=True)
    ]
    changed = [i for i, counts in enumerate(raw_counts) if 0 in counts]
    for index, counts in zip(changed, count_pieces(tokenizer, [words[i] for i in changed]), strict=True):
        raw_counts[index] = counts  # a replacement word's own piece count

    flat_words, flat_counts, scopes, sentence_spans = _lay_out_words(sentences, words, raw_counts, context)

    plans = plan_windows(scopes, sentence_spans, flat_counts, budget, [s.source for s in sentences], only)
    encoded = tokenizer(
        [flat_words[p.context_start : p.context_end] for p in plans],
        is_split_into_words=True,
        truncation=False,
    )
    windows: list[EncodedWindow] = []
    for index, plan in enumerate(plans):
        sentence = sentences[plan.sentence_index]
        first_target = plan.target_start - plan.context_start
        n_targets = plan.target_end - plan.target_start
        positions = first_subtoken_positions(encoded.word_ids(index), first_target, n_targets)
        if len(encoded["input_ids"][index]) > max_length:
            raise RuntimeError(
                f"{sentence.source}: a window of {len(encoded['input_ids'][index])} sub-tokens exceeds the limit "
                f"of {max_length}; the tokenizer splits words differently in context than one by one"
            )
        tags = sentence.tags[plan.word_offset : plan.word_offset + n_targets]
        token_types = encoded["token_type_ids"][index] if "token_type_ids" in encoded else None
        windows.append(
            EncodedWindow(
                input_ids=encoded["input_ids"][index],
                token_type_ids=token_types,
                word_positions=positions,
                labels=[label_to_id[tag] for tag in tags],
                sentence_index=plan.sentence_index,
                word_offset=plan.word_offset,
            )
        )
    return windows
