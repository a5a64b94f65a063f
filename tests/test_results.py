"""The committed results are what their records say: every rendered table under
``results/`` equals ``bertprobe table`` run on its records now, and every results table in
the documents that show results (the README and docs/results.md) appears, line for line, in
one of those renderings, and so does every mean ± std and p value their prose quotes (in
any document: benchmarks/README.md and the other docs too). A number typed in by hand, or a
table or paragraph left behind when a record landed, fails here; so does a file that a
document or the notes beside the records name that is not there."""

from __future__ import annotations

import importlib.util
import posixpath
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the registry of rendered files and figures, and the renderer, that re-render them after a record lands
render_results = load_script(ROOT / "scripts" / "render_results.py")
RENDERED: dict[str, tuple[str, str]] = render_results.RENDERED
FIGURES: dict[str, tuple[tuple[str, ...], str]] = render_results.FIGURES
render = render_results.render
DOCUMENTS: tuple[str, ...] = render_results.DOCUMENTS  # the README and docs/results.md: they copy tables
markdown_tables = render_results.markdown_tables
sync_copies = render_results.sync_copies
rerender = render_results.rerender

# prose beside the records (how the runs were made); it may hold no results table
NOTES: set[str] = {"readme_step2/NOTES.md", "readme_make_main/NOTES.md", "table7_minilm/RUNS.md"}

