"""Entity-level scores with seqeval (conlleval semantics, IOB2), computed locally.

``evaluate.load("seqeval")`` fetches its script from the Hub at run time, so it fails
offline; calling the ``seqeval`` library directly gives the same numbers with no network.
"""

from __future__ import annotations

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, object]:
    """Overall micro precision/recall/F1, token accuracy, and per-type scores with support."""
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted, strict=True)):
        raise ValueError("gold and predicted tag sequences must have the same shapes")
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {
        name: {
            "precision": float(values["precision"]),
            "recall": float(values["recall"]),
            "f1": float(values["f1-score"]),
            "support": int(values["support"]),
        }
        for name, values in report.items()
        if not name.endswith(" avg")
    }
    tokens = sum(len(sentence) for sentence in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True))
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "accuracy": correct / tokens if tokens else 0.0,
        "per_type": per_type,
    }
