"""Runs that diverged or learned nothing are flagged in the record and in tables."""

from __future__ import annotations

import json
import math

import pytest
from test_end_to_end import toy_config

from bertprobe.health import assess, loss_reasons, prediction_reasons
from bertprobe.table import render_markdown
from bertprobe.train import run


def test_a_loss_far_above_knowing_nothing_is_divergence():
    assert loss_reasons([2.0, 1.0, 0.5], num_classes=9) == []
    # ln 9 = 2.197: 100x that is 219.7
    assert loss_reasons([1.5, 219.0], 9) == []
    assert loss_reasons([1.5, 220.0, 3.0], 9) == [
        "the training loss reached 220 in epoch 2, over 100x ln 9 = 2.2, a model that knows nothing"
    ]
    assert loss_reasons([0.3, math.inf], 2) == ["the training loss became non-finite"]
    assert loss_reasons([4.0, 401.0], None) == ["the training loss reached 401 in epoch 2, over 100x epoch 1's loss"]
    assert loss_reasons([], 2) == []


def test_predictions_that_learned_nothing():
    assert prediction_reasons("accuracy", 0.52, ["pos", "pos", "pos"], tagging=False, regression=False) == [
        "every dev prediction is 'pos'"
    ]
    assert prediction_reasons("accuracy", 0.6, ["pos", "neg"], tagging=False, regression=False) == []
    assert prediction_reasons("f1", 0.0, [["O"]], tagging=True, regression=False) == [
        "dev f1 is 0: no entity was found"
    ]
    assert prediction_reasons("pearson", 0.1, [0.5, 0.5], tagging=False, regression=True) == []
    history = [{"epoch": 1, "train_loss": 0.7}, {"epoch": 2, "train_loss": 0.4, "dev_accuracy": 0.5}]
    assert assess(history, "accuracy", 0.5, ["a", "b"], 2, tagging=False) == {"flagged": False, "reasons": []}


@pytest.mark.slow
def test_a_diverged_run_is_flagged_in_its_record_and_its_table(tiny_model_dir, toy_data_dir, tmp_path):
    diverged = run(
        toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", head="linear", epochs=2,
                   lr=1e3)
    )  # fmt: skip
    assert diverged["health"]["flagged"]
    assert any("training loss" in reason for reason in diverged["health"]["reasons"])
    sound = run(
        toy_config(tiny_model_dir, toy_data_dir, tmp_path, mode="feature", layers="last", epochs=8, lr=1e-2, seed=4)
    )
    assert sound["health"] == {"flagged": False, "reasons": []}
    table = render_markdown([json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")])
    [flagged] = [line for line in table.splitlines() if "lr=1000.0" in line]
    [unflagged] = [line for line in table.splitlines() if "lr=0.01" in line]
    assert "lr=1000.0, lstm_hidden=none, lstm_layers=none) ‡ |" in flagged and "‡" not in unflagged
    assert "‡: some seeds' records flag their result" in table
