"""Tuning at equal effort: every system gets the same N random-search trials on dev.

A tuning file is YAML::

    name: tune_conll_1pct
    base: {task: conll2003, context: sentence, train_fraction: 0.01, seed: 1}
    trials: 20                 # N, the same for every system
    sampling_seed: 0           # the same seed draws the same trials
    final_seeds: [1, 2, 3]     # the best dev configuration of each system, re-run
    systems:
      finetune: {fixed: {mode: finetune}}                 # the mode's default space
      frozen_last4concat:
        fixed: {mode: feature, layers: last4concat}
        space: {lr: {log_uniform: [1.0e-4, 1.0e-2]}, lstm_hidden: {choice: [128, 256]}}

A dimension is ``{log_uniform: [low, high]}``, ``{uniform: [low, high]}``, ``{int: [low,
high]}`` (both ends included) or ``{choice: [...]}``; a system without ``space`` takes its
mode's entry in :data:`DEFAULT_SPACES`. The N trials of a system are drawn up front from a
generator seeded by ``sampling_seed`` and the system's name, and put in its Optuna study
(``enqueue_trial``): random search, as the expected-maximum estimators assume
(:mod:`bertprobe.expected_max`), the same trials for the same command, and any number of
workers (processes, machines, Slurm array tasks) sharing one study through its storage
take each trial once (they take turns under a file lock in the output folder; workers on
several machines share a database server, whose row locks do the same). Every trial is a
normal run with its record under ``OUTPUT_DIR/trials``, scored on dev; a trial whose
record exists is read, not re-run, and one interrupted mid-run resumes from its checkpoint.
With a database storage, a worker that dies leaves its trial "running"; Optuna's heartbeat
marks it failed after the grace period and it is queued again.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from filelock import FileLock

from bertprobe.config import RunConfig, find_record
from bertprobe.errors import ConfigError
from bertprobe.modes import Mode
from bertprobe.rows import TUNED_TAG
from bertprobe.sweep import load_yaml_mapping

TUNING_KEYS = {"name", "description", "base", "trials", "sampling_seed", "final_seeds", "systems"}
KINDS = ("log_uniform", "uniform", "int", "choice")

#: Search spaces for the paper's systems when a file gives none: learning rates around each
#: mode's default (log-uniform over two decades), the schedule and batch size, and what is
#: particular to a mode (LoRA's rank and scale; the frozen rows' head size).
DEFAULT_SPACES: dict[str, dict[str, dict[str, list[object]]]] = {
    Mode.FINETUNE: {
        "lr": {"log_uniform": [1.0e-5, 1.0e-3]},
        "batch_size": {"choice": [16, 32]},
        "warmup_fraction": {"uniform": [0.0, 0.2]},
    },
    Mode.PARTIAL: {
        "lr": {"log_uniform": [1.0e-5, 1.0e-3]},
        "batch_size": {"choice": [16, 32]},
        "warmup_fraction": {"uniform": [0.0, 0.2]},
    },
    Mode.LORA: {
        "lr": {"log_uniform": [1.0e-4, 1.0e-2]},
        "batch_size": {"choice": [16, 32]},
        "lora_rank": {"choice": [4, 8, 16, 32]},
        "lora_alpha": {"choice": [8.0, 16.0, 32.0, 64.0]},
    },
    Mode.FEATURE: {
        "lr": {"log_uniform": [1.0e-4, 1.0e-2]},
        "batch_size": {"choice": [16, 32]},
        "lstm_hidden": {"choice": [128, 256, 512]},
        "dropout": {"uniform": [0.0, 0.5]},
    },
}


@dataclass(frozen=True)
class Dimension:
    """One hyper-parameter's range: ``kind`` is one of :data:`KINDS`."""

    name: str
    kind: str
    values: tuple[object, ...]

    def sample(self, rng) -> object:
        """One value drawn from ``rng`` (a ``numpy.random.Generator``)."""
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        low, high = self.values
        if self.kind == "int":
            return int(rng.integers(int(low), int(high) + 1))
        if self.kind == "uniform":
            return float(rng.uniform(float(low), float(high)))
        return float(math.exp(rng.uniform(math.log(float(low)), math.log(float(high)))))


@dataclass(frozen=True)
class System:
    """A system to tune: the settings it always has and the space its trials are drawn from."""

    name: str
    fixed: dict[str, object]
    space: tuple[Dimension, ...]

    def trials(self, count: int, sampling_seed: int) -> list[dict[str, object]]:
        """The first ``count`` trials' settings, the same for the same seed and name: a
        longer study extends a shorter one."""
        import numpy as np

        rng = np.random.default_rng([sampling_seed, zlib.crc32(self.name.encode())])
        return [{dimension.name: dimension.sample(rng) for dimension in self.space} for _ in range(count)]


