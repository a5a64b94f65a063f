"""The "tune or not" tables (tasks layout), the layers / cost / learning-curve plots and
``bertprobe probe-layers``: hand-made records, plus one tiny end-to-end layer probe."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from scipy.stats import ttest_ind

from bertprobe.errors import NoRecordsError
from bertprobe.formatting import RESUMED_MARK, RESUMED_NOTE
from bertprobe.plots import (
    PLOTS,
    colors_by_system,
    cost_points,
    layer_curves,
    learning_curves,
    single_layer,
    table7_sections,
    task_panels,
)
from bertprobe.rows import group_rows
from bertprobe.table import render_markdown
from bertprobe.tasks_table import (
    TASKS_CSV_COLUMNS,
    TASKS_GAP_NOTE,
    TASKS_SCORED_NOTE,
    TASKS_TEST_NOTE,
    group_tasks,
    render_tasks_csv,
    render_tasks_markdown,
)

MODEL = "bert-base-cased"
PRIMARY = {
    "sst2": "accuracy",
    "rte": "accuracy",
    "mrpc": "f1",
    "stsb": "pearson",
    "conll2003": "f1",
    "custom": "accuracy",
}


def record(
    task: str = "sst2",
    mode: str = "finetune",
    seed: int = 1,
    dev: dict[str, float] | None = None,
    source: str | None = None,
    test: dict[str, float] | None = None,
    model: str = MODEL,
    train_seconds: float = 100.0,
    trainable: int = 1_000_000,
    examples: int = 500,
    **config: object,
) -> dict[str, object]:
    """A result record as :func:`bertprobe.train.run` writes it, with the parts the summaries read."""
    settings: dict[str, object] = {
        "mode": mode,
        "layers": "last",
        "model": model,
        "task": task,
        "data_dir": None,
        "context": "sentence",
        "head": "linear",
        "epochs": 2,
        "lr": 5e-5 if mode != "feature" else 1e-3,
        "seed": seed,
        "output_dir": f"/results/{seed}",
        "cache_dir": ".cache",
        "tags": [],
        "checkpoint": True,
        "resume": False,
        "report_to": None,
        "compile": False,
    }
    settings.update(config)
    tagging = task == "conll2003"
    data: dict[str, object] = {"source": source or (f"/data/{task}" if tagging else f"hub:glue/{task}")}
    if tagging:
        data["windows"] = {"train": examples, "validation": 10}
    else:
        data["examples_trained"] = examples
    return {
        "schema": 1,
        "config": settings,
        "encoder": {"num_layers": 4},
        "task": {"name": task, "primary_metric": PRIMARY[task]},
        "data": data,
        "metrics": {"dev": dev or {"accuracy": 0.8, "f1": 0.7, "mcc": 0.5}, "test": test},
        "parameters": {"trainable": trainable, "total": 2_000_000},
        "time": {"train_seconds": train_seconds},
        "memory": {"process_max_rss_bytes": 2**30},
    }


def scores(**values: float) -> dict[str, float]:
    return {"accuracy": 0.5, "f1": 0.5, "mcc": 0.1, **values}


def body_rows(markdown: str) -> dict[str, list[str]]:
    """The first table's rows of each section by label (cells after the label)."""
    rows: dict[str, list[str]] = {}
    for block in markdown.split("\n## "):
        table = block.split("\n\n")[1]
        for line in table.splitlines()[2:]:
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def header(markdown: str) -> list[str]:
    return [cell.strip() for cell in markdown.split("\n\n")[1].splitlines()[0].strip("|").split(" | ")]


def tune_or_not_records() -> list[dict[str, object]]:
    """Fine-tuning on three GLUE tasks (RTE: 3 seeds), partial and LoRA on RTE, a feature
    probe on MRPC, one CoNLL run."""
    return [
        *(
            record("rte", seed=seed, dev=scores(accuracy=value, f1=0.1))
            for seed, value in ((1, 0.60), (2, 0.64), (3, 0.68))
        ),
        record("mrpc", seed=1, dev=scores(accuracy=0.1, f1=0.80)),
        record("mrpc", seed=2, dev=scores(accuracy=0.1, f1=0.90)),
        record("sst2", seed=1, dev=scores(accuracy=0.91)),
        record("rte", mode="partial", freeze_layers=4, seed=1, dev=scores(accuracy=0.58), trainable=400_000),
        record("rte", mode="partial", freeze_layers=4, seed=2, dev=scores(accuracy=0.62), trainable=400_000),
        record("rte", mode="lora", lora_rank=8, seed=1, dev=scores(accuracy=0.55), trainable=20_000),
        record("mrpc", mode="feature", layers="last", seed=1, dev=scores(f1=0.75), trainable=2_000),
        record("conll2003", seed=1, dev=scores(f1=0.9), examples=300, train_seconds=30.0, epochs=3),
    ]


