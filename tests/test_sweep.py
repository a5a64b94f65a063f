"""Experiment files: expansion, the shared cache and resuming an interrupted sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertprobe.errors import ConfigError
from bertprobe.sweep import expand, load_experiment, parse_where, run_sweep, selected

ROOT = Path(__file__).resolve().parent.parent


def test_table7_protocol_file_states_the_paper_setup():
    configs = list(expand(load_experiment(ROOT / "experiments" / "table7.yaml"), {}))
    assert len(configs) == 7 * 5
    rows = {(c.mode, c.layers if c.mode == "feature" else "-") for c in configs}
    assert rows == {
        ("finetune", "-"),
        *{("feature", name) for name in
          ("embeddings", "second_last", "last", "last4weighted", "last4concat", "allweighted")},
    }  # fmt: skip
    finetune = [c for c in configs if c.mode == "finetune"]
    assert {c.seed for c in finetune} == {1, 2, 3, 4, 5}
    assert all(c.lr == 5e-5 and c.batch_size == 32 and c.epochs == 3 and c.head == "linear" for c in finetune)
    features = [c for c in configs if c.mode == "feature"]
    assert all(c.head == "bilstm" and c.lstm_hidden == 768 and c.context == "document" for c in features)
    assert all(c.model == "bert-base-cased" for c in configs)
    shared = set(features[0].cache_layer_specs())
    assert shared == {"embeddings", "second_last", "last", "last4weighted", "last4concat", "allweighted"}
    grid = list(expand(load_experiment(ROOT / "experiments" / "table7.yaml"), {}, use_grid=True))
    assert len(grid) == (2 * 3 * 3) * 5 + 6 * 5


def test_the_table7_learning_rate_grid_reads_table7s_own_fine_tuning_run_and_picks_a_winner_by_where():
    """Its first step re-uses the committed 5e-5 seed-1 record of Table 7 instead of
    re-running hours of document-context fine-tuning; its second runs one rate, 5 seeds."""
    minilm = {"model": "sentence-transformers/all-MiniLM-L6-v2", "data_dir": "../shared/data/conll2003"}
    grid = list(expand(load_experiment(ROOT / "experiments" / "table7_lr.yaml"), minilm))
    assert [(c.lr, c.seed) for c in grid] == [(5e-5, 1), (1e-4, 1), (2e-4, 1)]
    table7 = list(expand(load_experiment(ROOT / "experiments" / "table7.yaml"), minilm))
    [paper_rate] = [c for c in table7 if c.mode == "finetune" and c.seed == 1]
    assert grid[0].run_name() == paper_rate.run_name()
    assert (ROOT / "results" / "table7_minilm" / f"{paper_rate.run_name()}.json").is_file()
    assert all(c.context == "document" and c.epochs == 3 and c.train_fraction is None for c in grid)
    step_two = {**load_experiment(ROOT / "experiments" / "table7_lr.yaml"), "seeds": [1, 2, 3, 4, 5]}  # --seeds
    where = parse_where(["lr=2e-4"])
    winner = [c for c in expand(step_two, minilm) if selected(c, where)]
    assert [(c.lr, c.seed) for c in winner] == [(2e-4, seed) for seed in (1, 2, 3, 4, 5)]
    assert winner[0].run_name() == grid[2].run_name()  # its seed 1 is step one's run, read again


def test_command_line_overrides_win_over_the_file():
    experiment = load_experiment(ROOT / "experiments" / "table7.yaml")
    configs = list(expand(experiment, {"model": "/models/minilm", "data_dir": "/data/conll", "context": "sentence"}))
    assert {c.model for c in configs} == {"/models/minilm"}
    assert {c.context for c in configs} == {"sentence"}


def test_command_line_overrides_win_over_a_rows_own_values_and_runs_keep_file_then_seed_order():
    experiment = load_experiment(ROOT / "experiments" / "table7.yaml")
    configs = list(expand(experiment, {"lr": 1e-4}))  # the fine-tuning row sets lr itself
    assert {c.lr for c in configs} == {1e-4}
    runs = [(c.mode, c.layers if c.mode == "feature" else "-", c.seed) for c in expand(experiment, {})]
    assert runs[:10] == [
        *(("finetune", "-", seed) for seed in (1, 2, 3, 4, 5)),  # the file's first row, every seed
        *(("feature", "embeddings", seed) for seed in (1, 2, 3, 4, 5)),  # then the second
    ]


def test_a_sweep_always_resumes_its_runs(monkeypatch, tmp_path):
    """An interrupted sweep continues each unfinished run from its checkpoint: without
    resume=True a run would refuse to start over on top of its own checkpoint."""
    import bertprobe.train

    started = []
    monkeypatch.setattr(bertprobe.train, "run", lambda config: started.append(config))
    experiment = {"base": {"output_dir": str(tmp_path)}, "seeds": [1, 2], "runs": [{"mode": "finetune"}]}
    run_sweep(experiment, {})
    assert [(c.seed, c.resume) for c in started] == [(1, True), (2, True)]


def test_sweep_command_passes_its_overrides_on(monkeypatch):
    import bertprobe.sweep
    from bertprobe.cli import sweep_main

    seen = {}
    monkeypatch.setattr(bertprobe.sweep, "run_sweep", lambda experiment, overrides, **kwargs: seen.update(overrides))
    table7 = str(ROOT / "experiments" / "table7.yaml")
    assert sweep_main([table7, "--mixed-precision", "bf16", "--lstm-hidden", "256", "--eval-batch-size", "16"]) == 0
    assert seen == {"mixed_precision": "bf16", "lstm_hidden": 256, "eval_batch_size": 16}
    configs = list(expand(load_experiment(table7), seen))
    assert {c.mixed_precision for c in configs} == {"bf16"}
    plain = {c.run_name() for c in expand(load_experiment(table7), {"lstm_hidden": 256, "eval_batch_size": 16})}
    assert plain.isdisjoint(c.run_name() for c in configs)  # a bf16 run never skips for an fp32 record

    seen.clear()
    assert sweep_main([table7, "--checkpoint-every", "50", "--cache-dir", "elsewhere"]) == 0
    assert seen == {"checkpoint_every": 50, "cache_dir": "elsewhere"}
    configs = list(expand(load_experiment(table7), seen))
    assert {(c.checkpoint_every, c.cache_dir) for c in configs} == {(50, "elsewhere")}
    # checkpointing more often or caching elsewhere is not another run: the sweep still finds the records it made
    assert [c.run_name() for c in configs] == [c.run_name() for c in expand(load_experiment(table7), {})]


def test_experiment_file_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: {}\n")
    with pytest.raises(ConfigError, match="needs a 'runs' list"):
        load_experiment(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("runs: [{mode: feature, layers: last9}]\n")
    with pytest.raises(Exception, match="last9"):
        list(expand(load_experiment(tmp_path / "b.yaml"), {}))
    (tmp_path / "c.yaml").write_text("runs: [{mode: finetune, learning_rate: 1}]\n")
    with pytest.raises(ConfigError, match="unknown configuration keys: learning_rate"):
        list(expand(load_experiment(tmp_path / "c.yaml"), {}))


@pytest.mark.slow
def test_a_sweep_shares_one_cache_and_resumes_by_skipping_finished_runs(tiny_model_dir, toy_data_dir, tmp_path):
    experiment = tmp_path / "mini.yaml"
    experiment.write_text(
        "name: mini\n"
        "base: {epochs: 1, batch_size: 16, lstm_hidden: 8, max_train_examples: 40}\n"
        "seeds: [1]\n"
        "runs:\n  - {mode: feature, layers: last}\n  - {mode: feature, layers: embeddings}\n"
    )
    overrides = {"model": str(tiny_model_dir), "data_dir": str(toy_data_dir),
                 "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    paths = run_sweep(experiment, overrides)
    records = [json.loads(p.read_text()) for p in paths]
    assert [r["layers"]["strategy"] for r in records] == ["last", "embeddings"]
    assert records[0]["feature_cache"]["built"] == ["train", "validation", "test"]
    assert records[1]["feature_cache"]["built"] == []  # the first run stored layers 0 and 4 already
    assert all("mini" in r["config"]["tags"] for r in records)

    paths[1].unlink()  # as if the sweep had been interrupted before its last run
    before = paths[0].stat().st_mtime_ns
    assert run_sweep(experiment, overrides) == paths
    assert paths[0].stat().st_mtime_ns == before and paths[1].exists()


def test_where_selects_rows_of_the_learning_curve_by_fraction_and_mode():
    experiment = load_experiment(ROOT / "experiments" / "learning_curve.yaml")
    configs = list(expand(experiment, {}))
    small = [c for c in configs if selected(c, parse_where(["train_fraction=0.01,0.1"]))]
    assert len(configs) == 36 and len(small) == 24
    assert {c.train_fraction for c in small} == {0.01, 0.1}
    full_finetune = [c for c in configs if selected(c, parse_where(["train_fraction=none", "mode=finetune"]))]
    assert [(c.mode, c.train_fraction, c.seed) for c in full_finetune] == [("finetune", None, s) for s in (1, 2, 3)]


def test_where_takes_option_spellings_with_dashes():
    assert parse_where(["train-fraction=0.1", "mode=finetune,feature"]) == {
        "train_fraction": (0.1,),
        "mode": ("finetune", "feature"),
    }


def test_where_rejects_unknown_fields_bad_values_and_empty_selections(tmp_path):
    with pytest.raises(ConfigError, match="no run setting 'fraction'"):
        parse_where(["fraction=0.1"])
    with pytest.raises(ConfigError, match="'ten' is not a float"):
        parse_where(["train_fraction=ten"])
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        parse_where(["train_fraction"])
    experiment = load_experiment(ROOT / "experiments" / "learning_curve.yaml")
    with pytest.raises(ConfigError, match="no run of the experiment matches"):
        run_sweep(experiment, {"output_dir": str(tmp_path)}, dry_run=True, where=parse_where(["mode=embeddings"]))


def test_a_sweep_skips_the_runs_recorded_under_their_older_names(monkeypatch, capsys):
    """The 27 committed "tune or not" records carry the names GLUE runs had before the context
    left them: a sweep of the same file finds every one and runs none."""
    import bertprobe.train

    monkeypatch.setattr(bertprobe.train, "run", lambda config: pytest.fail(f"reran {config.run_name()}"))
    folder = ROOT / "results" / "tune_or_not_minilm"
    [first, *_] = sorted(folder.glob("*.json"))
    data_dir = json.loads(first.read_text(encoding="utf-8"))["config"]["data_dir"]
    overrides = {"model": "sentence-transformers/all-MiniLM-L6-v2", "data_dir": data_dir, "output_dir": str(folder)}
    paths = run_sweep(ROOT / "experiments" / "tune_or_not.yaml", overrides)
    assert len(paths) == 27 and sorted(paths) == sorted(folder.glob("*.json"))
    assert all("_sentence_seed" in path.name for path in paths)
    assert capsys.readouterr().out.count(": exists, skipped") == 27
