"""Summary tables and plots from hand-made result records (no model, no training)."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import ttest_ind

from bertprobe.config import BOOKKEEPING_OPTIONS, DATA_LOCATION_OPTIONS, RETIRED_OPTIONS
from bertprobe.errors import NoRecordsError
from bertprobe.formatting import RESUMED_MARK, RESUMED_NOTE, format_difference, format_p_value, setting_text
from bertprobe.paper import PAPER_DEV_F1
from bertprobe.plots import draw_table7_panel, finetuning_reference, fit_to_width, plot_table7, save_atomic, seed_points
from bertprobe.record import load_records, recorded
from bertprobe.rows import IGNORED_CONFIG_KEYS, finetuning_gaps, group_rows
from bertprobe.stats import difference_of_means, welch_p_value
from bertprobe.table import CSV_COLUMNS, render_csv, render_markdown

BASE = "bert-base-cased"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DATA = "/data/conll2003"


def make_record(
    mode: str = "finetune",
    layers: str = "last",
    seed: int = 1,
    dev_f1: float = 0.9,
    test_f1: float = 0.85,
    model: str = BASE,
    task: str = "conll2003",
    data: str = DATA,
    context: str = "document",
    trainable: int = 1000,
    train_seconds: float = 10.0,
    weights: dict[str, object] | None = None,
    **config: object,
) -> dict[str, object]:
    """A result record with the keys :func:`bertprobe.train.run` writes that the table reads."""
    settings: dict[str, object] = {
        "mode": mode,
        "layers": layers,
        "model": model,
        "task": task,
        "data_dir": data,
        "context": context,
        "head": "linear" if mode == "finetune" else "bilstm",
        "epochs": 3,
        "lr": 5e-5 if mode == "finetune" else 1e-3,
        "batch_size": 32,
        "seed": seed,
        "max_train_examples": None,
        "output_dir": f"/results/seed{seed}",
        "cache_dir": ".bertprobe_cache",
        "save_predictions": seed % 2 == 0,
        "tags": [f"run-{seed}"],
    }
    settings.update(config)
    return {
        "schema": 1,
        "config": settings,
        "encoder": {"num_layers": 12},
        "learned_layer_weights": weights,
        "data": {"source": data},
        "metrics": {
            "dev": {"f1": dev_f1, "precision": dev_f1, "recall": dev_f1, "per_type": {}},
            "test": {"f1": test_f1, "precision": test_f1, "recall": test_f1, "per_type": {}},
        },
        "parameters": {"trainable": trainable, "total": 5000},
        "time": {"train_seconds": train_seconds, "total_seconds": train_seconds + 1},
    }


def write_records(folder: Path, records: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(records):
        (folder / f"run{index}.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def three_seed_finetune(**kwargs: object) -> list[dict[str, object]]:
    return [
        make_record(seed=1, dev_f1=0.90, test_f1=0.80, train_seconds=10.0, **kwargs),
        make_record(seed=2, dev_f1=0.92, test_f1=0.83, train_seconds=20.0, **kwargs),
        make_record(seed=3, dev_f1=0.94, test_f1=0.86, train_seconds=60.0, **kwargs),
    ]


MAIN_HEADER = "| System | Dev F1"
GAP_HEADER = "| System | Δ dev F1 vs fine-tuning"
GAP_HEADER_WITH_REFERENCES = "| System | Against | Δ dev F1 vs fine-tuning"


def markdown_rows(text: str, header: str = MAIN_HEADER) -> list[list[str]]:
    """The cells of the body rows of every table whose header line starts with ``header``
    (by default the main tables, one per section)."""
    rows, inside = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            inside = False
        elif line.startswith("| System"):
            inside = line.startswith(header)
        elif inside and line.startswith("| "):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_load_records_skips_non_records_and_hidden_files(tmp_path: Path):
    write_records(tmp_path / "a" / "deep", [make_record(seed=1)])
    (tmp_path / "b.json").write_text(json.dumps(make_record(seed=2)), encoding="utf-8")
    (tmp_path / "summary.json").write_text(json.dumps({"name": "not a record"}), encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / ".b.json.abc.tmp.json").write_text(json.dumps(make_record(seed=3)), encoding="utf-8")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.json").write_text(json.dumps(make_record(seed=4)), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("{}", encoding="utf-8")
    with pytest.warns(UserWarning, match="broken.json"):
        (tmp_path / "broken.json").write_text('{"config": ', encoding="utf-8")
        records = load_records(tmp_path)
    assert sorted(record["config"]["seed"] for record in records) == [1, 2]


def test_mean_sample_std_seeds_and_paper_difference(tmp_path: Path):
    records = load_records(write_records(tmp_path, three_seed_finetune()))
    [rows] = group_rows(records).values()
    [row] = rows  # seed, output_dir, save_predictions and tags never split a row
    # dev 90, 92, 94: mean 92; sample variance ((-2)^2 + 0 + 2^2) / (3 - 1) = 4, std 2
    assert row.dev_f1_mean == pytest.approx(92.0)
    assert row.dev_f1_std == pytest.approx(2.0)
    assert row.delta_dev == pytest.approx(92.0 - 96.4)
    text = render_markdown(records)
    [cells] = markdown_rows(text)
    # test 80, 83, 86: mean 83, sample std 3 (a population std would be 2.45)
    assert cells == ["Fine-tuning", "92.00 ± 2.00", "83.00 ± 3.00", "3", "96.4", "-4.40", "1,000", "30.0"]
    assert "3 records" in text


def test_one_seed_has_no_std(tmp_path: Path):
    records = [make_record(seed=7, dev_f1=0.9512, test_f1=0.9)]
    [cells] = markdown_rows(render_markdown(records))
    assert cells[1] == "95.12 ± n/a"
    assert cells[3] == "1"
    [row] = parse_csv(render_csv(records))
    assert row["dev_f1_std"] == "" and row["test_f1_std"] == ""
    assert float(row["dev_f1_mean"]) == pytest.approx(95.12)


def test_rows_follow_the_papers_order_with_other_strategies_after(tmp_path: Path):
    strategies = ["-1,-2:mean", "last4sum", "allweighted", "last4concat", "last4weighted", "last", "second_last"]
    records = [make_record(mode="feature", layers=name, dev_f1=0.95) for name in strategies]
    records += [make_record(mode="feature", layers="embeddings"), make_record(mode="finetune", layers="-3")]
    records.append(make_record(mode="feature", layers="-1,-2,-3,-4:concat", seed=2, dev_f1=0.97))  # = last4concat
    labels = [cells[0] for cells in markdown_rows(render_markdown(records))]
    assert labels == [
        "Fine-tuning",
        "Embeddings",
        "Second-to-last hidden",
        "Last hidden",
        "Weighted sum last four hidden",
        "Concat last four hidden",
        "Weighted sum all layers",
        "Sum last four hidden",
        "Feature: -1,-2:mean",
    ]
    by_label = {cells[0]: cells for cells in markdown_rows(render_markdown(records))}
    assert by_label["Concat last four hidden"][1] == "96.00 ± 1.41"  # 95 and 97 share the row
    assert by_label["Concat last four hidden"][4] == "96.1"
    assert by_label["Sum last four hidden"][4] == "95.9"
    assert by_label["Embeddings"][4] == f"{PAPER_DEV_F1['embeddings']:.1f}" == "91.0"
    assert by_label["Feature: -1,-2:mean"][4] == "—" and by_label["Feature: -1,-2:mean"][5] == "—"
    assert by_label["Weighted sum last four hidden"][5] == "-0.90"  # 95.0 - 95.9
    assert by_label["Fine-tuning"][5] == "-6.40"  # 90.0 - 96.4


def test_two_models_get_two_sections_and_are_never_merged(tmp_path: Path):
    records = [
        *three_seed_finetune(model=BASE),
        make_record(model=MINILM, seed=1, dev_f1=0.80),
        make_record(model=MINILM, seed=2, dev_f1=0.82),
        make_record(model=BASE, seed=1, dev_f1=0.50, data="/other/data"),
    ]
    sections = group_rows(records)
    assert len(sections) == 3
    for section, rows in sections.items():
        for row in rows:
            assert {r["config"]["model"] for r in row.records} == {section.model}
            assert {Path(r["data"]["source"]).name for r in row.records} == {section.data}
    text = render_markdown(records)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == 3
    assert any(MINILM in h and "`conll2003`" in h and "context document" in h and "2 records" in h for h in headings)
    assert any(BASE in h and "`conll2003`" in h and "3 records" in h for h in headings)
    assert any("`data`" in h and "1 record" in h for h in headings)
    means = sorted(cells[1] for cells in markdown_rows(text))
    assert means == ["50.00 ± n/a", "81.00 ± 1.41", "92.00 ± 2.00"]  # never (90+92+94+80+82)/5
    rows = parse_csv(render_csv(records))
    assert sorted((row["model"], row["data"], row["seeds"]) for row in rows) == [
        (BASE, "conll2003", "3"),
        (BASE, "data", "1"),
        (MINILM, "conll2003", "2"),
    ]


def test_different_settings_of_one_system_are_separate_labelled_rows():
    records = [*three_seed_finetune(), make_record(seed=1, dev_f1=0.96, lr=3e-5)]
    rows = markdown_rows(render_markdown(records))
    assert [cells[0] for cells in rows] == ["Fine-tuning (lr=3e-5)", "Fine-tuning (lr=5e-5)"]
    assert [cells[3] for cells in rows] == ["1", "3"]


def test_paper_values_only_for_conll2003():
    records = [make_record(task="conll2003"), make_record(task="sst2", data="glue/sst2")]
    conll, sst2 = group_rows(records).values()
    assert conll[0].paper_dev_f1 == 96.4 and conll[0].delta_dev == pytest.approx(-6.4)
    assert sst2[0].paper_dev_f1 is None and sst2[0].delta_dev is None and sst2[0].paper_test_f1 is None
    assert [cells[4] for cells in markdown_rows(render_markdown(records))] == ["96.4", "—"]


def test_paper_values_only_beside_the_papers_head():
    records = [make_record(mode="feature", layers="embeddings"), make_record(mode="feature", layers="0", head="linear")]
    [bilstm, linear_probe] = group_rows(records)[next(iter(group_rows(records)))]
    assert bilstm.paper_dev_f1 == 91.0 and bilstm.delta_dev == pytest.approx(0.9 * 100 - 91.0)
    assert linear_probe.paper_dev_f1 is None and linear_probe.delta_dev is None
    [small] = group_rows([make_record(train_fraction=0.1)])[next(iter(group_rows(records)))]
    assert small.paper_dev_f1 is None  # the paper trained on all of CoNLL-2003


def test_rows_of_one_system_go_from_the_smallest_training_set_to_the_whole_set():
    records = [
        make_record(epochs=10, train_fraction=0.01),
        make_record(epochs=3),  # the whole training set
        make_record(epochs=4, train_fraction=0.1),
        make_record(epochs=3, train_fraction=0.1, seed=2),
        make_record(mode="feature", layers="last4concat", train_fraction=0.5),
        make_record(mode="feature", layers="last4concat", max_train_examples=100),
        make_record(mode="feature", layers="last4concat", max_train_examples=20),
    ]
    labels = [cells[0] for cells in markdown_rows(render_markdown(records))]
    assert labels == [
        "Fine-tuning (epochs=10, train_fraction=0.01)",
        "Fine-tuning (epochs=3, train_fraction=0.1)",  # 3 before 10 at the same size
        "Fine-tuning (epochs=4, train_fraction=0.1)",
        "Fine-tuning (epochs=3, train_fraction=none)",
        "Concat last four hidden (max_train_examples=none, train_fraction=0.5)",  # fraction first, then the cap
        "Concat last four hidden (max_train_examples=20, train_fraction=none)",
        "Concat last four hidden (max_train_examples=100, train_fraction=none)",
    ]


def test_rows_of_a_learning_rate_grid_go_from_the_smallest_rate_up():
    # written as learning rates are (5e-5, not str()'s 5e-05 beside 0.0002), ordered as numbers
    records = [make_record(lr=lr) for lr in (2e-4, 5e-5, 1e-4, 1.5e-3, 0.015)]
    labels = [cells[0] for cells in markdown_rows(render_markdown(records))]
    assert labels == [
        "Fine-tuning (lr=5e-5)",
        "Fine-tuning (lr=1e-4)",
        "Fine-tuning (lr=2e-4)",
        "Fine-tuning (lr=1.5e-3)",
        "Fine-tuning (lr=0.015)",
    ]


@pytest.mark.parametrize(
    ("value", "significant", "text"),
    [
        (5e-5, None, "5e-5"),
        (2e-4, None, "2e-4"),
        (0.000212345, 3, "2.12e-4"),
        (0.00358, 3, "3.58e-3"),
        (0.0099, None, "9.9e-3"),
        (0.01, None, "0.01"),
        (0.1082, 3, "0.108"),
        (0.0, None, "0.0"),
        (-3e-5, None, "-3e-5"),
        (8, None, "8"),
        (None, None, "none"),
        ("last4concat", None, "last4concat"),
        (True, None, "True"),
    ],
)
def test_setting_text_writes_small_floats_as_learning_rates_are_written(value, significant, text):
    assert setting_text(value, significant) == text


def test_csv_columns_and_values():
    records = [*three_seed_finetune(), make_record(mode="feature", layers="last4concat", dev_f1=0.95, trainable=77)]
    text = render_csv(records)
    assert text.splitlines()[0].split(",") == list(CSV_COLUMNS)
    for column in (
        "dev_f1_mean", "dev_f1_std", "test_f1_mean", "test_f1_std", "seeds", "paper_dev_f1", "delta_dev",
        "trainable_parameters", "train_seconds_mean", "model", "data",
    ):  # fmt: skip
        assert column in CSV_COLUMNS
    finetune, concat = parse_csv(text)
    assert finetune["system"] == "Fine-tuning" and finetune["strategy"] == "finetune"
    assert float(finetune["dev_f1_mean"]) == pytest.approx(92.0)
    assert float(finetune["dev_f1_std"]) == pytest.approx(2.0)
    assert float(finetune["test_f1_mean"]) == pytest.approx(83.0)
    assert float(finetune["test_f1_std"]) == pytest.approx(3.0)
    assert finetune["seeds"] == "3" and finetune["seed_values"] == "1;2;3"
    assert [float(value) for value in finetune["dev_f1_per_seed"].split(";")] == pytest.approx([90.0, 92.0, 94.0])
    assert [float(value) for value in finetune["test_f1_per_seed"].split(";")] == pytest.approx([80.0, 83.0, 86.0])
    assert float(finetune["paper_dev_f1"]) == 96.4 and float(finetune["paper_test_f1"]) == 92.4
    assert float(finetune["delta_dev"]) == pytest.approx(-4.4)
    assert finetune["trainable_parameters"] == "1000"
    assert float(finetune["train_seconds_mean"]) == pytest.approx(30.0)
    assert finetune["model"] == BASE and finetune["data"] == "conll2003" and finetune["context"] == "document"
    assert concat["system"] == "Concat last four hidden" and concat["strategy"] == "last4concat"
    assert float(concat["paper_dev_f1"]) == 96.1 and concat["paper_test_f1"] == ""
    assert float(concat["delta_dev"]) == pytest.approx(95.0 - 96.1)
    assert concat["trainable_parameters"] == "77"


def test_csv_per_seed_scores_stay_beside_their_seeds():
    """A seed without a test score leaves its own place empty; the others do not shift."""
    without_test = make_record(seed=7, dev_f1=0.5)
    del without_test["metrics"]["test"]
    records = [make_record(seed=3, dev_f1=0.7, test_f1=0.6), without_test, make_record(seed=5, dev_f1=0.9, test_f1=0.8)]
    [line] = parse_csv(render_csv(records))
    seeds = line["seed_values"].split(";")
    dev = dict(zip(seeds, line["dev_f1_per_seed"].split(";"), strict=True))
    test = dict(zip(seeds, line["test_f1_per_seed"].split(";"), strict=True))
    assert {seed: float(value) for seed, value in dev.items()} == pytest.approx({"3": 70.0, "7": 50.0, "5": 90.0})
    assert test["7"] == ""
    assert float(test["3"]) == pytest.approx(60.0) and float(test["5"]) == pytest.approx(80.0)
    assert float(line["test_f1_mean"]) == pytest.approx(70.0)  # the mean is over the two seeds that have one


def test_learned_layer_weights_are_averaged_over_seeds():
    def weighted(seed: int, softmax: list[float], gamma: float) -> dict[str, object]:
        weights = {"layers": [9, 10, 11, 12], "softmax_weights": softmax, "gamma": gamma}
        return make_record(mode="feature", layers="last4weighted", seed=seed, weights=weights)

    records = [
        weighted(1, [0.1, 0.2, 0.3, 0.4], 1.0),
        weighted(2, [0.3, 0.2, 0.1, 0.4], 2.0),
        make_record(mode="feature", layers="last4concat"),
    ]
    [rows] = group_rows(records).values()
    means, gamma, count = rows[0].layer_weights()
    assert means == pytest.approx({9: 0.2, 10: 0.2, 11: 0.2, 12: 0.4})
    assert gamma == pytest.approx(1.5) and count == 2
    assert rows[1].layer_weights() is None
    text = render_markdown(records)
    assert "Learned layer weights" in text
    weight_lines = [line for line in text.splitlines() if line.startswith("| Weighted sum last four hidden | 2 |")]
    assert weight_lines == ["| Weighted sum last four hidden | 2 | 1.500 | 0.200 | 0.200 | 0.200 | **0.400** |"]
    assert "| System | Seeds | γ (mean) | L9 | L10 | L11 | L12 |" in text
    assert "Learned layer weights" not in render_markdown(three_seed_finetune())


def test_a_title_wider_than_the_figure_is_saved_whole(tmp_path: Path):
    import matplotlib.image
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.0, 3.0))
    axis.plot([0, 1], [0, 1])
    figure.suptitle("a title far wider than a four-inch figure can hold " * 3, fontsize=10)
    path = save_atomic(figure, tmp_path / "wide.png")
    width = matplotlib.image.imread(path).shape[1]
    assert width > 4.0 * 120  # the image grew to hold the title instead of cutting it off


def test_long_titles_are_broken_into_lines_that_fit_the_figure():
    title = "sentence-transformers/all-MiniLM-L6-v2 · ../shared/data/conll2003 (conll2003, document context)"
    lines = fit_to_width(title, 4.0, fontsize=10).split("\n")
    assert len(lines) == 3 and all(len(line) <= 48 for line in lines)  # 4 in x 72 pt / 6 pt per character
    assert " ".join(lines) == title
    assert fit_to_width(title, 20.0, fontsize=10) == title


def test_plot_writes_a_png(tmp_path: Path):
    records = [
        *three_seed_finetune(),
        make_record(mode="feature", layers="last4concat", dev_f1=0.95),
        make_record(mode="feature", layers="-1,-2:mean", dev_f1=0.93),
        make_record(model=MINILM, dev_f1=0.88),
    ]
    path = plot_table7(records, tmp_path / "plots" / "table7.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["table7.png"]  # no temporary left
    with pytest.raises(NoRecordsError):
        plot_table7([], tmp_path / "empty.png")
    with pytest.raises(NoRecordsError):
        render_markdown([])
    with pytest.raises(NoRecordsError):
        render_csv([])


def test_cli_table_prints_markdown_and_writes_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bertprobe.cli import main

    folder = write_records(tmp_path / "runs", three_seed_finetune())
    assert main(["table", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Model `bert-base-cased`")
    assert "| Fine-tuning | 92.00 ± 2.00 | 83.00 ± 3.00 | 3 | 96.4 | -4.40 |" in out

    target = tmp_path / "out" / "table.csv"
    assert main(["table", str(folder), "--format", "csv", "--output", str(target)]) == 0
    [row] = parse_csv(target.read_text(encoding="utf-8"))
    assert math.isclose(float(row["dev_f1_mean"]), 92.0)

    png = tmp_path / "plot.png"
    assert main(["plot", str(folder), "--output", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_empty_or_missing_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bertprobe.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["table", str(empty)]) == 2
    error = capsys.readouterr().err
    assert "no result records" in error and str(empty) in error
    (empty / "other.json").write_text('{"not": "a record"}', encoding="utf-8")
    assert main(["table", str(empty)]) == 2
    assert main(["plot", str(empty), "--output", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
    assert main(["table", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_lstm_size_splits_rows_only_where_the_head_is_a_bilstm():
    finetuned = [make_record(seed=1, lstm_hidden=256), make_record(seed=2, lstm_hidden=768)]
    features = [make_record(mode="feature", layers="last", lstm_hidden=size) for size in (256, 768)]
    [rows] = group_rows(finetuned + features).values()
    assert [(row.label, len(row.records)) for row in rows] == [
        ("Fine-tuning", 2),
        ("Last hidden (lstm_hidden=256)", 1),
        ("Last hidden (lstm_hidden=768)", 1),
    ]
    old_record = make_record(seed=3)  # written before --eval-every existed
    [row] = group_rows([make_record(seed=4, eval_every=1), old_record])[next(iter(group_rows([old_record])))]
    assert len(row.records) == 2


def test_bookkeeping_options_never_split_a_row():
    """A seed resumed with --checkpoint-every, or written elsewhere, stays in its row: the
    options a run's name leaves out, and the seed, never split a row."""
    assert IGNORED_CONFIG_KEYS - {"seed"} == BOOKKEEPING_OPTIONS | RETIRED_OPTIONS | DATA_LOCATION_OPTIONS
    records = [
        make_record(seed=1),
        make_record(seed=2, checkpoint_every=50, resume=True, checkpoint=True, report_to="tensorboard"),
    ]
    [rows] = group_rows(records).values()
    assert [row.seeds for row in rows] == [[1, 2]]


