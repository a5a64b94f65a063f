"""Equal-effort tuning: seeded trials, shared studies, resumed tunings, dev-only choices,
and the expected-maximum estimators against hand computation."""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import pytest
import yaml

from bertprobe.errors import ConfigError
from bertprobe.expected_max import curve, with_replacement, without_replacement
from bertprobe.tuning import Dimension, Tuning, best_trial, parse_dimension, parse_systems

# ----------------------------------------------------------------------------- estimators

SCORES = [0.1, 0.4, 0.3]


def test_with_replacement_equals_the_hand_computation():
    # sorted 0.1, 0.3, 0.4; P(max = i-th) = (i/3)^n - ((i-1)/3)^n
    assert with_replacement(SCORES, 1).mean == pytest.approx((0.1 + 0.3 + 0.4) / 3)
    assert with_replacement(SCORES, 2).mean == pytest.approx(0.1 * 1 / 9 + 0.3 * 3 / 9 + 0.4 * 5 / 9)
    three = with_replacement(SCORES, 3)
    assert three.mean == pytest.approx(0.1 * 1 / 27 + 0.3 * 7 / 27 + 0.4 * 19 / 27)
    assert three.mean < max(SCORES)  # biased low: it may draw the same trial again
    second = 0.01 / 3 + 0.09 / 3 + 0.16 / 3
    assert with_replacement(SCORES, 1).std == pytest.approx(math.sqrt(second - (0.8 / 3) ** 2))


def test_without_replacement_equals_the_hand_computation_and_the_maximum_at_n():
    # P(max of a 2-subset = i-th) = C(i-1, 1) / C(3, 2): 0, 1/3, 2/3
    assert without_replacement(SCORES, 1).mean == pytest.approx(0.8 / 3)
    assert without_replacement(SCORES, 2).mean == pytest.approx(0.3 / 3 + 0.4 * 2 / 3)
    full = without_replacement(SCORES, 3)
    assert full.mean == pytest.approx(0.4) and full.std == pytest.approx(0.0)
    assert [point.n for point in curve(SCORES)] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"n must be in 1\.\.3"):
        without_replacement(SCORES, 4)
    assert without_replacement([0.2, float("nan"), 0.5], 2).mean == pytest.approx(0.5)  # NaN trials left out


# ----------------------------------------------------------------------------- search spaces


def test_a_seed_draws_the_same_trials_and_a_longer_study_extends_a_shorter_one():
    tuning = {"systems": {"finetune": {"fixed": {"mode": "finetune"}}, "lora": {"fixed": {"mode": "lora"}}}}
    finetune, lora = parse_systems(tuning, "t.yaml")
    assert finetune.trials(5, 0) == finetune.trials(5, 0)
    assert finetune.trials(8, 0)[:5] == finetune.trials(5, 0)
    assert finetune.trials(5, 1) != finetune.trials(5, 0)
    for settings in finetune.trials(50, 0):
        assert 1e-5 <= settings["lr"] <= 1e-3 and settings["batch_size"] in (16, 32)
        assert 0.0 <= settings["warmup_fraction"] <= 0.2
    assert {"lora_rank", "lora_alpha"} <= set(lora.trials(1, 0)[0])
    logs = [math.log10(settings["lr"]) for settings in finetune.trials(400, 0)]
    assert sum(log < -4 for log in logs) == pytest.approx(200, abs=40)  # log-uniform: half below the middle


def test_dimensions_and_systems_are_checked():
    assert Dimension("epochs", "int", (2, 4)).sample(__import__("numpy").random.default_rng(0)) in (2, 3, 4)
    with pytest.raises(ConfigError, match=r"system 'x', lr: log_uniform needs a positive low end"):
        parse_dimension("x", "lr", {"log_uniform": [0, 1]})
    with pytest.raises(ConfigError, match=r"uniform needs \[low, high\] with low < high"):
        parse_dimension("x", "dropout", {"uniform": [0.5, 0.1]})
    with pytest.raises(ConfigError, match="a dimension is one of"):
        parse_dimension("x", "lr", [1e-5, 1e-3])
    with pytest.raises(ConfigError, match="system 'x': 'learning_rate' is not a run setting"):
        parse_systems({"systems": {"x": {"space": {"learning_rate": {"choice": [1]}}}}}, "t.yaml")


