"""Entity-level scores on hand-made tag sequences (conlleval semantics)."""

from __future__ import annotations

import pytest

from bertprobe.metrics import entity_scores


def test_perfect_prediction():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    scores = entity_scores(gold, gold)
    assert scores["f1"] == 1.0 and scores["precision"] == 1.0 and scores["recall"] == 1.0


def test_hand_counted_precision_recall_f1_and_per_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O", "B-LOC"]]
    # gold entities: PER(0-1), LOC(3), ORG(0), PER(2) = 4; predicted: PER(0), LOC(3), ORG(0), LOC(2) = 4
    # correct: LOC(3), ORG(0) = 2  ->  P = 2/4, R = 2/4, F1 = 0.5
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert scores["per_type"]["LOC"]["precision"] == pytest.approx(0.5)
    assert scores["per_type"]["LOC"]["recall"] == pytest.approx(1.0)
    assert scores["per_type"]["ORG"]["f1"] == pytest.approx(1.0)
    assert scores["accuracy"] == pytest.approx(5 / 7)


def test_precision_and_recall_are_not_swapped():
    # gold: PER(0), LOC(2), ORG(4) = 3 entities; predicted: PER(0) alone, correct
    # P = 1/1, R = 1/3, F1 = 2PR / (P + R) = (2/3) / (4/3) = 0.5
    scores = entity_scores([["B-PER", "O", "B-LOC", "O", "B-ORG"]], [["B-PER", "O", "O", "O", "O"]])
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.5)


def test_no_predicted_entity_scores_zero_not_one():
    # nothing predicted: precision is 0/0, which counts as 0 (an empty prediction is no success)
    scores = entity_scores([["B-PER", "O"]], [["O", "O"]])
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0 and scores["f1"] == 0.0
    assert scores["accuracy"] == pytest.approx(0.5)


def test_conlleval_reads_a_stray_i_tag_as_an_entity_start():
    # conlleval (and seqeval's default mode) treat I-LOC after O as beginning an entity
    scores = entity_scores([["O", "B-LOC"]], [["O", "I-LOC"]])
    assert scores["f1"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shapes"):
        entity_scores([["O", "O"]], [["O"]])