def test_reading_records_needs_no_torch():
    """bertprobe.table (with the rows and the tasks layout it imports) renders records without torch."""
    code = "import sys, bertprobe.table; print('torch' in sys.modules)"
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert finished.stdout.strip() == "False"


def test_recorded_walks_nested_sections_and_tolerates_old_records():
    record = {"time": {"train_seconds": 12.5}, "data": {"windows": None}, "metrics": "not a dict"}
    assert recorded(record, "time", "train_seconds") == 12.5
    assert recorded(record, "time", "eval_seconds") is None  # key missing
    assert recorded(record, "memory", "process_max_rss_bytes") is None  # section missing (older record)
    assert recorded(record, "data", "windows", "train") is None  # a level that is None
    assert recorded(record, "metrics", "dev", "f1") is None  # a level that is not a dict
    assert recorded(record) is record


def test_a_train_time_that_adds_up_resumed_processes_is_marked():
    """A seed resumed from a checkpoint (an older record: ``resumed_from``; a newer one: more
    than one entry in ``processes``) marks its row's train time, and a note says why."""
    fresh = make_record(mode="feature", layers="last", seed=1, train_seconds=10.0)
    old_resumed = {
        **make_record(mode="feature", layers="last", seed=2, train_seconds=30.0),
        "resumed_from": "/ck/epoch-1",
    }
    processes = [{"git_commit": "a"}, {"git_commit": "b"}]
    new_resumed = {**make_record(seed=1, train_seconds=50.0), "resumed_from": None, "processes": processes}
    one_process = {**make_record(mode="feature", layers="second_last", train_seconds=7.0), "processes": processes[:1]}
    lines = {
        cells[0]: cells for cells in markdown_rows(render_markdown([fresh, old_resumed, new_resumed, one_process]))
    }
    assert lines["Fine-tuning"][-1] == f"50.0 {RESUMED_MARK}"
    assert lines["Last hidden"][-1] == f"20.0 {RESUMED_MARK}"  # one of its two seeds resumed
    assert lines["Second-to-last hidden"][-1] == "7.0"
    assert RESUMED_NOTE in render_markdown([fresh, old_resumed])
    assert RESUMED_MARK not in render_markdown([fresh, one_process])
    by_strategy = {row["strategy"]: row for row in parse_csv(render_csv([fresh, old_resumed, new_resumed]))}
    assert by_strategy["last"]["resumed_seeds"] == "1" and by_strategy["finetune"]["resumed_seeds"] == "1"
    assert float(by_strategy["last"]["train_seconds_mean"]) == pytest.approx(20.0)