def test_the_best_trial_is_chosen_on_dev_alone():
    trials = [(0, {"lr": 1}, 0.70), (1, {"lr": 2}, 0.75), (2, {"lr": 3}, float("nan")), (3, {"lr": 4}, 0.75)]
    assert best_trial(trials) == (1, {"lr": 2}, 0.75)  # the earliest of equals; NaN never wins


# ----------------------------------------------------------------------------- whole tunings (tiny model)


def write_tuning(folder: Path, model_dir, data_dir, trials: int = 4) -> Path:
    spec = {
        "name": "toy",
        "description": "toy tuning",
        "base": {"task": "conll2003", "model": str(model_dir), "data_dir": str(data_dir), "epochs": 2,
                 "max_train_examples": 60, "output_dir": str(folder / "out"), "cache_dir": str(folder / "cache"),
                 "head": "linear", "seed": 1},
        "trials": trials,
        "sampling_seed": 7,
        "final_seeds": [1, 2],
        "systems": {"frozen_last": {"fixed": {"mode": "feature", "layers": "last"},
                                    "space": {"lr": {"log_uniform": [1e-3, 1e-1]}}}},
    }  # fmt: skip
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _worker(path: str, counts) -> None:
    import torch

    torch.set_num_threads(1)
    counts.put(Tuning(path).run_trials()["frozen_last"])


def _instant_worker(storage: str, lock: str, taken) -> None:
    """A worker whose trials cost nothing, so that its takes crowd the other workers'."""
    from bertprobe.tuning import open_study, run_trials

    rates: list[float] = []

    def objective(settings: dict[str, object]) -> float:
        rates.append(float(settings["lr"]))  # type: ignore[arg-type]
        return 0.0

    try:
        run_trials(open_study(storage, "crowd"), objective, Path(lock))
    finally:
        taken.put(rates)  # even from a worker that failed, which its exit code then shows


def test_the_expected_best_figure_has_whole_trial_counts_and_a_title_inside_it():
    from matplotlib import pyplot

    from bertprobe.tune_report import SystemSummary, draw_expected_max

    summary = SystemSummary("finetune", 20, [0.5 + 0.02 * index for index in range(20)])
    title = "GLUE SST-2, 10% of the training data, 20 trials per system, chosen on held-out training sentences"
    figure = draw_expected_max([summary], title)
    try:
        figure.canvas.draw()
        [axes] = figure.axes
        drawn = axes.title.get_window_extent()
        page = figure.bbox
        assert page.x0 <= drawn.x0 and drawn.x1 <= page.x1 and drawn.y1 <= page.y1  # wrapped, not cut off
        assert axes.title.get_text().replace("\n", " ") == title
        ticks = [tick for tick in axes.get_xticks() if 1 <= tick <= 20]
        assert ticks and all(float(tick).is_integer() for tick in ticks)  # no "2.5 trials"
    finally:
        pyplot.close(figure)


def test_a_worker_takes_each_trial_under_the_study_lock_and_runs_it_outside(tmp_path, monkeypatch):
    """Over SQLite, Optuna's take of a queued trial (read its state, then write it) is not
    atomic; two workers taking at once both got one trial. Takes, and the search for dead
    workers' trials to queue again, are serialized by the lock that queueing uses; runs are
    not."""
    import optuna
    from filelock import FileLock, Timeout

    from bertprobe.tuning import completed, open_study, queue_trials, run_trials

    def held(lock_path: Path) -> bool:
        other = FileLock(str(lock_path))  # a second handle, as another worker's
        try:
            other.acquire(timeout=0)
        except Timeout:
            return True
        other.release()
        return False

    space = {"lr": {"log_uniform": [1e-3, 1e-1]}}
    [system] = parse_systems({"systems": {"frozen_last": {"fixed": {"mode": "feature"}, "space": space}}}, "t.yaml")
    study = open_study(f"sqlite:///{tmp_path / 'study.db'}", "frozen_last")
    lock = tmp_path / "frozen_last.lock"
    queue_trials(study, system, 3, 0, lock)
    taken_under_lock, run_under_lock, dead_sought_under_lock = [], [], []
    take, seek_dead = optuna.storages.RDBStorage.set_trial_state_values, optuna.storages.fail_stale_trials

    def watched_take(storage, trial_id, state, values=None):
        if state == optuna.trial.TrialState.RUNNING:
            taken_under_lock.append(held(lock))
        return take(storage, trial_id, state, values)

    def watched_seek_dead(study) -> None:
        dead_sought_under_lock.append(held(lock))
        seek_dead(study)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", watched_take)
    monkeypatch.setattr(optuna.storages, "fail_stale_trials", watched_seek_dead)

    def objective(settings: dict[str, object]) -> float:
        run_under_lock.append(held(lock))
        return float(settings["lr"])  # type: ignore[arg-type]

    assert run_trials(study, objective, lock) == 3
    assert taken_under_lock == [True, True, True]
    assert run_under_lock == [False, False, False]
    # ours before each take and once more to find none left, and Optuna's own in each take
    assert dead_sought_under_lock == [True] * 7
    assert not held(lock)  # released after the last take too
    assert [(index, value) for index, _, value in completed(study)] == [
        (index, settings["lr"]) for index, settings in enumerate(system.trials(3, 0))
    ]