# every document a reader is pointed to: the ones that copy results tables, the rest of docs/
# and the benchmarks' README, which cites measured numbers
READER_DOCUMENTS: list[str] = sorted(
    {*DOCUMENTS, "benchmarks/README.md", *(path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md"))}
)


def read(document: str) -> str:
    return (ROOT / document).read_text(encoding="utf-8")


def results_tables(document: str) -> list[list[str]]:
    return [table for table in markdown_tables(read(document)) if table[0].startswith("| System |")]


def test_the_documents_are_all_here():
    assert {"README.md", "docs/results.md", "docs/record.md", "benchmarks/README.md"} <= set(READER_DOCUMENTS)
    assert all((ROOT / document).is_file() for document in READER_DOCUMENTS)


def test_every_rendered_file_is_named_here():
    rendered = [path.relative_to(RESULTS).as_posix() for path in RESULTS.rglob("*.md")]
    assert sorted(rendered) == sorted([*RENDERED, *NOTES])  # a table left out here would go unchecked
    figures = [path.relative_to(RESULTS).as_posix() for path in RESULTS.rglob("*.png")]
    assert sorted(figures) == sorted(FIGURES)  # a figure left out would not be re-drawn


@pytest.mark.parametrize("name", sorted(NOTES))
def test_notes_hold_no_results_table(name: str):
    tables = markdown_tables((RESULTS / name).read_text(encoding="utf-8"))
    assert not [table for table in tables if table[0].startswith("| System |")]


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_rendered_tables_match_their_records(name: str):
    folder, layout = RENDERED[name]
    assert (RESULTS / name).read_text(encoding="utf-8") == render(folder, layout), (
        f"results/{name} is stale: run `bertprobe table results/{folder} --layout {layout} --output results/{name}`"
    )


@pytest.mark.parametrize("document", DOCUMENTS)
def test_results_tables_of_a_document_come_from_the_records(document: str):
    sources = list(RENDERED.values())
    rendered_lines = [render(folder, layout).splitlines() for folder, layout in sources]
    tables = results_tables(document)
    assert tables, f"{document} shows no results table"
    for table in tables:
        found = any(
            lines[start : start + len(table)] == table
            for lines in rendered_lines
            for start in range(len(lines) - len(table) + 1)
        )
        assert found, f"{document}: table starting {table[0][:60]!r} ... {table[-1][:60]!r} is in no rendering"


def test_the_documents_show_the_results_tables():
    assert sum(len(results_tables(document)) for document in DOCUMENTS) >= 5
    assert len(results_tables("docs/results.md")) >= 5  # every section's tables moved there, none was lost


def test_markdown_tables_splits_runs_of_table_lines():
    text = "intro\n| a | b |\n|---|---|\n| 1 | 2 |\n\nprose\n| c |\n"
    assert markdown_tables(text) == [["| a | b |", "|---|---|", "| 1 | 2 |"], ["| c |"]]


def test_sync_copies_replaces_whole_tables_and_note_lines_only():
    old = "Note: two seeds.\n\n| S | F1 |\n|---|---|\n| A | 1.0 |\n\n| S | w |\n|---|---|\n| A | 0.5 |\n"
    new = "Note: three seeds.\n\n| S | F1 |\n|---|---|\n| A | 2.0 |\n\n| S | w |\n|---|---|\n| A | 0.5 |\n"
    other = "| X | Y |\n|---|---|\n| A | 1.0 |\n"  # shares lines with the old table, is no copy of it
    document = f"# R\n\nNote: two seeds.\n\n| S | F1 |\n|---|---|\n| A | 1.0 |\n\nprose\n\n{other}"
    synced, replaced = sync_copies(document, old, new)
    assert synced == f"# R\n\nNote: three seeds.\n\n| S | F1 |\n|---|---|\n| A | 2.0 |\n\nprose\n\n{other}"
    assert replaced == 2  # the table and the note
    with pytest.raises(ValueError, match="from 2 to 1 tables"):
        sync_copies(document, old, "Note: three seeds.\n\n| S | F1 |\n|---|---|\n| A | 2.0 |\n")
    with pytest.raises(ValueError, match="lines of notes"):
        sync_copies(document, old, new + "\n†: resumed.\n")


def test_rerender_updates_a_stale_table_and_its_copies_in_every_document(tmp_path: Path):
    from test_table import make_record, write_records

    results, readme, page = tmp_path / "results", tmp_path / "README.md", tmp_path / "docs" / "results.md"
    write_records(results / "runs", [make_record(seed=1, dev_f1=0.90), make_record(seed=2, dev_f1=0.92)])
    stale = render("runs", "table7", results)
    write_records(results / "runs" / "late", [make_record(seed=3, dev_f1=0.94)])  # a record lands
    (results / "table.md").write_text(stale, encoding="utf-8")
    readme.write_text("# R\n\n" + "\n".join(markdown_tables(stale)[0]) + "\n\nprose\n", encoding="utf-8")
    page.parent.mkdir()
    page.write_text("# Results\n\n" + stale + "\nmore prose\n", encoding="utf-8")
    assert rerender(results, [readme, page], {"table.md": ("runs", "table7")}) == 0
    fresh = render("runs", "table7", results)
    assert fresh != stale and (results / "table.md").read_text(encoding="utf-8") == fresh
    assert readme.read_text(encoding="utf-8") == "# R\n\n" + "\n".join(markdown_tables(fresh)[0]) + "\n\nprose\n"
    assert "| Fine-tuning | 92.00 ± 2.00 | " in readme.read_text(encoding="utf-8")
    assert page.read_text(encoding="utf-8") == "# Results\n\n" + fresh + "\nmore prose\n"  # tables and notes
    # a change of shape (a second model's section) writes nothing
    write_records(results / "runs" / "other", [make_record(model="other/model")])
    before = readme.read_text(encoding="utf-8"), page.read_text(encoding="utf-8")
    assert rerender(results, [readme, page], {"table.md": ("runs", "table7")}) == 1
    assert (results / "table.md").read_text(encoding="utf-8") == fresh
    assert (readme.read_text(encoding="utf-8"), page.read_text(encoding="utf-8")) == before


def test_render_results_syncs_the_documents_that_show_results():
    assert set(DOCUMENTS) == {"README.md", "docs/results.md"}
    assert all((ROOT / document).is_file() for document in DOCUMENTS)


TABLE7_HEADING = re.compile(r"^#+ (?:.*: )?Table 7 with MiniLM(?:: in progress, (\d+) of (\d+) runs)?$", re.MULTILINE)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_table7_heading_counts_the_runs_that_have_landed(document: str):
    from bertprobe.record import load_records, record_config
    from bertprobe.sweep import expand, load_experiment

    headings = TABLE7_HEADING.findall(read(document))
    assert headings, f"{document} has no Table 7 with MiniLM heading"
    experiment = load_experiment(ROOT / "experiments" / "table7.yaml")
    planned = len(list(expand(experiment, {})))
    # the protocol's own runs: its learning-rate grid (experiments/table7_lr.yaml) lands beside them
    tagged = [record_config(record).get("tags") or () for record in load_records(RESULTS / "table7_minilm")]
    records = sum(experiment["name"] in tags for tags in tagged)
    for landed, stated_plan in headings:
        if not landed:  # the heading says the protocol is complete: it must be
            assert records == planned, f"{document}'s Table 7 heading counts no runs, but {records} of {planned} landed"
            continue
        assert int(stated_plan) == planned
        assert int(landed) == records, (
            f"{document}'s Table 7 heading says {landed} runs; results/table7_minilm holds {records}"
        )


# Numbers the prose quotes from the tables: "mean ± std" (or "difference ± its error") pairs and
# Welch's p values, each to the prose's own rounding. When a record lands and the tables move, a
# paragraph left behind fails here.
PLUS_MINUS = re.compile(r"([+-]?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")
PROSE_P = re.compile(r"\bp (?:is )?(<0\.001|\d\.\d+)(?: (?:on \w+ )?and (<0\.001|\d\.\d+))?")
TABLE_P = re.compile(r"(?:\| |\(p )(<0\.001|\d\.\d{3})(?= \||\))")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks and table lines, its lines joined by single
    spaces: a quote that a line break splits (``89.23 ±`` at a line's end) is still read."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return " ".join(line.strip() for line in text.splitlines() if not line.startswith("|"))


def rounds_to(quoted: str, value: float) -> bool:
    """Whether ``value`` shows as ``quoted`` at ``quoted``'s number of decimals."""
    decimals = len(quoted.partition(".")[2])
    return abs(float(quoted) - value) <= 0.5 * 10**-decimals + 1e-9


def unmatched_quotes(text: str, rendered: str) -> list[str]:
    """The ± pairs and p values of ``text``'s prose that no table of ``rendered`` holds."""
    pairs = [(float(mean), float(error)) for mean, error in PLUS_MINUS.findall(rendered)]
    p_values = TABLE_P.findall(rendered)
    missing = []
    for match in PLUS_MINUS.finditer(prose(text)):
        mean, error = match.groups()
        if not any(rounds_to(mean, m) and rounds_to(error, e) for m, e in pairs):
            missing.append(match.group(0))
    for match in PROSE_P.finditer(prose(text)):
        for quoted in filter(None, match.groups()):
            if quoted not in p_values and not any(
                rounds_to(quoted, float(p)) for p in p_values if not p.startswith("<")
            ):
                missing.append(f"p {quoted}")
    return missing


@pytest.mark.parametrize("document", READER_DOCUMENTS)
def test_prose_quotes_the_tables_as_they_are_now(document: str):
    rendered = "\n".join(render(folder, layout) for folder, layout in RENDERED.values())
    assert unmatched_quotes(read(document), rendered) == []


def test_the_documents_that_discuss_results_quote_them():
    results_page, readme = prose(read("docs/results.md")), prose(read("README.md"))
    assert len(PLUS_MINUS.findall(results_page)) >= 10 and len(PROSE_P.findall(results_page)) >= 5
    assert PLUS_MINUS.findall(readme) and PROSE_P.findall(readme)  # the README's headline paragraph


def test_unmatched_quotes_reads_prose_to_its_own_rounding():
    rendered = "| A | 89.17 ± 0.32 | 0.101 |\n| B | -4.00 ± 3.06 (p <0.001) |\n"
    text = "A reached 89.2 ± 0.3 (p 0.10), B -4.00 ± 3.06 with p <0.001.\n| A | 1.00 ± 9.99 |\n"
    assert unmatched_quotes(text, rendered) == []  # rounded quotes match; table lines are not prose
    stale = "A reached 89.17 ± 0.47, p 0.102; p is 0.101 on dev and 0.229 on test; 89.1 ± 0.3"
    assert unmatched_quotes(stale, rendered) == ["89.17 ± 0.47", "89.1 ± 0.3", "p 0.102", "p 0.229"]
    assert unmatched_quotes("```\n1.0 ± 2.0, p 0.5\n```\n", rendered) == []  # code is not prose
    wrapped = "A reached 89.17 ±\n0.47, with p\n0.102.\n"  # a line break inside a quote hides nothing
    assert unmatched_quotes(wrapped, rendered) == ["89.17 ± 0.47", "p 0.102"]


# Files the documents and the notes point a reader to: links (relative to the document, as a
# Markdown viewer resolves them; an #anchor after the file is ignored), repository paths and file
# names in backticks. `results/runs` is where a run writes by default and is made at run time;
# `results/table7_minilm_gpu` is the folder docs/results.md suggests for a GPU's Table 7 records.
REPOSITORY_PATH = re.compile(r"(?<![\w/.])((?:results|benchmarks|scripts|experiments|tests|bertprobe|docs)/[\w./-]*\w)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")
FILE_NAME = re.compile(r"`([\w.-]+\.(?:log|json|md|png|py|yaml|sh))`")
MADE_AT_RUN_TIME = {"results/runs", "results/table7_minilm_gpu"}


def named_paths(text: str, folder: str = "") -> set[str]:
    """The repository paths ``text`` names; its links are relative to ``folder`` (the
    document's own folder, relative to the repository root)."""
    links = {posixpath.normpath(posixpath.join(folder, link)) for link in LINK.findall(text) if "://" not in link}
    return {path.rstrip("/") for path in (links | set(REPOSITORY_PATH.findall(text)))} - MADE_AT_RUN_TIME


@pytest.mark.parametrize("document", [*READER_DOCUMENTS, *(f"results/{note}" for note in sorted(NOTES))])
def test_files_a_document_names_exist(document: str):
    text = read(document)
    folder = posixpath.dirname(document)
    assert not [path for path in sorted(named_paths(text, folder)) if not (ROOT / path).exists()]
    folders = ("results", "benchmarks", "scripts", "experiments", "tests", "bertprobe", "docs")
    names_here = {path.name for folder in folders for path in (ROOT / folder).rglob("*")}
    names_here |= {path.name for path in ROOT.iterdir()}
    assert not [name for name in sorted(set(FILE_NAME.findall(text))) if name not in names_here]


def test_named_paths_finds_links_paths_and_skips_urls():
    text = "see [x](results/a.md), `benchmarks/b.py`, results/c/ and [y](https://h/z) and results/runs/"
    assert named_paths(text) == {"results/a.md", "benchmarks/b.py", "results/c"}
    page = "[t](../results/t.png), [r](record.md#metrics), [u](usage.md), `docs/x.md`, [a](#anchor)"
    assert named_paths(page, "docs") == {"results/t.png", "docs/record.md", "docs/usage.md", "docs/x.md"}
