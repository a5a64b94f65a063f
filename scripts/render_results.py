"""Re-render every committed results table (and, on request, figure) from its records, and
keep the copies of the tables in the documents (:data:`DOCUMENTS`: the README and
docs/results.md) in step.

    python scripts/render_results.py              # the tables under results/, then the documents
    python scripts/render_results.py --figures    # and every PNG
    python scripts/render_results.py --figures table7_minilm.png   # and that one

Run it after a record lands. Each table in :data:`RENDERED` is rendered again as
``bertprobe table`` would; where one changed, every table of a document that copied one of
its old tables is replaced by the table at the same place in the new rendering, and every
line of a document that copied a changed note line by the new line. Paragraphs that quote
numbers are not rewritten: ``tests/test_results.py`` names each ± pair or p value that no
longer rounds from a table, for a person to edit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"

#: the documents that copy results tables, relative to the repository root
DOCUMENTS: tuple[str, ...] = ("README.md", "docs/results.md")

#: The layout (or figure kind) of a tuning's report: ``tuning:`` and the tuning file, rendered as
#: ``bertprobe tune FILE --report`` (``--figure``) renders it, from the records of the folder.
TUNING = "tuning:"

#: rendered file under results/ -> (records folder under results/, ``bertprobe table --layout``)
RENDERED: dict[str, tuple[str, str]] = {
    "table7_minilm.md": ("table7_minilm", "table7"),
    "layers_minilm.md": ("layers_minilm_probe", "table7"),
    "learning_curve_minilm.md": ("learning_curve_minilm", "table7"),
    "learning_curve_lr_minilm.md": ("learning_curve_lr_minilm", "table7"),
    "tune_or_not_minilm.md": ("tune_or_not_minilm", "tasks"),
    "frozen_pooling_minilm.md": ("frozen_pooling_minilm", "tasks"),
    "conll2003_minilm/table.md": ("conll2003_minilm", "table7"),
    "tune_conll_1pct_minilm.md": ("tune_conll_1pct_minilm", f"{TUNING}experiments/tune_conll_1pct.yaml"),
    "tune_conll_1pct_minilm_final.md": ("tune_conll_1pct_minilm/final", "table7"),
    "tune_conll_10pct_minilm.md": ("tune_conll_10pct_minilm", f"{TUNING}experiments/tune_conll_10pct.yaml"),
    "tune_conll_10pct_minilm_final.md": ("tune_conll_10pct_minilm/final", "table7"),
    "tune_sst2_10pct_minilm.md": ("tune_sst2_10pct_minilm", f"{TUNING}experiments/tune_sst2_10pct.yaml"),
    "tune_sst2_10pct_minilm_final.md": ("tune_sst2_10pct_minilm/final", "tasks"),
    "sst2_10pct_defaults_minilm.md": ("sst2_10pct_defaults_minilm", "tasks"),
}

#: figure under results/ -> (records folders under results/, ``bertprobe plot --kind``)
FIGURES: dict[str, tuple[tuple[str, ...], str]] = {
    "table7_minilm.png": (("table7_minilm",), "table7"),
    "layers_minilm.png": (("layers_minilm_probe", "conll2003_minilm"), "layers"),
    "learning_curve_minilm.png": (("learning_curve_minilm",), "curve"),
    "cost_minilm.png": (("learning_curve_minilm",), "cost"),
    "tune_or_not_minilm_cost.png": (("tune_or_not_minilm",), "cost"),
    "tune_conll_1pct_minilm.png": (("tune_conll_1pct_minilm",), f"{TUNING}experiments/tune_conll_1pct.yaml"),
    "tune_conll_10pct_minilm.png": (("tune_conll_10pct_minilm",), f"{TUNING}experiments/tune_conll_10pct.yaml"),
    "tune_sst2_10pct_minilm.png": (("tune_sst2_10pct_minilm",), f"{TUNING}experiments/tune_sst2_10pct.yaml"),
    "learning_curve_tuned_minilm.png": (
        ("learning_curve_minilm", "tune_conll_1pct_minilm/final", "tune_conll_10pct_minilm/final"),
        "curve",
    ),
}


def markdown_tables(text: str) -> list[list[str]]:
    """The runs of consecutive lines that start with ``|``, each one table."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def render(folder: str, layout: str, results: Path = RESULTS) -> str:
    """What ``bertprobe table results/FOLDER --layout LAYOUT`` prints as Markdown, or for a
    ``tuning:FILE`` layout what ``bertprobe tune FILE --report`` writes."""
    from bertprobe.record import load_records
    from bertprobe.table import LAYOUTS

    if layout.startswith(TUNING):
        from bertprobe.tune_report import render_tuning_markdown, summarize

        tuning, title = committed_tuning(folder, layout[len(TUNING) :], results)
        return render_tuning_markdown(summarize(tuning), title)
    render_markdown, _ = LAYOUTS[layout]
    return render_markdown(load_records(results / folder))