@pytest.mark.slow
def test_four_workers_crowding_one_sqlite_study_take_each_trial_once(tmp_path):
    """Trials that take no time make every worker take at once, over and over: without
    turns, two workers soon got one trial and one of them failed."""
    from bertprobe.tuning import System, open_study, queue_trials

    storage, lock = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "crowd.lock"
    system = System("crowd", {"mode": "feature"}, (parse_dimension("crowd", "lr", {"log_uniform": [1e-5, 1e-1]}),))
    queue_trials(open_study(storage, "crowd"), system, 60, 0, lock)
    context = multiprocessing.get_context("spawn")
    taken = context.Queue()
    workers = [context.Process(target=_instant_worker, args=(storage, str(lock), taken)) for _ in range(4)]
    for worker in workers:
        worker.start()
    rates = [rate for _ in workers for rate in taken.get(timeout=300)]  # each trial's own learning rate
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert sorted(rates) == sorted(settings["lr"] for settings in system.trials(60, 0))  # all 60, none twice


@pytest.mark.slow
def test_two_workers_share_one_study_and_run_each_trial_once(tiny_model_dir, toy_data_dir, tmp_path):
    path = write_tuning(tmp_path, tiny_model_dir, toy_data_dir, trials=6)
    context = multiprocessing.get_context("spawn")
    counts = context.Queue()
    workers = [context.Process(target=_worker, args=(str(path), counts)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert sum(counts.get(timeout=5) for _ in workers) == 6  # between them, every trial once
    tuning = Tuning(path)
    [system] = tuning.systems
    assert [index for index, _, _ in tuning.trials_of(system)] == list(range(6))
    assert [settings for _, settings, _ in tuning.trials_of(system)] == system.trials(6, 7)  # the seeded draws
    assert len(list((tmp_path / "out" / "trials").glob("*.json"))) == 6
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 3  # one cache per split, shared


@pytest.mark.slow
def test_an_interrupted_tuning_resumes_without_repeating_finished_trials(
    tiny_model_dir, toy_data_dir, tmp_path, monkeypatch
):
    import bertprobe.tuning as tuning_module

    path = write_tuning(tmp_path, tiny_model_dir, toy_data_dir, trials=4)
    real, runs = tuning_module.run_or_read, []

    def interrupted(config):
        if len(runs) == 2:
            raise KeyboardInterrupt  # stands in for Ctrl-C or a killed job during the third trial
        runs.append(config.run_name())
        return real(config)

    monkeypatch.setattr(tuning_module, "run_or_read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Tuning(path).run_trials()
    monkeypatch.setattr(tuning_module, "run_or_read", lambda config: runs.append(config.run_name()) or real(config))
    assert Tuning(path).run_trials() == {"frozen_last": 2}  # the interrupted trial and the one never started
    assert len(runs) == 4 and len(set(runs)) == 4  # no finished trial ran again
    tuning = Tuning(path)
    assert [index for index, _, _ in tuning.trials_of(tuning.systems[0])] == [0, 1, 2, 3]


@pytest.mark.slow
def test_finals_rerun_the_best_dev_trial_and_the_report_shows_the_budget(tiny_model_dir, toy_data_dir, tmp_path):
    from bertprobe.tune_report import plot_expected_max, render_tuning_markdown, summarize

    path = write_tuning(tmp_path, tiny_model_dir, toy_data_dir, trials=3)
    with pytest.raises(ConfigError, match="0 of 3 trials are complete; finish them first"):
        Tuning(path).run_finals()
    tuning = Tuning(path)
    tuning.run_trials()
    trials = tuning.trials_of(tuning.systems[0])
    records = {
        json.loads(p.read_text())["config"]["lr"]: json.loads(p.read_text())
        for p in (tmp_path / "out" / "trials").glob("*.json")
    }
    by_dev = max(trials, key=lambda trial: (trial[2], -trial[0]))
    assert by_dev[2] == records[by_dev[1]["lr"]]["metrics"]["dev"]["f1"]
    tuning.run_finals()
    finals = [json.loads(p.read_text()) for p in (tmp_path / "out" / "final").glob("*.json")]
    assert sorted(r["config"]["seed"] for r in finals) == [1, 2]
    assert {r["config"]["lr"] for r in finals} == {by_dev[1]["lr"]}  # the best on dev, whatever test says
    assert all("tuned" in r["config"]["tags"] for r in finals)  # rows of their own: "Fine-tuning (tuned)"
    trial_tags = [json.loads(p.read_text())["config"]["tags"] for p in (tmp_path / "out" / "trials").glob("*.json")]
    assert trial_tags and not any("tuned" in tags for tags in trial_tags)

    [summary] = summarize(tuning)
    assert summary.best_index == by_dev[0] and len(summary.final_dev) == 2
    table = render_tuning_markdown([summary], "toy")
    [row] = [line for line in table.splitlines() if line.startswith("| frozen_last")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "3 of 3"
    expected_full = without_replacement([t[2] for t in trials], 3)
    assert cells[4] == f"{100 * expected_full.mean:.2f} ± 0.00" and cells[3] == "—"  # no 5 of 3
    assert cells[5] == f"{100 * by_dev[2]:.2f} (#{by_dev[0] + 1})"
    assert plot_expected_max([summary], tmp_path / "curve.png", "toy").stat().st_size > 0

    # the report reads the records, not the study: a fresh clone (no study.db) renders it the same
    study_files = list((tmp_path / "out").glob("study.db*"))
    assert study_files
    for study_file in study_files:
        study_file.unlink()
    assert render_tuning_markdown(summarize(Tuning(path)), "toy") == table
    assert not list((tmp_path / "out").glob("study.db*"))  # and made no study


@pytest.mark.parametrize("name", ["tune_conll_1pct", "tune_conll_10pct", "tune_sst2_10pct"])
def test_the_committed_tuning_files_parse_and_every_trial_is_a_valid_run(name):
    from bertprobe.tuning import load_tuning, trial_config

    path = Path(__file__).resolve().parent.parent / "experiments" / f"{name}.yaml"
    tuning = load_tuning(path)
    systems = parse_systems(tuning, path)
    assert [s.name for s in systems] == ["finetune", "partial", "lora", "frozen_last4concat"]
    for system in systems:
        for settings in system.trials(tuning["trials"], tuning["sampling_seed"]):
            trial_config(tuning, system, settings, {})  # resolved: every option valid


def test_the_command_line_reports_an_unknown_system_and_an_empty_study(tiny_model_dir, toy_data_dir, tmp_path):
    from bertprobe.cli import main

    path = write_tuning(tmp_path, tiny_model_dir, toy_data_dir)
    assert main(["tune", str(path), "--systems", "nope"]) == 2
    report = tmp_path / "report.md"
    assert main(["tune", str(path), "--report", str(report)]) == 0
    [row] = [line for line in report.read_text().splitlines() if line.startswith("| frozen_last")]
    assert row.startswith("| frozen_last | 0 of 4 | — |")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_whose_worker_was_killed_runs_again_when_a_worker_next_finds_the_queue_empty(
    tiny_model_dir, toy_data_dir, tmp_path
):
    import time

    import optuna

    path = write_tuning(tmp_path, tiny_model_dir, toy_data_dir, trials=3)
    first = Tuning(path, grace=1)
    assert first.run_trials() == {"frozen_last": 3}
    [system] = first.systems
    study = first.study(system)
    # a worker takes trial 1 again (as if its record had been lost) and is killed mid-run:
    # the trial stays "running", its heartbeat falls silent, and no trial is waiting
    (record,) = [p for p in (tmp_path / "out" / "trials").glob("*.json") if json.loads(p.read_text())["config"]["lr"]
                 == system.trials(3, 7)[1]["lr"]]  # fmt: skip
    record.unlink()
    study.enqueue_trial({}, user_attrs={"index": 1, "settings": system.trials(3, 7)[1]})
    killed = study.ask()
    study._storage.record_heartbeat(killed._trial_id)
    time.sleep(2)  # past the grace period
    assert Tuning(path, grace=1).run_trials() == {"frozen_last": 1}  # the dead trial, again
    assert record.is_file()
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and optuna.trial.TrialState.RUNNING not in states