def parse_dimension(system: str, name: str, spec: object) -> Dimension:
    where = f"system {system!r}, {name}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: a dimension is one of {', '.join(f'{{{k}: ...}}' for k in KINDS)}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} needs a list, got {values!r}")
    if kind != "choice":
        if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) or not values[0] < values[1]:
            raise ConfigError(f"{where}: {kind} needs [low, high] with low < high, got {values!r}")
        if kind == "log_uniform" and values[0] <= 0:
            raise ConfigError(f"{where}: log_uniform needs a positive low end, got {values[0]}")
    return Dimension(name, kind, tuple(values))


def parse_systems(tuning: dict[str, object], path: str | Path) -> list[System]:
    """The file's systems, checked: every fixed setting and dimension names a run setting."""
    known = {field.name for field in fields(RunConfig)}
    systems = tuning.get("systems")
    if not isinstance(systems, dict) or not systems:
        raise ConfigError(f"{path}: a tuning file needs a 'systems' mapping of name -> {{fixed, space}}")
    parsed = []
    for name, entry in systems.items():
        entry = entry or {}
        fixed = dict(entry.get("fixed") or {})
        mode = str(fixed.get("mode", Mode.FINETUNE))
        space = entry.get("space", DEFAULT_SPACES.get(mode))
        if not space:
            raise ConfigError(f"{path}: system {name!r} has no space and mode {mode!r} has no default one")
        for key in [*fixed, *space]:
            if key not in known:
                raise ConfigError(f"{path}: system {name!r}: {key!r} is not a run setting")
        parsed.append(System(str(name), fixed, tuple(parse_dimension(name, k, v) for k, v in space.items())))
    return parsed


def load_tuning(path: str | Path) -> dict[str, object]:
    tuning = load_yaml_mapping(path, TUNING_KEYS)
    trials = tuning.get("trials", 20)
    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"{path}: trials must be a positive integer, got {trials!r}")
    parse_systems(tuning, path)
    return tuning


def trial_config(tuning: dict[str, object], system: System, settings: dict[str, object], overrides: dict[str, object],
                 seed: int | None = None, folder: str = "trials") -> RunConfig:  # fmt: skip
    """The run of one trial (or, with ``seed`` and ``folder="final"``, one final seed)."""
    base = dict(tuning.get("base") or {})
    values = {**base, **system.fixed, **settings, **overrides}
    if seed is not None:
        values["seed"] = seed
    output = Path(str(values.get("output_dir", RunConfig.output_dir)))
    values["output_dir"] = str(output / folder)
    values["tags"] = (str(tuning.get("name", "tune")), system.name, *((TUNED_TAG,) if seed is not None else ()))
    return RunConfig.from_dict(values).resolved()


def study_name(tuning: dict[str, object], system: System) -> str:
    return f"{tuning.get('name', 'tune')}/{system.name}"


def default_storage(tuning: dict[str, object], overrides: dict[str, object]) -> str:
    """A SQLite file in the output folder: one machine's workers share it; for many
    machines, give a database URL every machine reaches (``--storage``)."""
    output = Path(str(overrides.get("output_dir") or (tuning.get("base") or {}).get("output_dir") or "results/tune"))
    return f"sqlite:///{(output / 'study.db').resolve()}"


def open_study(storage: str, name: str, heartbeat: int = 60, grace: int = 300):
    """The study ``name`` in ``storage``, made if need be. Database storages beat a heart for
    each running trial; one silent for ``grace`` seconds (its worker died) is queued again."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if storage.startswith(("sqlite:", "postgresql", "mysql")):
            storage_object = optuna.storages.RDBStorage(
                storage, heartbeat_interval=heartbeat, grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            )  # fmt: skip
        else:  # a journal file: no heartbeat, so a killed worker's trial stays "running"
            storage_object = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        return optuna.create_study(study_name=name, storage=storage_object, direction="maximize", load_if_exists=True)


def queue_trials(study, system: System, count: int, sampling_seed: int, lock_path: Path) -> None:
    """Put the system's first ``count`` trials in its study, once: a study made with fewer
    gets the rest, and failed ones are queued again (:func:`requeue_failed`); workers
    starting together take turns under a file lock."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        requeue_failed(study)
        queued = int(study.user_attrs.get("queued", 0))
        for index, settings in enumerate(system.trials(count, sampling_seed)):
            if index >= queued:
                study.enqueue_trial({}, user_attrs={"index": index, "settings": settings})
        study.set_user_attr("queued", max(queued, count))