def test_tasks_layout_means_primary_metrics_and_system_names():
    text = render_tasks_markdown(tune_or_not_records())
    assert text.count("\n## ") == 0 and text.startswith(f"## Model `{MODEL}` · 11 records")
    assert header(text) == ["System", "SST-2 acc", "MRPC F1", "RTE acc", "CoNLL-2003 F1"]
    rows = body_rows(text)
    assert list(rows) == ["Fine-tuning", "Partial (freeze 4 lowest)", "LoRA (r=8)", "Last hidden"]
    # RTE: accuracy 60, 64, 68 -> mean 64, sample std 4; MRPC: F1 80, 90 -> 85 ± 7.07 (never accuracy)
    assert rows["Fine-tuning"] == ["91.00 ± n/a (n=1)", "85.00 ± 7.07 (n=2)", "64.00 ± 4.00 (n=3)", "90.00 ± n/a (n=1)"]
    assert rows["Partial (freeze 4 lowest)"] == ["—", "—", "60.00 ± 2.83 (n=2)", "—"]
    assert rows["LoRA (r=8)"] == ["—", "—", "55.00 ± n/a (n=1)", "—"]
    assert rows["Last hidden"] == ["—", "75.00 ± n/a (n=1)", "—", "—"]
    cost = [line for line in text.splitlines() if line.startswith("| Fine-tuning | CoNLL-2003 F1 |")]
    # 300 windows x 3 epochs / 30 s = 30 examples/s; 1 GiB RSS = 1,024 MiB
    assert cost == ["| Fine-tuning | CoNLL-2003 F1 | 1,000,000 | 30.0 | 30.0 | 1,024 RSS |"]


def test_tasks_csv_has_one_line_per_system_and_task():
    lines = list(csv.DictReader(io.StringIO(render_tasks_csv(tune_or_not_records()))))
    assert list(lines[0]) == list(TASKS_CSV_COLUMNS)
    by_key = {(line["strategy"], line["task"]): line for line in lines}
    assert len(lines) == len(by_key) == 7
    rte = by_key[("finetune", "rte")]
    assert rte["metric"] == "accuracy" and rte["column"] == "RTE acc" and rte["seeds"] == "3"
    assert float(rte["dev_mean"]) == pytest.approx(64.0) and float(rte["dev_std"]) == pytest.approx(4.0)
    per_seed = dict(zip(rte["seed_values"].split(";"), rte["dev_per_seed"].split(";"), strict=True))
    assert {seed: float(value) for seed, value in per_seed.items()} == pytest.approx({"1": 60.0, "2": 64.0, "3": 68.0})
    assert float(rte["train_examples_per_second"]) == pytest.approx(500 * 2 / 100.0)
    mrpc = by_key[("finetune", "mrpc")]
    assert mrpc["metric"] == "f1" and float(mrpc["dev_mean"]) == pytest.approx(85.0)
    assert by_key[("partial:4", "rte")]["system"] == "Partial (freeze 4 lowest)"
    assert by_key[("partial:4", "rte")]["trainable_parameters"] == "400000"
    assert by_key[("lora", "rte")]["system"] == "LoRA (r=8)"
    assert by_key[("finetune", "sst2")]["dev_std"] == ""


def custom_and_glue_records() -> list[dict[str, object]]:
    """RTE (GLUE: no test labels, so no test score) and a custom task with a test file:
    fine-tuning on two seeds, a frozen probe on two (one of them without a test score)."""
    custom = {"source": "/data/reviews", "train_file": "/data/reviews/train.tsv"}
    return [
        record("rte", seed=1, dev=scores(accuracy=0.60)),
        record("custom", seed=1, dev=scores(accuracy=0.80), test=scores(accuracy=0.70), **custom),
        record("custom", seed=2, dev=scores(accuracy=0.84), test=scores(accuracy=0.74), **custom),
        record("custom", mode="feature", seed=1, dev=scores(accuracy=0.75), test=scores(accuracy=0.66), **custom),
        record("custom", mode="feature", seed=2, dev=scores(accuracy=0.77), **custom),
    ]


def test_tasks_layout_shows_test_beside_dev_where_records_have_it():
    text = render_tasks_markdown(custom_and_glue_records())
    assert header(text) == ["System", "RTE acc", "Custom acc dev", "Custom acc test"]
    rows = body_rows(text)
    assert rows["Fine-tuning"] == ["60.00 ± n/a (n=1)", "82.00 ± 2.83 (n=2)", "72.00 ± 2.83 (n=2)"]
    assert rows["Last hidden"] == ["—", "76.00 ± 1.41 (n=2)", "66.00 ± n/a (n=1 of 2)"]
    assert TASKS_TEST_NOTE in text and TASKS_SCORED_NOTE in text
    gaps = text.split(TASKS_GAP_NOTE)[1]
    assert "| System | RTE acc | Custom acc dev | Custom acc test |" in gaps
    assert "| Last hidden | — | -6.00 ± 2.24 (p 0.158) | -6.00 ± n/a |" in gaps  # one test seed: no error, no p
    cost = [line for line in text.splitlines() if line.startswith("| Fine-tuning | Custom acc |")]
    assert len(cost) == 1  # the cost table keeps a line per task, not per split
    glue_only = render_tasks_markdown(custom_and_glue_records()[:1])
    assert header(glue_only) == ["System", "RTE acc"] and TASKS_TEST_NOTE not in glue_only