def committed_tuning(folder: str, tuning_file: str, results: Path = RESULTS):
    """The tuning of ``tuning_file`` whose records are under ``results/folder``, with the
    options its trials ran with (read from a trial's record: the model and the data folder
    name the runs) and that folder as its output; and its report's title."""
    from bertprobe.record import load_records
    from bertprobe.tuning import Tuning

    config = load_records(results / folder / "trials")[0]["config"]
    overrides = {"model": config["model"], "data_dir": config["data_dir"], "output_dir": str(results / folder)}
    tuning = Tuning(ROOT / tuning_file, overrides=overrides)
    return tuning, str(tuning.spec.get("description") or tuning.spec.get("name", "tuning"))


def sync_copies(document: str, old: str, new: str) -> tuple[str, int]:
    """``document`` with its copies of ``old``'s tables and note lines replaced by ``new``'s,
    and the number of copies replaced.

    Tables pair up by position, so both renderings must hold as many: a section or table
    that appeared or went away is a change of shape that a person should place. A table is
    replaced only whole (a lone line such as ``|---|---|`` occurs in many tables); a note
    line only where it is a whole line of ``document``.
    """
    old_tables, new_tables = markdown_tables(old), markdown_tables(new)
    if len(old_tables) != len(new_tables):
        raise ValueError(
            f"the rendering went from {len(old_tables)} to {len(new_tables)} tables: "
            "place the new ones in the documents by hand"
        )
    replaced = 0
    for before, after in zip(old_tables, new_tables, strict=True):
        before_text, after_text = "\n".join(before) + "\n", "\n".join(after) + "\n"
        if before_text != after_text:
            replaced += document.count(before_text)
            document = document.replace(before_text, after_text)
    old_notes = [line for line in old.splitlines() if line and not line.startswith("|")]
    new_notes = [line for line in new.splitlines() if line and not line.startswith("|")]
    if len(old_notes) != len(new_notes):
        raise ValueError(
            f"the rendering went from {len(old_notes)} to {len(new_notes)} lines of notes: "
            "place the new ones in the documents by hand"
        )
    changes = {before: after for before, after in zip(old_notes, new_notes, strict=True) if before != after}
    lines = document.split("\n")
    replaced += sum(line in changes for line in lines)
    return "\n".join(changes.get(line, line) for line in lines), replaced


def rerender(results: Path, documents: Sequence[Path], rendered: dict[str, tuple[str, str]]) -> int:
    """Re-render each of ``rendered`` under ``results`` and sync every one of ``documents``;
    0, or 1 when a rendering changed shape (then nothing is written, and the message says
    which)."""
    from bertprobe.results import write_text_atomic

    texts = {path: path.read_text(encoding="utf-8") for path in documents}
    changed: dict[Path, str] = {}
    for name, (folder, layout) in rendered.items():
        path = results / name
        old, new = path.read_text(encoding="utf-8"), render(folder, layout, results)
        if old == new:
            print(f"{path}: unchanged")
            continue
        copies = []
        for document, text in texts.items():
            try:
                texts[document], replaced = sync_copies(text, old, new)
            except ValueError as error:  # write nothing: a second run would find the tables new already
                print(f"{path}: {error}; nothing written", file=sys.stderr)
                return 1
            copies.append(f"{replaced} cop{'y' if replaced == 1 else 'ies'} in {document.name}")
        changed[path] = new
        print(f"{path}: re-rendered; {', '.join(copies)} replaced")
    for path, text in changed.items():
        write_text_atomic(path, text)
    if changed:
        for document, text in texts.items():
            write_text_atomic(document, text)
    return 0


def redraw(results: Path, figures: dict[str, tuple[tuple[str, ...], str]]) -> None:
    from bertprobe.plots import PLOTS
    from bertprobe.record import load_records

    for name, (folders, kind) in figures.items():
        if kind.startswith(TUNING):
            from bertprobe.tune_report import plot_expected_max, summarize

            [folder] = folders
            tuning, title = committed_tuning(folder, kind[len(TUNING) :], results)
            print(f"{plot_expected_max(summarize(tuning), results / name, title)}: re-drawn")
            continue
        records = [record for folder in folders for record in load_records(results / folder)]
        print(f"{PLOTS[kind](records, results / name)}: re-drawn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--figures",
        nargs="*",
        choices=sorted(FIGURES),
        help="also re-draw these PNGs under results/ (all of them when none is named)",
    )
    args = parser.parse_args(argv)
    status = rerender(RESULTS, [ROOT / document for document in DOCUMENTS], RENDERED)
    if status == 0 and args.figures is not None:
        redraw(RESULTS, {name: FIGURES[name] for name in args.figures or FIGURES})
    return status


if __name__ == "__main__":
    sys.exit(main())
