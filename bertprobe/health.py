"""Is a finished run's result a trained model, or a sign that training failed?

A run can end with a normal record although it diverged (a learning rate far too large
drives the loss to 1e30) or learned nothing (every dev prediction the same class). Its
numbers then mean little, and a table that averages them with sound seeds misleads. The
record's ``health`` says so, and tables mark such rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: A mean epoch loss this many times the loss of a model that knows nothing (``ln C`` for C
#: classes) or, for regression, than its first epoch's, counts as diverged.
DIVERGENCE_FACTOR = 100.0


def loss_reasons(losses: Sequence[float], num_classes: int | None) -> list[str]:
    """Why the epochs' mean training losses say the run diverged (empty when they do not).

    Classification starts near ``ln C`` (uniform guesses) and should fall; a loss above
    :data:`DIVERGENCE_FACTOR` times that, or a non-finite one, diverged. Regression has no
    such reference, so the first epoch's loss is the reference there.
    """
    if not losses:
        return []
    if any(not math.isfinite(loss) for loss in losses):
        return ["the training loss became non-finite"]
    reference = math.log(num_classes) if num_classes and num_classes > 1 else losses[0]
    worst = max(range(len(losses)), key=lambda index: losses[index])
    if reference > 0 and losses[worst] > DIVERGENCE_FACTOR * reference:
        what = f"ln {num_classes} = {reference:.3g}, a model that knows nothing" if num_classes else "epoch 1's loss"
        return [f"the training loss reached {losses[worst]:.3g} in epoch {worst + 1}, over 100x {what}"]
    return []


def prediction_reasons(
    primary_metric: str, score: float, predicted: Sequence[object], tagging: bool, regression: bool
) -> list[str]:
    """Why the best epoch's dev predictions say the run learned nothing: no entity found
    (tagging), or one class for every example (classification)."""
    if tagging:
        return [f"dev {primary_metric} is 0: no entity was found"] if score == 0 else []
    if regression or len(predicted) < 2:
        return []
    classes = {str(label) for label in predicted}
    return [f"every dev prediction is {next(iter(classes))!r}"] if len(classes) == 1 else []


def assess(
    history: Sequence[dict[str, object]],
    primary_metric: str,
    dev_score: float,
    dev_predicted: Sequence[object],
    num_classes: int | None,
    tagging: bool,
) -> dict[str, object]:
    """The record's ``health``: ``{"flagged": bool, "reasons": [...]}``."""
    losses = [float(entry["train_loss"]) for entry in history if "train_loss" in entry]
    regression = num_classes is None
    reasons = loss_reasons(losses, num_classes) + prediction_reasons(
        primary_metric, dev_score, dev_predicted, tagging, regression
    )
    return {"flagged": bool(reasons), "reasons": reasons}