def test_tasks_csv_has_test_scores_where_records_have_them():
    lines = list(csv.DictReader(io.StringIO(render_tasks_csv(custom_and_glue_records()))))
    by_key = {(line["strategy"], line["task"]): line for line in lines}
    tuned, probe, rte = by_key[("finetune", "custom")], by_key[("last", "custom")], by_key[("finetune", "rte")]
    assert float(tuned["test_mean"]) == pytest.approx(72.0) and float(tuned["test_std"]) == pytest.approx(2.828, 1e-3)
    assert [float(value) for value in tuned["test_per_seed"].split(";")] == pytest.approx([70.0, 74.0])
    assert probe["test_per_seed"].split(";")[1] == "" and float(probe["test_mean"]) == pytest.approx(66.0)
    assert float(probe["dev_delta_vs_finetuning"]) == pytest.approx(-6.0)
    assert probe["test_delta_vs_finetuning_se"] == ""  # one test seed beside the probe: no standard error
    assert rte["test_mean"] == rte["test_std"] == rte["test_per_seed"] == rte["test_delta_vs_finetuning"] == ""


def test_two_data_sources_of_one_task_are_two_columns():
    records = [
        record("sst2", seed=1, dev=scores(accuracy=0.90)),
        record("sst2", seed=2, dev=scores(accuracy=0.92)),
        record("sst2", seed=1, dev=scores(accuracy=0.50), source="/my/sst2", data_dir="/my/sst2"),
        record("rte", seed=1, dev=scores(accuracy=0.70)),
    ]
    text = render_tasks_markdown(records)
    assert header(text) == ["System", "SST-2 acc [hub:glue/sst2]", "SST-2 acc [sst2]", "RTE acc"]
    assert body_rows(text)["Fine-tuning"] == ["91.00 ± 1.41 (n=2)", "50.00 ± n/a (n=1)", "70.00 ± n/a (n=1)"]
    [section] = group_tasks(records)
    [row] = section.rows  # data_dir picks the column, never the row
    assert sorted(len(cell.records) for cell in row.cells.values()) == [1, 1, 2]


def test_bookkeeping_options_never_split_rows_but_settings_do():
    records = [
        record("rte", seed=1, resume=True, checkpoint=False, compile=True, report_to="tensorboard"),
        record("rte", seed=2, resume=False),
        record("rte", seed=3, lr=2e-5),
        record("sst2", seed=1, lr=2e-5),
    ]
    rows = body_rows(render_tasks_markdown(records))
    assert list(rows) == ["Fine-tuning (lr=2e-5)", "Fine-tuning (lr=5e-5)"]
    assert rows["Fine-tuning (lr=5e-5)"] == ["—", "80.00 ± 0.00 (n=2)"]
    [sections] = group_rows(records[:2]).values()
    assert len(sections) == 1 and len(sections[0].records) == 2  # the Table 7 layout too


def test_learning_curve_points_are_labelled_rows_and_task_settings_noted():
    records = [
        record("rte", seed=1, train_fraction=0.1),
        record("rte", seed=1),
        record("sst2", seed=1, epochs=5),
    ]
    text = render_tasks_markdown(records)
    assert list(body_rows(text)) == ["Fine-tuning (train_fraction=0.1)", "Fine-tuning (train_fraction=none)"]
    assert "- Fine-tuning (train_fraction=none): SST-2 acc: epochs=5; RTE acc: epochs=2" in text
    same = render_tasks_markdown([record("rte", seed=1, max_train_examples=80), record("sst2", max_train_examples=80)])
    assert list(body_rows(same)) == ["Fine-tuning"] and "Every run: max_train_examples=80." in same


def test_partial_and_lora_rows_in_the_table7_layout():
    records = [
        record("conll2003", mode="partial", freeze_layers=2, dev=scores(f1=0.8)),
        record("conll2003", mode="partial", freeze_layers=10, dev=scores(f1=0.7)),
        record("conll2003", mode="lora", lora_rank=4, dev=scores(f1=0.6)),
        record("conll2003", mode="lora", lora_rank=16, dev=scores(f1=0.65)),
        record("conll2003", dev=scores(f1=0.9)),
    ]
    [rows] = group_rows(records).values()
    assert [row.label for row in rows] == [
        "Fine-tuning",
        "Partial (freeze 2 lowest)",
        "Partial (freeze 10 lowest)",
        "LoRA (r=4)",
        "LoRA (r=16)",
    ]
    assert [row.paper_dev_f1 for row in rows] == [96.4, None, None, None, None]
    assert "| Partial (freeze 2 lowest) | 80.00 ± n/a |" in render_markdown(records)