def requeue_failed(study) -> list[int]:
    """Queue again every trial that failed (an error or an interrupt in its run) and has no
    later attempt complete, queued or running: an interrupted tuning continues where it
    stopped, and the run itself resumes from its checkpoint. Returns the trial indices."""
    import optuna

    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    alive = {t.user_attrs.get("index") for t in trials if t.state in (states.COMPLETE, states.WAITING, states.RUNNING)}
    again: dict[int, dict[str, object]] = {}
    for trial in trials:
        index = trial.user_attrs.get("index")
        if trial.state == states.FAIL and index is not None and index not in alive:
            again[int(index)] = dict(trial.user_attrs)
    for index in sorted(again):
        study.enqueue_trial({}, user_attrs=again[index])
    return sorted(again)


def trials_in_state(study, state: str) -> int:
    """How many of the study's trials are in ``state`` (an Optuna ``TrialState`` name)."""
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState[state],)))


def waiting_trials(study) -> int:
    return trials_in_state(study, "WAITING")


def run_trials(study, objective: Callable[[dict[str, object]], float], lock_path: Path) -> int:
    """Take the study's queued trials one by one until none is left; return how many this
    worker ran. Workers take turns to take a trial, and to queue again a dead worker's,
    under the file lock that :func:`queue_trials` uses: over SQLite, Optuna's own take (a
    read, then a write) is not atomic, so two workers at once could both take one trial.
    The lock is held from before Optuna takes the trial until its run begins, never during
    the run. A trial that Optuna made up when the queue ran dry between a check and a take
    (another worker was quicker) is pruned, never run."""
    import optuna

    ran = 0
    lock = FileLock(str(lock_path))

    def one(trial) -> float:
        nonlocal ran
        lock.release()  # the trial is this worker's now: let the others take theirs
        if "index" not in trial.user_attrs:
            raise optuna.TrialPruned("no queued trial was left")
        ran += 1
        return objective(trial.user_attrs["settings"])

    def any_left() -> bool:
        with lock:
            return bool(requeue_dead(study) or waiting_trials(study))

    while any_left():
        lock.acquire()
        try:
            study.optimize(one, n_trials=1)
        finally:
            if lock.is_locked:  # Optuna failed before the run began
                lock.release()
    return ran


