"""Experiment files: a protocol (rows x seeds, optional dev-set grid) run as one command.

An experiment file is YAML::

    name: table7
    base: {task: conll2003, model: bert-base-cased, context: document, epochs: 3}
    seeds: [1, 2, 3, 4, 5]
    runs:
      - {mode: finetune, lr: 5.0e-5}
      - {mode: feature, layers: last4concat}
    grid:                      # optional; only with --grid
      finetune: {batch_size: [16, 32], lr: [5.0e-5, 3.0e-5, 2.0e-5], epochs: [2, 3, 4]}

Each run is ``base`` updated by the row, then by the command line's overrides (another
model, data folder, output folder...), for every seed. A run whose record already exists
(under its name or an older one, :func:`bertprobe.config.find_record`) is skipped, so an
interrupted sweep resumes where it stopped. Feature runs share one frozen-feature cache:
every feature row stores the union of the layers that all feature rows need, so the
encoder runs over each split once for the whole ablation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

from bertprobe.config import RunConfig, find_record, option_type
from bertprobe.errors import ConfigError
from bertprobe.layer_spec import LayerSpec
from bertprobe.modes import Mode

EXPERIMENT_KEYS = {"name", "description", "base", "seeds", "runs", "grid"}


def load_yaml_mapping(path: str | Path, known: set[str]) -> dict[str, object]:
    """A YAML file holding a mapping whose keys are all in ``known``."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    unknown = set(loaded) - known
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return loaded


def load_experiment(path: str | Path) -> dict[str, object]:
    experiment = load_yaml_mapping(path, EXPERIMENT_KEYS)
    if not experiment.get("runs"):
        raise ConfigError(f"{path}: an experiment file needs a 'runs' list")
    return experiment


def _cache_union(rows: list[dict[str, object]]) -> str | None:
    """Every feature row's strategy, ``;``-separated: the layers one shared cache must hold."""
    specs = list(dict.fromkeys(str(row.get("layers", "last")) for row in rows if row.get("mode") == Mode.FEATURE))
    for spec in specs:
        LayerSpec.parse(spec)
    return ";".join(specs) or None


def expand(experiment: dict[str, object], overrides: dict[str, object], use_grid: bool = False) -> Iterator[RunConfig]:
    """Every configuration of the experiment, validated, in file order then seed order."""
    base = dict(experiment.get("base") or {})
    seeds = experiment.get("seeds") or [base.get("seed", 42)]
    rows = [dict(row) for row in experiment["runs"]]  # type: ignore[union-attr]
    cache_layers = _cache_union(rows)
    grid = experiment.get("grid") or {}
    for row in rows:
        variants = [{}]
        if use_grid and row.get("mode") in grid:
            axes = grid[row["mode"]]  # type: ignore[index]
            names = list(axes)
            variants = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]
        for variant, seed in itertools.product(variants, seeds):
            values = {**base, **row, **variant, **overrides, "seed": seed}
            if values.get("mode") == Mode.FEATURE and cache_layers is not None:
                values.setdefault("cache_layers", cache_layers)
            values["tags"] = (*values.get("tags", ()), str(experiment.get("name", "sweep")))
            yield RunConfig.from_dict(values).resolved()


def parse_where(clauses: list[str]) -> dict[str, tuple[object, ...]]:
    """``["train_fraction=0.01,0.1", "mode=finetune"]`` -> ``{field: accepted values}``, each
    value converted to the :class:`RunConfig` field's type; ``none`` stands for an unset field."""
    types = {f.name: option_type(f.type) for f in fields(RunConfig)}
    where: dict[str, tuple[object, ...]] = {}
    for clause in clauses:
        name, sep, values = clause.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"--where {clause!r}: expected FIELD=VALUE[,VALUE...], e.g. train_fraction=0.01,0.1")
        if name not in types:
            raise ConfigError(f"--where {clause!r}: no run setting {name!r}; known: {', '.join(sorted(types))}")
        where[name] = tuple(_typed(value.strip(), types[name], clause) for value in values.split(","))
    return where


def _typed(value: str, converter: type, clause: str) -> object:
    if value.lower() == "none":
        return None
    try:
        return converter(value)
    except ValueError:
        raise ConfigError(f"--where {clause!r}: {value!r} is not a {converter.__name__}") from None


def selected(config: RunConfig, where: dict[str, tuple[object, ...]]) -> bool:
    """True when every field named in ``where`` has one of its accepted values."""
    return all(getattr(config, name) in values for name, values in where.items())


def run_sweep(
    experiment: str | Path | dict[str, object],
    overrides: dict[str, object],
    use_grid: bool = False,
    dry_run: bool = False,
    where: dict[str, tuple[object, ...]] | None = None,
) -> list[Path]:
    """Run every configuration (those ``where`` selects, if given) whose record does not
    exist yet; return the record paths."""
    loaded = experiment if isinstance(experiment, dict) else load_experiment(experiment)
    configs = [config for config in expand(loaded, overrides, use_grid) if selected(config, where or {})]
    if not configs:
        raise ConfigError(f"--where {where}: no run of the experiment matches")
    paths = []
    for index, config in enumerate(configs, start=1):
        found = find_record(config)  # under its name, or the older name of a record written before a rename
        record = found or config.record_path()
        paths.append(record)
        status = "exists, skipped" if found else ("would run" if dry_run else "running")
        print(f"[{index}/{len(configs)}] {record.stem}: {status}", flush=True)
        if found or dry_run:
            continue
        from bertprobe.train import run

        run(replace(config, resume=True))  # an interrupted run continues from its checkpoint
    return paths


def layer_probe_experiment(
    model: str,
    depth: int,
    base: dict[str, object],
    seeds: list[int],
    with_finetune: bool = False,
    probe: dict[str, object] | None = None,
) -> dict[str, object]:
    """An experiment (as :func:`run_sweep` takes it) that probes every hidden state of a
    ``depth``-layer model on its own: feature rows with layers ``"0"`` (embeddings) to
    ``str(depth)``, then, if asked, a fine-tuning row as the reference. ``base`` applies to
    every row, ``probe`` (head, learning rate...) to the feature rows only. The rows share
    one frozen-feature cache holding all ``depth + 1`` layers, so the encoder runs once."""
    if depth < 1:
        raise ConfigError(f"a model to probe needs at least one Transformer layer, not {depth}")
    feature = {**(probe or {}), "mode": Mode.FEATURE.value}
    runs: list[dict[str, object]] = [{**feature, "layers": str(layer)} for layer in range(depth + 1)]
    if with_finetune:
        runs.append({"mode": Mode.FINETUNE.value})
    return {"name": "probe-layers", "base": {**base, "model": model}, "seeds": list(seeds), "runs": runs}