def test_old_records_without_later_options_share_rows_with_new_ones():
    old = record("conll2003", seed=1)
    new = record("conll2003", seed=2, optimizer="adamw", lora_rank=8, gradient_accumulation_steps=1, pooling="first")
    new["config"].update({"freeze_layers": None, "train_fraction": None, "momentum": 0.9})
    [[row]] = group_rows([old, new]).values()
    assert len(row.records) == 2


# ----------------------------------------------------------------------------- plots


def probe_records() -> list[dict[str, object]]:
    """Single-layer probes of layers 0..4 (two seeds each), one concat run, fine-tuning."""
    records = []
    for layer in range(5):
        for seed, shift in ((1, 0.0), (2, 0.02)):
            run = record(
                "conll2003", mode="feature", layers=str(layer), seed=seed, dev=scores(f1=0.5 + layer / 10 + shift)
            )
            run["layers"] = {"strategy": str(layer), "indices": [layer], "combine": "concat"}
            records.append(run)
    concat = record("conll2003", mode="feature", layers="last4concat", dev=scores(f1=0.99))
    concat["layers"] = {"strategy": "last4concat", "indices": [4, 3, 2, 1], "combine": "concat"}
    records.append(concat)
    records += [record("conll2003", seed=seed, dev=scores(f1=value)) for seed, value in ((1, 0.94), (2, 0.96))]
    return records


def test_layer_curve_points_are_the_means_per_layer():
    curves, references = layer_curves(probe_records())
    [curve] = curves
    assert [point.x for point in curve.points] == [0, 1, 2, 3, 4]
    assert [point.mean for point in curve.points] == pytest.approx([51.0, 61.0, 71.0, 81.0, 91.0])
    assert [point.std for point in curve.points] == pytest.approx([2**0.5] * 5)
    assert [point.n for point in curve.points] == [2] * 5
    [reference] = references
    assert reference.mean == pytest.approx(95.0) and "Fine-tuning" in reference.label
    named = record("conll2003", mode="feature", layers="second_last")
    assert single_layer(named) == 3  # no resolved layers in the record: -2 of 4 layers
    assert single_layer(record("conll2003", mode="feature", layers="-1,-2:mean")) is None
    assert single_layer(record("conll2003")) is None


def fraction_records() -> list[dict[str, object]]:
    """Fine-tuning on RTE at fractions 0.1 (two seeds), 0.5 and 1.0 (once unset, once 1.0);
    LoRA at 0.1; one run limited by --max-train-examples."""
    records = [
        record("rte", seed=seed, train_fraction=fraction, dev=scores(accuracy=value))
        for seed, fraction, value in ((1, 0.1, 0.5), (2, 0.1, 0.6), (1, 0.5, 0.7), (1, None, 0.8), (2, 1.0, 0.9))
    ]
    records.append(record("rte", mode="lora", train_fraction=0.1, dev=scores(accuracy=0.4)))
    records.append(record("rte", max_train_examples=10))
    return records


def test_a_curve_may_give_each_size_its_own_epochs():
    runs = [
        record("rte", seed=seed, train_fraction=fraction, epochs=epochs, eval_every=every, dev=scores(accuracy=value))
        for seed, fraction, epochs, every, value in ((1, 0.01, 10, 5, 0.5), (2, 0.01, 10, 5, 0.6), (1, 0.1, 4, 2, 0.7),
                                                     (1, None, 3, 1, 0.9))
    ]  # fmt: skip
    runs.append(record("rte", train_fraction=0.1, lr=1e-4, dev=scores(accuracy=0.2)))  # another setting
    curves = {curve.label: curve for curve in learning_curves(runs)}
    assert sorted(curves) == ["Fine-tuning (lr=1e-4)", "Fine-tuning (lr=5e-5)"]
    points = curves["Fine-tuning (lr=5e-5)"].points
    assert [(p.x, p.n) for p in points] == [(0.01, 2), (0.1, 1), (1.0, 1)]
    assert [p.mean for p in points] == pytest.approx([55.0, 70.0, 90.0])


def test_cost_plot_gives_every_configuration_of_a_system_its_colour():
    colors = colors_by_system(["finetune", "lora", "finetune", "feature:last", "lora"])
    assert colors[0] == colors[2] and colors[1] == colors[4]
    assert len({colors[0], colors[1], colors[3]}) == 3
    systems = [point.system for point in cost_points(fraction_records())]
    curves = learning_curves(fraction_records())
    # the systems' colours in the cost plot are those of their learning curves (same order)
    assert list(dict.fromkeys(systems)) == ["finetune", "lora"] and len(curves) == 2


