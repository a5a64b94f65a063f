"""Scores for sentence(-pair) tasks, computed locally with scikit-learn and SciPy.

These are the functions that ``evaluate``'s GLUE modules wrap (accuracy and F1 from
scikit-learn, Matthews correlation from scikit-learn, Pearson and Spearman from SciPy);
calling them directly gives the same numbers without ``evaluate.load``, which fetches
its scripts from the Hub at run time.
"""

from __future__ import annotations

import math
import warnings

from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def _check_lengths(gold: list, predicted: list) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} items but predicted has {len(predicted)}")
    if not gold:
        raise ValueError("cannot score an empty set of predictions")


def classification_scores(gold: list[str], predicted: list[str], positive_label: str | None = None) -> dict[str, float]:
    """Accuracy, macro F1, Matthews correlation and, given ``positive_label``, its F1.

    Keys: ``accuracy``, ``macro_f1``, ``matthews`` and, when ``positive_label`` is given,
    ``f1`` (the F1 of that class alone, as GLUE reports for MRPC and QQP). Macro F1
    averages over the labels seen in gold or predicted. An undefined score (no positive
    predictions and no positive gold, a constant column for Matthews) counts as 0.
    """
    _check_lengths(gold, predicted)
    scores = {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "matthews": float(matthews_corrcoef(gold, predicted)),
    }
    if positive_label is not None:
        per_label = f1_score(gold, predicted, labels=[positive_label], average=None, zero_division=0)
        scores["f1"] = float(per_label[0])
    return scores


def regression_scores(gold: list[float], predicted: list[float]) -> dict[str, float]:
    """Pearson and Spearman correlation and mean squared error.

    A correlation with a constant side is undefined and reported as NaN.
    """
    _check_lengths(gold, predicted)
    mse = sum((float(g) - float(p)) ** 2 for g, p in zip(gold, predicted, strict=True)) / len(gold)
    if len(gold) < 2 or len(set(gold)) < 2 or len(set(predicted)) < 2:
        return {"pearson": math.nan, "spearman": math.nan, "mse": mse}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pearson = float(pearsonr(gold, predicted)[0])
        spearman = float(spearmanr(gold, predicted)[0])
    return {"pearson": pearson, "spearman": spearman, "mse": mse}