def test_difference_of_means_and_its_standard_error():
    # 90, 92, 94 (mean 92, s 2) against 80, 83, 86 (mean 83, s 3): 9 ± sqrt(4/3 + 9/3)
    difference, error = difference_of_means([90.0, 92.0, 94.0], [80.0, 83.0, 86.0])
    assert difference == pytest.approx(9.0)
    assert error == pytest.approx(math.sqrt(13 / 3))
    # unequal seeds: each variance over its own count, sqrt(4/3 + 18/2) (swapped counts: sqrt(8))
    difference, error = difference_of_means([90.0, 92.0, 94.0], [80.0, 86.0])
    assert difference == pytest.approx(9.0) and error == pytest.approx(math.sqrt(4 / 3 + 18 / 2))
    assert difference_of_means([90.0, 92.0], [88.0]) == (pytest.approx(3.0), None)  # one seed: no error
    assert difference_of_means([], [88.0]) == (None, None)
    assert format_difference(-1.0551, 0.3) == "-1.06 ± 0.30"
    assert format_difference(0.5, None) == "+0.50 ± n/a"
    assert format_difference(None, None) == "—"


def test_welch_p_value_matches_the_t_distribution_in_closed_form():
    # n = 2 against 2, equal variances: 2 degrees of freedom, where P(|T| > t) = 1 - t / sqrt(2 + t²).
    # 1, 3 against 0, 2: difference 1, error sqrt(2/2 + 2/2), t = 1/sqrt(2)
    t = 1 / math.sqrt(2)
    assert welch_p_value([1.0, 3.0], [0.0, 2.0]) == pytest.approx(1 - t / math.sqrt(2 + t**2))
    # a reference that does not vary leaves the other side's n - 1 = 1 degree of freedom, the Cauchy
    # distribution: P(|T| > t) = 1 - 2 atan(t) / pi; 1, 3 against 0, 0, 0: t = 2 / 1
    assert welch_p_value([1.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(1 - 2 * math.atan(2) / math.pi)
    # Welch's degrees of freedom, not the pooled n_a + n_b - 2 = 3 (pooled: 0.058; Welch: 0.221)
    assert welch_p_value([1.0, 2.0, 3.0], [5.0, 9.0]) == pytest.approx(
        ttest_ind([1.0, 2.0, 3.0], [5.0, 9.0], equal_var=False).pvalue
    )
    assert welch_p_value([2.0, 1.0], [3.0, 1.0]) == welch_p_value([1.0, 2.0], [1.0, 3.0])  # symmetric in sign
    assert welch_p_value([90.0, 92.0], [88.0]) is None  # one seed
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) is None  # neither varies: t is undefined
    assert format_p_value(0.0123) == "0.012"
    assert format_p_value(0.0004) == "<0.001"
    assert format_p_value(None) == "n/a"


def test_rows_are_set_against_fine_tuning_with_the_papers_gap_beside():
    records = [
        *three_seed_finetune(),  # dev 90, 92, 94; test 80, 83, 86
        make_record(mode="feature", layers="last4concat", seed=1, dev_f1=0.93, test_f1=0.84),
        make_record(mode="feature", layers="last4concat", seed=2, dev_f1=0.95, test_f1=0.84),
        make_record(mode="feature", layers="embeddings", seed=1, dev_f1=0.80, test_f1=0.70),
        make_record(mode="feature", layers="last", head="linear", dev_f1=0.70, test_f1=0.60),  # a probe: no paper value
    ]
    text = render_markdown(records)
    assert "Against fine-tuning:" in text
    by_label = {cells[0]: cells for cells in markdown_rows(text, GAP_HEADER)}
    assert set(by_label) == {"Embeddings", "Concat last four hidden", "Last hidden"}  # fine-tuning is the reference
    # concat: dev 93, 95 (mean 94, s 1.414) - 92 = +2, error sqrt(2/2 + 4/3); test 84 - 83 = +1, sqrt(0 + 9/3)
    assert by_label["Concat last four hidden"] == [
        "Concat last four hidden",
        f"+2.00 ± {math.sqrt(1 + 4 / 3):.2f}",
        f"{ttest_ind([93, 95], [90, 92, 94], equal_var=False).pvalue:.3f}",  # Welch's test, computed by scipy
        f"+1.00 ± {math.sqrt(3):.2f}",
        "0.622",  # test: t = 1/sqrt(3) on 2 degrees of freedom (84, 84 do not vary): p = 1 - t/sqrt(2 + t²)
        "-0.3",  # 96.1 - 96.4 in the paper
    ]
    assert by_label["Embeddings"] == ["Embeddings", "-12.00 ± n/a", "n/a", "-13.00 ± n/a", "n/a", "-5.4"]
    assert by_label["Last hidden"][1:] == ["-22.00 ± n/a", "n/a", "-23.00 ± n/a", "n/a", "—"]
    concat = next(row for row in parse_csv(render_csv(records)) if row["strategy"] == "last4concat")
    assert concat["finetuning_reference"] == "Fine-tuning"
    assert float(concat["delta_dev_vs_finetuning"]) == pytest.approx(2.0)
    assert float(concat["delta_dev_vs_finetuning_se"]) == pytest.approx(math.sqrt(1 + 4 / 3))
    assert float(concat["delta_test_vs_finetuning"]) == pytest.approx(1.0)
    assert float(concat["delta_test_vs_finetuning_se"]) == pytest.approx(math.sqrt(3))
    t = 1 / math.sqrt(3)
    assert float(concat["delta_test_vs_finetuning_p"]) == pytest.approx(1 - t / math.sqrt(2 + t**2))
    dev_p = ttest_ind([93, 95], [90, 92, 94], equal_var=False).pvalue
    assert float(concat["delta_dev_vs_finetuning_p"]) == pytest.approx(dev_p)
    assert float(concat["paper_delta_dev_vs_finetuning"]) == pytest.approx(-0.3)
    finetune = next(row for row in parse_csv(render_csv(records)) if row["strategy"] == "finetune")
    assert finetune["finetuning_reference"] == "" and finetune["delta_dev_vs_finetuning"] == ""


def test_the_reference_is_the_best_fine_tuning_on_dev_trained_on_as_much_data():
    records = [
        make_record(lr=3e-5, dev_f1=0.90, test_f1=0.90),  # first in the table, best on test
        make_record(lr=5e-5, dev_f1=0.92, test_f1=0.80),  # best on dev: the reference
        make_record(lr=5e-5, train_fraction=0.1, dev_f1=0.60, test_f1=0.50),
        make_record(mode="feature", layers="last4concat", dev_f1=0.91, test_f1=0.81),
        make_record(mode="feature", layers="last4concat", train_fraction=0.1, dev_f1=0.70, test_f1=0.60),
        make_record(mode="feature", layers="last4concat", train_fraction=0.5, dev_f1=0.80),  # no fine-tuning at 0.5
    ]
    [rows] = group_rows(records).values()
    gaps = {row.label: gap for row, gap in finetuning_gaps(rows)}
    assert sorted(gaps) == [
        "Concat last four hidden (train_fraction=0.1)",
        "Concat last four hidden (train_fraction=none)",
    ]
    whole = gaps["Concat last four hidden (train_fraction=none)"]
    assert whole.reference.label == "Fine-tuning (lr=5e-5, train_fraction=none)"
    assert whole.dev == pytest.approx(-1.0) and whole.test == pytest.approx(1.0)
    tenth = gaps["Concat last four hidden (train_fraction=0.1)"]
    assert tenth.reference.label == "Fine-tuning (lr=5e-5, train_fraction=0.1)"
    assert tenth.dev == pytest.approx(10.0) and tenth.paper_dev is None  # not the paper's training set
    # the references differ between rows, so the table names each row's
    cells = markdown_rows(render_markdown(records), GAP_HEADER_WITH_REFERENCES)
    assert [row[:2] for row in cells] == [
        ["Concat last four hidden (train_fraction=0.1)", "Fine-tuning (lr=5e-5, train_fraction=0.1)"],
        ["Concat last four hidden (train_fraction=none)", "Fine-tuning (lr=5e-5, train_fraction=none)"],
    ]


def test_a_one_seed_grid_point_is_not_the_reference_until_its_seeds_are_run():
    concat = [make_record(mode="feature", layers="last4concat", seed=seed, dev_f1=0.91 + seed / 100) for seed in (1, 2)]
    default = three_seed_finetune(lr=5e-5)  # dev 0.90, 0.92, 0.94: mean 92.0
    grid_point = make_record(lr=2e-4, seed=1, dev_f1=0.96)  # best on dev, with one seed

    def reference_of(records: list[dict[str, object]]) -> tuple[str, float]:
        [rows] = group_rows(records).values()
        [(_, gap)] = finetuning_gaps(rows)
        return gap.reference.label, gap.dev

    label, dev = reference_of([*concat, *default, grid_point])
    assert label == "Fine-tuning (lr=5e-5)" and dev == pytest.approx(92.5 - 92.0)
    # a reference was chosen among several, so the table names it
    cells = markdown_rows(render_markdown([*concat, *default, grid_point]), GAP_HEADER_WITH_REFERENCES)
    # √(0.5/2 + 4/3) = 1.26
    assert [row[:3] for row in cells] == [["Concat last four hidden", "Fine-tuning (lr=5e-5)", "+0.50 ± 1.26"]]
    # with a second seed the grid point, best on dev, becomes the reference
    second = make_record(lr=2e-4, seed=2, dev_f1=0.94)
    assert reference_of([*concat, *default, grid_point, second]) == ("Fine-tuning (lr=2e-4)", pytest.approx(-2.5))
    # with one seed everywhere, the best on dev
    assert reference_of([*concat, default[0], grid_point])[0] == "Fine-tuning (lr=2e-4)"


def test_no_gap_table_without_a_fine_tuning_row():
    records = [make_record(mode="feature", layers="last"), make_record(mode="feature", layers="last4concat")]
    assert "Against fine-tuning" not in render_markdown(records)
    assert "Against fine-tuning" not in render_markdown(three_seed_finetune())


def test_the_figure_draws_fine_tuning_as_a_line_only_when_it_is_one_row():
    def rows_of(records: list[dict[str, object]]) -> list:
        [rows] = group_rows(records).values()
        return rows

    concat = make_record(mode="feature", layers="last4concat", dev_f1=0.95)
    reference = finetuning_reference(rows_of([*three_seed_finetune(), concat]))
    assert reference is not None and reference.dev_f1_mean == pytest.approx(92.0)
    assert finetuning_reference(rows_of([concat])) is None  # nothing to compare with
    assert finetuning_reference(rows_of(three_seed_finetune())) is None  # fine-tuning alone
    # a dev grid beside it: the line is the reference, which the legend names
    grid_records = [*three_seed_finetune(), make_record(lr=2e-4, dev_f1=0.99), concat]
    reference = finetuning_reference(rows_of(grid_records))
    assert reference is not None and reference.label == "Fine-tuning (lr=5e-5)"
    import matplotlib.pyplot as plt

    [(section, rows)] = group_rows(grid_records).items()
    figure, axis = plt.subplots()
    draw_table7_panel(axis, section, rows, 8.0)
    [line] = [line for line in axis.get_lines() if line.get_label().startswith("ours: fine-tuning")]
    assert line.get_ydata()[0] == pytest.approx(92.0) and line.get_label() == "ours: fine-tuning (lr=5e-5)"
    plt.close(figure)
    curve = [
        make_record(dev_f1=0.60, train_fraction=0.1),
        make_record(dev_f1=0.90),
        make_record(mode="feature", layers="last4concat", dev_f1=0.70, train_fraction=0.1),
        concat,
    ]
    assert finetuning_reference(rows_of(curve)) is None  # a reference per training-set size


def test_the_figure_puts_each_seed_over_its_own_bar():
    concat = [make_record(mode="feature", layers="last4concat", seed=seed, dev_f1=0.95) for seed in (1, 2)]
    single = make_record(mode="feature", layers="last", dev_f1=0.5)
    [rows] = group_rows([*three_seed_finetune(), single, *concat]).values()
    assert [row.system for row in rows] == ["finetune", "last", "last4concat"]

    # fine-tuning at bar 0 (90, 92, 94 spread over 0.24 of its width); one seed of `last`: no dot
    def flat(points: list[tuple[float, float]]) -> list[float]:
        return [number for point in points for number in point]

    expected = [(-0.12, 90.0), (0.0, 92.0), (0.12, 94.0), (1.88, 95.0), (2.12, 95.0)]
    assert flat(seed_points(rows)) == pytest.approx(flat(expected))
    assert flat(seed_points(rows, spread=0.5)[:3]) == pytest.approx(flat([(-0.25, 90.0), (0.0, 92.0), (0.25, 94.0)]))


def test_repeated_seeds_differing_parameter_counts_and_capped_training_sets_are_shown():
    records = [
        make_record(seed=1, trainable=1000),
        make_record(seed=1, trainable=2000),  # the same seed twice, e.g. two machines
        make_record(seed=2, trainable=2000),
    ]
    [cells] = markdown_rows(render_markdown(records))
    assert cells[3] == "3 (2 distinct)"
    assert cells[6] == "1,000–2,000"
    [row] = parse_csv(render_csv(records))
    assert row["trainable_parameters"] == str(round((1000 + 2000 + 2000) / 3))  # the mean, 1667
    capped = [make_record(max_train_examples=100)]
    [[row]] = group_rows(capped).values()
    assert row.paper_dev_f1 is None  # the paper trained on all of CoNLL-2003


def nan_and_empty_records() -> list[dict[str, object]]:
    """Fine-tuning with one seed's dev F1 NaN; `last` with one record whose metrics are empty;
    `embeddings` with no finite dev F1 at all."""
    empty = make_record(mode="feature", layers="last", seed=3)
    empty["metrics"] = {}
    return [
        make_record(seed=1, dev_f1=0.90, test_f1=0.80),
        make_record(seed=2, dev_f1=math.nan, test_f1=0.83),
        make_record(seed=3, dev_f1=0.94, test_f1=0.86),
        make_record(mode="feature", layers="last", seed=1, dev_f1=0.88, test_f1=0.80),
        make_record(mode="feature", layers="last", seed=2, dev_f1=0.86, test_f1=0.82),
        empty,
        make_record(mode="feature", layers="embeddings", seed=1, dev_f1=math.nan, test_f1=0.70),
        make_record(mode="feature", layers="embeddings", seed=2, dev_f1=math.nan, test_f1=0.72),
    ]


def test_nan_and_missing_scores_are_left_out_and_counted(tmp_path: Path):
    from bertprobe.table import SCORED_NOTE

    records = load_records(write_records(tmp_path, nan_and_empty_records()))  # NaN goes through JSON
    text = render_markdown(records)
    assert markdown_rows(text) == [
        ["Fine-tuning", "92.00 ± 2.83 (2 of 3)", "83.00 ± 3.00", "3", "96.4", "-4.40", "1,000", "10.0"],
        ["Embeddings", "—", "71.00 ± 1.41", "2", "91.0", "—", "1,000", "10.0"],
        ["Last hidden", "87.00 ± 1.41 (2 of 3)", "81.00 ± 1.41 (2 of 3)", "3", "94.9", "-7.90", "1,000", "10.0"],
    ]
    assert f"\n\n{SCORED_NOTE}\n\n" in text
    assert SCORED_NOTE not in render_markdown(three_seed_finetune())
    # Welch over the finite seeds only: `last` dev 88, 86 against 90, 94; Embeddings has no dev F1 to compare
    dev_p = ttest_ind([88, 86], [90, 94], equal_var=False).pvalue
    embeddings_p = ttest_ind([70, 72], [80, 83, 86], equal_var=False).pvalue
    test_p = ttest_ind([80, 82], [80, 83, 86], equal_var=False).pvalue
    assert markdown_rows(text, GAP_HEADER) == [
        ["Embeddings", "—", "n/a", f"-12.00 ± {math.sqrt(2 / 2 + 9 / 3):.2f}", f"{embeddings_p:.3f}", "-5.4"],
        [
            "Last hidden",
            f"-5.00 ± {math.sqrt(2 / 2 + 8 / 2):.2f}",
            f"{dev_p:.3f}",
            "-2.00 ± 2.00",
            f"{test_p:.3f}",
            "-1.5",
        ],
    ]
    lines = {line["strategy"]: line for line in parse_csv(render_csv(records))}
    assert lines["finetune"]["seeds"] == "3" and float(lines["finetune"]["dev_f1_mean"]) == pytest.approx(92.0)
    assert lines["finetune"]["dev_f1_per_seed"] == "90.0;nan;94.0"
    assert lines["last"]["dev_f1_per_seed"] == "88.0;86.0;"
    assert lines["embeddings"]["dev_f1_mean"] == "" and lines["embeddings"]["dev_f1_std"] == ""


def test_the_figure_skips_nan_scores(tmp_path: Path):
    [rows] = group_rows(nan_and_empty_records()).values()
    assert [row.dev_f1 for row in rows] == [pytest.approx([90.0, 94.0]), [], pytest.approx([88.0, 86.0])]
    data = plot_table7(nan_and_empty_records(), tmp_path / "table7.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_tuned_system_is_one_row_of_its_own_whatever_its_winners_chose():
    """Final runs of a tuning (tagged ``tuned``) group by system alone: the winner's lr or
    epochs are the tuning's choice, not another row. They never share a row with untuned
    runs of the system, and their rows say "(tuned)"."""
    from bertprobe.plots import learning_curves

    tuned = [
        make_record(seed=seed, lr=lr, epochs=epochs, train_fraction=fraction, dev_f1=f1, tags=["t", "ft", "tuned"])
        for fraction, lr, epochs, f1s in ((0.01, 2e-4, 20, (0.60, 0.62)), (0.1, 1e-4, 10, (0.80, 0.82)))
        for seed, f1 in zip((1, 2), f1s, strict=True)
    ]  # fmt: skip
    untuned = [make_record(seed=seed, train_fraction=fraction) for fraction in (0.01, 0.1) for seed in (1, 2)]
    [rows] = group_rows(tuned + untuned).values()
    assert sorted((row.label, len(row.records)) for row in rows) == [
        ("Fine-tuning (train_fraction=0.01)", 2),
        ("Fine-tuning (train_fraction=0.1)", 2),
        ("Fine-tuning (tuned) (train_fraction=0.01)", 2),
        ("Fine-tuning (tuned) (train_fraction=0.1)", 2),
    ]
    curves = {
        curve.label: [(point.x, round(point.mean, 6)) for point in curve.points]
        for curve in learning_curves(tuned + untuned)
    }
    assert curves == {"Fine-tuning (tuned)": [(0.01, 61.0), (0.1, 81.0)], "Fine-tuning": [(0.01, 90.0), (0.1, 90.0)]}


def test_the_untrained_cosine_is_a_system_of_its_own():
    records = [
        make_record(mode="cosine", layers="-1,-2,-3,-4:concat", task="stsb", seed=1, head="cosine", lr=None),
        make_record(mode="feature", layers="last4concat", task="stsb", seed=1),
        make_record(mode="finetune", task="stsb", seed=1),
    ]
    [rows] = group_rows(records).values()
    assert [row.label for row in rows] == [
        "Fine-tuning", "Concat last four hidden", "Cosine, untrained (Concat last four hidden)",
    ]  # fmt: skip
    assert rows[2].settings.get("layers") is None  # the strategy is in the system's name


def test_one_data_folder_reached_by_two_paths_is_one_section():
    """Records name their data as the run was given it; ``../data/conll2003`` and
    ``/srv/data/conll2003`` are the same folder's name, one section, headed by that name."""
    records = [make_record(seed=1, data="../data/conll2003"), make_record(seed=2, data="/srv/data/conll2003/")]
    [(section, [row])] = group_rows(records).items()
    assert section.data == "conll2003" and row.seeds == [1, 2]
    hub = make_record(seed=3, data="hub:conll2003")
    assert [section.data for section in group_rows([*records, hub])] == ["conll2003", "hub:conll2003"]