def test_cost_points_and_learning_curves():
    points = {point.label: point for point in cost_points(tune_or_not_records())}
    rte_partial = points["Partial (freeze 4 lowest)"]
    assert rte_partial.score == pytest.approx(60.0) and rte_partial.seconds == pytest.approx(100.0)
    assert rte_partial.parameters == 400_000 and rte_partial.n == 2
    curves = {curve.label: curve for curve in learning_curves(fraction_records())}
    assert list(curves) == ["Fine-tuning", "LoRA (r=8)"]
    fine = curves["Fine-tuning"].points
    assert [point.x for point in fine] == [0.1, 0.5, 1.0]
    assert [point.mean for point in fine] == pytest.approx([55.0, 70.0, 85.0])  # None counts as 1.0
    assert [point.n for point in fine] == [2, 1, 2]


@pytest.mark.parametrize("kind", ["table7", "tasks", "layers", "cost", "curve"])
def test_every_plot_kind_writes_a_png(tmp_path: Path, kind: str):
    records = probe_records() + tune_or_not_records() + fraction_records()
    path = PLOTS[kind](records, tmp_path / "plots" / f"{kind}.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert [p.name for p in (tmp_path / "plots").iterdir()] == [f"{kind}.png"]  # no temporary left


def test_plots_without_usable_records_raise(tmp_path: Path):
    with pytest.raises(NoRecordsError, match="single-layer"):
        PLOTS["layers"](tune_or_not_records()[:-2], tmp_path / "x.png")  # no single-layer feature run
    with pytest.raises(NoRecordsError, match="learning-curve"):
        PLOTS["curve"](tune_or_not_records(), tmp_path / "x.png")  # no run on a fraction
    with pytest.raises(NoRecordsError):
        PLOTS["curve"]([record(max_train_examples=5)], tmp_path / "x.png")
    with pytest.raises(NoRecordsError):
        render_tasks_markdown([])
    assert not (tmp_path / "x.png").exists()


def unscored(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """``records`` with every dev and test score NaN (a correlation over constant predictions)."""
    return [
        {**run, "metrics": {"dev": {key: math.nan for key in run["metrics"]["dev"]}, "test": None}} for run in records
    ]


def test_no_plot_kind_draws_an_empty_panel(tmp_path: Path):
    """GLUE and custom records are drawn by the tasks figure; every kind with nothing to draw
    stops with NoRecordsError saying what it needs, and a panel with nothing is left out."""
    glue = custom_and_glue_records() + tune_or_not_records()[:-1]  # no tagging task
    assert PLOTS["tasks"](glue, tmp_path / "tasks.png").read_bytes()[:4] == b"\x89PNG"
    assert PLOTS["cost"](glue, tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"
    needs = {"table7": "--kind tasks", "curve": "learning-curve"}
    for kind, message in needs.items():
        with pytest.raises(NoRecordsError, match=message):
            PLOTS[kind](glue, tmp_path / f"{kind}.png")
    # a panel per tagging section with a dev F1: GLUE's (whose F1 is no entity F1) and unscored ones are left out
    mixed = tune_or_not_records() + unscored([record("conll2003", source="/data/other", dev=scores(f1=0.9))])
    assert [section.task for section in table7_sections(mixed)] == ["conll2003"]
    [(_, columns)] = task_panels(mixed + unscored([record("stsb", dev={"pearson": 0.5})]))
    assert [heading for *_, heading in columns] == [
        "SST-2 acc",
        "MRPC F1",
        "RTE acc",
        "CoNLL-2003 F1 [conll2003]",
    ]
    for kind in PLOTS:  # nothing but NaN: no kind draws
        with pytest.raises(NoRecordsError):
            PLOTS[kind](unscored(probe_records() + tune_or_not_records() + fraction_records()), tmp_path / "x.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cost.png", "tasks.png"]


def test_cli_plot_of_glue_records_draws_the_tasks_figure_or_says_what_a_kind_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from bertprobe.cli import main

    committed = str(Path(__file__).resolve().parent.parent / "results" / "tune_or_not_minilm")
    png = tmp_path / "x.png"
    assert main(["plot", committed, "--output", str(png)]) == 0  # no --kind: GLUE records get the tasks figure
    assert "tasks plot of 27 records" in capsys.readouterr().out and png.read_bytes()[:4] == b"\x89PNG"
    for kind in ("table7", "layers", "curve"):
        assert main(["plot", committed, "--kind", kind, "--output", str(tmp_path / f"{kind}.png")]) == 2
        error = capsys.readouterr().err
        assert error.startswith("bertprobe: error: ") and error.count("\n") == 1, error
        assert not (tmp_path / f"{kind}.png").exists()
    assert "--kind tasks" in main_error(main, ["plot", committed, "--kind", "table7", "--output", str(png)], capsys)


def main_error(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What ``main(argv)`` prints on standard error, after checking it exits with status 2."""
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_tasks_layout_and_plot_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bertprobe.cli import main

    folder = tmp_path / "runs"
    folder.mkdir()
    for index, run in enumerate(tune_or_not_records() + probe_records() + fraction_records()):
        (folder / f"run{index}.json").write_text(json.dumps(run), encoding="utf-8")
    assert main(["table", str(folder), "--layout", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "| System | SST-2 acc | MRPC F1 | RTE acc | CoNLL-2003 F1 |" in out
    target = tmp_path / "tasks.csv"
    assert main(["table", str(folder), "--layout", "tasks", "--format", "csv", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8").startswith(",".join(TASKS_CSV_COLUMNS))
    for kind in ("table7", "tasks", "layers", "cost", "curve"):
        png = tmp_path / f"{kind}.png"
        assert main(["plot", str(folder), "--kind", kind, "--output", str(png)]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"
    only_glue = tmp_path / "glue"
    only_glue.mkdir()
    (only_glue / "a.json").write_text(json.dumps(record("rte")), encoding="utf-8")
    assert main(["table", str(only_glue)]) == 0  # no --layout: the records score inputs, so tasks
    assert "| System | RTE acc |" in capsys.readouterr().out
    assert main(["plot", str(only_glue), "--kind", "layers", "--output", str(tmp_path / "none.png")]) == 2
    assert "single-layer" in capsys.readouterr().err


# ----------------------------------------------------------------------------- probe-layers


def test_layer_probe_experiment_rows():
    from bertprobe.layer_spec import resolve_strategy
    from bertprobe.sweep import expand, layer_probe_experiment

    experiment = layer_probe_experiment("m", 4, {"task": "conll2003", "epochs": 1}, [1, 2], True, {"head": "linear"})
    assert [run.get("layers") for run in experiment["runs"]] == ["0", "1", "2", "3", "4", None]
    assert [resolve_strategy(str(layer), 4).indices for layer in range(5)] == [(0,), (1,), (2,), (3,), (4,)]
    configs = list(expand(experiment, {}))
    assert len(configs) == 12 and {c.model for c in configs} == {"m"}
    features = [c for c in configs if c.mode == "feature"]
    assert {c.cache_layers for c in features} == {"0;1;2;3;4"} and {c.head for c in features} == {"linear"}


@pytest.mark.slow
def test_probe_layers_end_to_end(tiny_model_dir: Path, toy_data_dir: Path, tmp_path: Path):
    from bertprobe.cli import main

    output, cache = tmp_path / "layers", tmp_path / "cache"
    argv = ["probe-layers", "--model", str(tiny_model_dir), "--data-dir", str(toy_data_dir), "--output-dir",
            str(output), "--cache-dir", str(cache), "--epochs", "1", "--max-train-examples", "40"]  # fmt: skip
    assert main([*argv, "--dry-run"]) == 0
    assert not output.exists()
    assert main(argv) == 0
    records = sorted(
        (json.loads(path.read_text(encoding="utf-8")) for path in output.glob("*.json")),
        key=lambda run: run["layers"]["indices"],
    )
    assert [run["layers"]["indices"] for run in records] == [[0], [1], [2], [3], [4]]
    assert all(run["config"]["head"] == "linear" and run["config"]["mode"] == "feature" for run in records)
    built = [run["feature_cache"]["built"] for run in records]
    assert sum(bool(splits) for splits in built) == 1  # only the first run built the cache
    assert sorted(split for splits in built for split in splits) == ["test", "train", "validation"]
    assert len(list(cache.rglob("layers-0-1-2-3-4"))) == 3  # one folder per split, all five layers
    assert len([path for path in cache.rglob("layers-*") if path.is_dir()]) == 3
    png = output / "layers.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_and_table_read_several_folders_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A layer probe swept on its own and the fine-tuning run it is compared with, kept in
    two folders, meet in one figure and one table."""
    from bertprobe.cli import main
    from bertprobe.plots import layer_curves

    probes, finetuned = probe_records()[:-2], probe_records()[-2:]
    for name, runs in (("probe", probes), ("finetune", finetuned)):
        (tmp_path / name).mkdir()
        for index, run in enumerate(runs):
            (tmp_path / name / f"run{index}.json").write_text(json.dumps(run), encoding="utf-8")
    assert layer_curves(probes)[1] == []  # the probe folder alone has no fine-tuning line
    assert main(["plot", str(tmp_path / "probe"), str(tmp_path / "finetune"), "--kind", "layers",
                 "--output", str(tmp_path / "layers.png")]) == 0  # fmt: skip
    assert "layers plot of 13 records" in capsys.readouterr().out
    assert [r.mean for r in layer_curves(probes + finetuned)[1]] == pytest.approx([95.0])
    assert main(["table", str(tmp_path / "probe"), str(tmp_path / "finetune")]) == 0
    assert "| Fine-tuning | 95.00 ± 1.41 |" in capsys.readouterr().out
    assert main(["table", str(tmp_path / "probe"), str(tmp_path / "missing")]) == 2


def test_tasks_cost_table_marks_train_times_of_resumed_seeds():
    resumed = {**record("rte", seed=2, train_seconds=300.0), "resumed_from": "/ck/epoch-1"}
    text = render_tasks_markdown([record("rte", seed=1), resumed, record("sst2")])
    cost = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| Fine-tuning |")}
    assert cost["RTE acc"].split(" | ")[3] == f"200.0 {RESUMED_MARK}"
    assert cost["SST-2 acc"].split(" | ")[3] == "100.0"
    assert RESUMED_NOTE in text and RESUMED_NOTE not in render_tasks_markdown([record("rte")])
    [line] = [row for row in csv.DictReader(io.StringIO(render_tasks_csv([record("rte", seed=1), resumed])))]
    assert line["resumed_seeds"] == "1"


def test_tasks_layout_sets_each_system_against_fine_tuning_on_each_task():
    records = tune_or_not_records()
    text = render_tasks_markdown(records)
    table = text.split(TASKS_GAP_NOTE)[1].split("\n\n")[1].splitlines()
    assert table[0] == "| System | SST-2 acc | MRPC F1 | RTE acc | CoNLL-2003 F1 |"
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in table[2:])}
    # RTE accuracy: partial 58, 62 (s 2.83) against fine-tuning 60, 64, 68 (s 4): -4 ± sqrt(8/2 + 16/3)
    # and Welch's p (computed here by scipy's own test); no p where a side has one seed
    p = ttest_ind([58, 62], [60, 64, 68], equal_var=False).pvalue
    assert rows["Partial (freeze 4 lowest)"] == ["—", "—", f"-4.00 ± {math.sqrt(4 + 16 / 3):.2f} (p {p:.3f})", "—"]
    assert rows["LoRA (r=8)"] == ["—", "—", "-9.00 ± n/a", "—"]
    # MRPC is scored by F1 (75 against 80 and 90), never by accuracy (50 against 10)
    assert rows["Last hidden"] == ["—", "-10.00 ± n/a", "—", "—"]
    assert "Fine-tuning" not in rows
    by_key = {(line["strategy"], line["task"]): line for line in csv.DictReader(io.StringIO(render_tasks_csv(records)))}
    partial = by_key[("partial:4", "rte")]
    assert partial["finetuning_reference"] == "Fine-tuning"
    assert float(partial["dev_delta_vs_finetuning"]) == pytest.approx(-4.0)
    assert float(partial["dev_delta_vs_finetuning_se"]) == pytest.approx(math.sqrt(4 + 16 / 3))
    assert float(partial["dev_delta_vs_finetuning_p"]) == pytest.approx(p)
    assert by_key[("lora", "rte")]["dev_delta_vs_finetuning_p"] == ""  # one LoRA seed
    assert by_key[("finetune", "rte")]["dev_delta_vs_finetuning"] == ""
    assert TASKS_GAP_NOTE not in render_tasks_markdown([record("rte", mode="feature"), record("sst2", mode="lora")])


# ----------------------------------------------------------------------------- NaN and missing scores


def nan_records() -> list[dict[str, object]]:
    """STS-B: fine-tuning with a NaN Pearson (constant predictions) in two of three seeds,
    LoRA with NaN in both of its seeds, a feature probe with three finite ones. RTE:
    fine-tuning with one record whose metrics are empty, a probe, one LoRA seed."""
    nan = math.nan
    records = [
        *(
            record("stsb", seed=seed, dev={"pearson": value, "spearman": value, "mse": 1.0})
            for seed, value in ((1, nan), (2, nan), (3, 0.71))
        ),
        *(record("stsb", mode="lora", seed=seed, dev={"pearson": nan}) for seed in (1, 2)),
        *(
            record("stsb", mode="feature", seed=seed, dev={"pearson": value})
            for seed, value in ((1, 0.60), (2, 0.64), (3, 0.62))
        ),
        record("rte", seed=1, dev=scores(accuracy=0.60)),
        record("rte", seed=2, dev=scores(accuracy=0.64)),
        {**record("rte", seed=3), "metrics": {}},
        *(
            record("rte", mode="feature", seed=seed, dev=scores(accuracy=value))
            for seed, value in ((1, 0.55), (2, 0.57))
        ),
        record("rte", mode="lora", seed=1, dev=scores(accuracy=0.50)),
    ]
    return records


def test_nan_and_missing_scores_in_the_tasks_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bertprobe.cli import main

    folder = tmp_path / "runs"
    folder.mkdir()
    for index, run in enumerate(nan_records()):
        (folder / f"run{index}.json").write_text(json.dumps(run), encoding="utf-8")  # NaN as JSON's NaN
    assert main(["table", str(folder), "--layout", "tasks"]) == 0
    text = capsys.readouterr().out
    assert header(text) == ["System", "RTE acc", "STS-B Pearson r"]
    # the mean and std are over the finite seeds, and the cell says how many of its seeds they are
    assert body_rows(text) == {
        "Fine-tuning": ["62.00 ± 2.83 (n=2 of 3)", "71.00 ± n/a (n=1 of 3)"],
        "LoRA (r=8)": ["50.00 ± n/a (n=1)", "— (n=0 of 2)"],
        "Last hidden": ["56.00 ± 1.41 (n=2)", "62.00 ± 2.00 (n=3)"],
    }
    assert f"\n\n{TASKS_SCORED_NOTE}\n\n" in text
    assert TASKS_SCORED_NOTE not in render_tasks_markdown(tune_or_not_records())
    # Welch needs two finite seeds a side: STS-B fine-tuning has one, LoRA's STS-B none at all
    table = text.split(TASKS_GAP_NOTE)[1].split("\n\n")[1].splitlines()
    gaps = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in table[2:])}
    p = ttest_ind([55, 57], [60, 64], equal_var=False).pvalue
    assert gaps == {
        "LoRA (r=8)": ["-12.00 ± n/a", "n/a"],
        "Last hidden": [f"-6.00 ± {math.sqrt(2 / 2 + 8 / 2):.2f} (p {p:.3f})", "-9.00 ± n/a"],
    }
    target = tmp_path / "tasks.csv"
    assert main(["table", str(folder), "--layout", "tasks", "--format", "csv", "--output", str(target)]) == 0
    lines = {(line["strategy"], line["task"]): line for line in csv.DictReader(io.StringIO(target.read_text()))}

    def per_seed(line: dict[str, str]) -> dict[str, str]:
        return dict(zip(line["seed_values"].split(";"), line["dev_per_seed"].split(";"), strict=True))

    stsb = lines[("finetune", "stsb")]
    assert (stsb["seeds"], per_seed(stsb), stsb["dev_std"]) == ("3", {"1": "nan", "2": "nan", "3": "71.0"}, "")
    assert float(stsb["dev_mean"]) == pytest.approx(71.0)
    assert per_seed(lines[("finetune", "rte")]) == {"1": "60.0", "2": "64.0", "3": ""}
    assert lines[("lora", "stsb")]["dev_mean"] == ""