def requeue_dead(study) -> int:
    """Fail the running trials whose worker died (a database storage's heartbeat silent for
    the grace period), so that the retry callback queues each again; how many. Optuna looks
    only when a worker starts a trial, so a worker that finds the queue empty asks first:
    a trial whose worker was killed is then run again, not left running for ever."""
    import warnings

    import optuna

    before = waiting_trials(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return waiting_trials(study) - before


def completed(study) -> list[tuple[int, dict[str, object], float]]:
    """(index, settings, dev score) of each completed trial, in index order; a retried
    trial counts once."""
    import optuna

    done = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "index" in trial.user_attrs and trial.value is not None:
            done[int(trial.user_attrs["index"])] = (trial.user_attrs["settings"], float(trial.value))
    return [(index, *done[index]) for index in sorted(done)]


def best_trial(trials: list[tuple[int, dict[str, object], float]]) -> tuple[int, dict[str, object], float]:
    """The trial with the best dev score (the earliest among equals); NaN scores never win.
    Test scores play no part: they are not even read."""
    scored = [trial for trial in trials if math.isfinite(trial[2])]
    if not scored:
        raise ConfigError("no trial has a finite dev score yet")
    return max(scored, key=lambda trial: (trial[2], -trial[0]))


def dev_score(record: dict[str, object], split: str = "dev") -> float:
    """The record's primary metric on ``split`` (``dev`` or ``test``); NaN where it has none."""
    metric = record["task"]["primary_metric"]  # type: ignore[index]
    value = ((record["metrics"] or {}).get(split) or {}).get(metric)  # type: ignore[union-attr]
    return float("nan") if value is None else float(value)


def run_or_read(config: RunConfig) -> dict[str, object]:
    """The run's record: read if it exists, else trained (resuming its checkpoint, if any)."""
    from bertprobe.results import read_record

    if (path := find_record(config)) is not None:
        return read_record(path)
    from bertprobe.train import run

    return run(replace(config, resume=True))


def selected_systems(tuning: dict[str, object], path: str | Path, only: list[str] | None) -> list[System]:
    systems = parse_systems(tuning, path)
    if not only:
        return systems
    names = [system.name for system in systems]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ConfigError(f"--systems: {path} has no system {', '.join(unknown)}; it has {', '.join(names)}")
    return [system for system in systems if system.name in only]


@dataclass
class Tuning:
    """A tuning file with the command line's choices: where its studies live, how many
    trials each system gets, which systems, and the run settings to override."""

    path: str | Path
    trials: int | None = None
    storage: str | None = None
    only: list[str] | None = None
    overrides: dict[str, object] | None = None
    heartbeat: int = 60  # seconds between a running trial's heartbeats (database storages)
    grace: int = 300  # seconds without one before the trial counts as dead and is queued again

    def __post_init__(self) -> None:
        self.spec = load_tuning(self.path)
        self.overrides = dict(self.overrides or {})
        self.count = self.trials or int(self.spec.get("trials", 20))
        self.storage = self.storage or default_storage(self.spec, self.overrides)
        self.systems = selected_systems(self.spec, self.path, self.only)

    def study(self, system: System):
        """The system's study; workers on this machine (or sharing the output folder) open
        it in turn, since creating a new database's tables at once fails."""
        locks = self.output_dir() / ".locks"
        locks.mkdir(parents=True, exist_ok=True)  # the study's folder too, for its SQLite file
        with FileLock(str(locks / "storage.lock")):
            return open_study(self.storage, study_name(self.spec, system), self.heartbeat, self.grace)

    def output_dir(self) -> Path:
        base = dict(self.spec.get("base") or {})
        return Path(str(self.overrides.get("output_dir") or base.get("output_dir") or RunConfig.output_dir))

    @property
    def sampling_seed(self) -> int:
        return int(self.spec.get("sampling_seed", 0))

    def run_trials(self) -> dict[str, int]:
        """Run (or read) every system's first ``count`` trials; how many ran in this worker."""
        seed = self.sampling_seed
        ran = {}
        for system in self.systems:
            study = self.study(system)
            lock = self.output_dir() / ".locks" / f"{study_name(self.spec, system).replace('/', '--')}.lock"
            queue_trials(study, system, self.count, seed, lock)

            def objective(settings: dict[str, object], system: System = system) -> float:
                return dev_score(run_or_read(trial_config(self.spec, system, settings, self.overrides)))

            ran[system.name] = run_trials(study, objective, lock)
            done = len([t for t in completed(study) if t[0] < self.count])
            print(f"{system.name}: {done}/{self.count} trials complete ({ran[system.name]} run by this worker)")
            if done < self.count and (running := trials_in_state(study, "RUNNING")):
                print(
                    f"{system.name}: {running} trial(s) still running in other workers; one whose worker died is "
                    f"queued again after {self.grace} s without a heartbeat: then run this command again"
                )
        return ran

    def trials_of(self, system: System) -> list[tuple[int, dict[str, object], float]]:
        """(index, settings, dev score) of each of the system's first ``count`` trials whose
        record exists, in index order. Read from the records, not the study: the study queues
        the work, the records are the results, so a report or the finals need only the
        committed records (the same options give the same trials and the same names)."""
        from bertprobe.results import read_record

        found = []
        for index, settings in enumerate(system.trials(self.count, self.sampling_seed)):
            if (path := find_record(trial_config(self.spec, system, settings, self.overrides))) is not None:
                found.append((index, settings, dev_score(read_record(path))))
        return found

    def final_configs(self, system: System, trials: list[tuple[int, dict[str, object], float]]) -> list[RunConfig]:
        """The best dev trial's settings, among the system's ``trials`` (:meth:`trials_of`),
        with each of the file's final seeds."""
        _, settings, _ = best_trial(trials)
        seeds = self.spec.get("final_seeds") or [1, 2, 3]
        return [trial_config(self.spec, system, settings, self.overrides, seed, "final") for seed in seeds]

    def run_finals(self) -> None:
        for system in self.systems:
            trials = self.trials_of(system)
            if len(trials) < self.count:
                raise ConfigError(
                    f"{system.name}: {len(trials)} of {self.count} trials are complete; finish them first "
                    f"(bertprobe tune {self.path}) so every system is chosen from the same budget"
                )
            for config in self.final_configs(system, trials):
                record = run_or_read(config)
                print(f"{system.name} seed {config.seed}: dev {dev_score(record):.4f}")