def test_nan_scores_are_skipped_by_every_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bertprobe.cli import main

    folder = tmp_path / "runs"
    folder.mkdir()
    for index, run in enumerate(nan_records()):
        (folder / f"run{index}.json").write_text(json.dumps(run), encoding="utf-8")
    png = tmp_path / "cost.png"
    assert main(["plot", str(folder), "--kind", "cost", "--output", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    points = {(point.section.task, point.label): point for point in cost_points(nan_records())}
    assert sorted(points) == [("rte", "Fine-tuning"), ("rte", "Last hidden"), ("rte", "LoRA (r=8)"),
                              ("stsb", "Fine-tuning"), ("stsb", "Last hidden")]  # fmt: skip
    fine = points[("stsb", "Fine-tuning")]
    assert (fine.score, fine.std, fine.n, fine.seeds) == (pytest.approx(71.0), None, 1, 3)
    # a NaN seed in a layer probe and in a learning curve is left out of its point
    probes = probe_records()
    probes[0]["metrics"]["dev"]["f1"] = math.nan  # layer 0, seed 1
    curve = fraction_records()
    curve[1]["metrics"]["dev"]["accuracy"] = math.nan  # fraction 0.1, seed 2
    [layers], _ = layer_curves(probes)
    assert (layers.points[0].mean, layers.points[0].n) == (pytest.approx(52.0), 1)
    [fine_curve, _] = learning_curves(curve)
    assert (fine_curve.points[0].mean, fine_curve.points[0].n) == (pytest.approx(50.0), 1)
    records = probes + curve + nan_records()
    for kind in ("table7", "tasks", "layers", "curve"):
        path = PLOTS[kind](records, tmp_path / f"{kind}.png")
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_tuned_rows_of_the_tasks_layout_say_so_alone_or_beside_untuned_ones():
    """A tuned system's finals are "System (tuned)" whether or not untuned runs of the system
    share the table, and never one row with them (the Table 7 layout's rule)."""
    tuned = [record("sst2", seed=seed, lr=3e-4, epochs=5, tags=["tuned"], dev=scores(accuracy=0.9)) for seed in (1, 2)]
    untuned = [record("sst2", seed=seed, dev=scores(accuracy=0.7)) for seed in (1, 2)]
    assert list(body_rows(render_tasks_markdown(tuned))) == ["Fine-tuning (tuned)"]
    rows = body_rows(render_tasks_markdown(tuned + untuned))
    assert rows == {"Fine-tuning": ["70.00 ± 0.00 (n=2)"], "Fine-tuning (tuned)": ["90.00 ± 0.00 (n=2)"]}
