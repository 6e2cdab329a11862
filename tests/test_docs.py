"""The README and the MkDocs site: generated reference pages against the code, links, size."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

INSTALL_AND_RUN = (
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . && .venv/bin/paretune"
)
INSTALL_AND_TEST = (
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[dev]' "
    "&& .venv/bin/python -m pytest"
)


def _hooks():
    """docs/hooks.py, loaded as MkDocs loads it (a file, not a package module)."""
    spec = importlib.util.spec_from_file_location("paretune_docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the README


def test_readme_is_the_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert INSTALL_AND_RUN in text
    assert INSTALL_AND_TEST in text  # CI runs this line


def test_readme_relative_links_point_to_files() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    relative = [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert relative, "the README links into the docs"
    for target in relative:
        path = (README.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"README links to {target}, which does not exist"


# ---------------------------------------------------------------- generated pages


def test_readme_own_model_spec_loads(tmp_path: Path) -> None:
    """The README's first worked example is a valid sweep spec with the default objectives."""
    from sweeps.spec import load_spec

    text = README.read_text(encoding="utf-8")
    spec_text = text.split("`own.toml`:\n\n```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "own.toml").write_text(spec_text, encoding="utf-8")
    (tmp_path / "train.jsonl").write_text('{"prompt": "2+2=", "completion": "4"}\n')
    spec = load_spec(tmp_path / "own.toml")
    assert spec.model == "./my-model"
    assert (spec.objectives.quality, spec.objectives.forgetting) == ("eval_nll", "retain_delta_nll")
    assert list(spec.search.methods) == ["lora", "dora"]


def _database_columns(tmp_path: Path) -> dict[str, list[str]]:
    """Every table's and view's columns, as a freshly created results file has them."""
    from sweeps.results.store import ResultsStore

    store = ResultsStore(tmp_path / "results.duckdb")
    store.ensure_schema()
    _, relations = store.query("SELECT table_name FROM information_schema.tables")
    return {name: [row[0] for row in store.query(f"DESCRIBE {name}")[1]] for (name,) in relations}


def test_schema_page_lists_every_column_of_the_results_file(tmp_path: Path) -> None:
    page = _hooks().render((DOCS / "reference" / "schema.md").read_text(encoding="utf-8"))
    assert "<!-- generated" not in page
    relations = _database_columns(tmp_path)
    assert {"studies", "trials", "steps", "frontier", "calibration"} <= set(relations)
    for relation, columns in relations.items():
        assert f"`{relation}`" in page, relation
        for column in columns:
            assert f"`{column}`" in page, f"{relation}.{column} is not in the schema page"


def _spec_sections(page: str) -> dict[str, str]:
    """The generated spec-keys Markdown, split into its sections ('' is the top level)."""
    parts = re.split(r"^### (?:`\[(\w+)\]`|Top level)$", page, flags=re.MULTILINE)
    return {(name or ""): body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_spec_page_lists_every_key() -> None:
    from pydantic import BaseModel

    from sweeps.spec import SEARCHABLE, SweepSpec

    page = _hooks().render((DOCS / "reference" / "spec.md").read_text(encoding="utf-8"))
    sections = _spec_sections(page)
    for name, field in SweepSpec.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            assert name in sections, f"no [{name}] table"
            keys = set(section.model_fields) - {"params", "lr_by_method"}
            if name == "search":
                keys |= set(SEARCHABLE)
            for key in keys:
                assert f"| `{key}` |" in sections[name], f"{name}.{key}"
        else:
            assert f"| `{name}` |" in sections[""], name


def test_spec_page_documents_every_key_of_the_shipped_examples() -> None:
    sections = _spec_sections(_hooks().spec_keys_markdown())
    examples = sorted((ROOT / "examples").glob("*.toml"))
    assert examples
    for example in examples:
        raw = tomllib.loads(example.read_text(encoding="utf-8"))
        for key, value in raw.items():
            if isinstance(value, dict):
                for inner in value:
                    assert f"| `{inner}` |" in sections[key], f"{example.name}: {key}.{inner}"
            else:
                assert f"| `{key}` |" in sections[""], f"{example.name}: {key}"


def _table_rows(markdown: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``markdown``, as lists of stripped cells."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows


def test_every_spec_key_has_a_meaning() -> None:
    sections = _spec_sections(_hooks().spec_keys_markdown())
    for name, body in sections.items():
        for cells in _table_rows(body):
            if cells[0] == "key":
                continue  # the header
            assert cells[-1], f"[{name}] {cells[0]} has no meaning on the spec-keys page"


def test_trial_states_are_one_list_with_the_outcome_enum() -> None:
    """The sweeps guide and the schema page list exactly the states a trial can have, each
    with the meaning :class:`Outcome` gives it."""
    from sweeps.outcome import BUDGET_OUTCOMES, Outcome

    hooks = _hooks()
    guide = hooks.render((DOCS / "guides" / "sweeps.md").read_text(encoding="utf-8"))
    schema = hooks.render((DOCS / "reference" / "schema.md").read_text(encoding="utf-8"))
    for page, name in ((guide, "sweeps guide"), (schema, "schema page")):
        listed = {
            cells[0].strip("`"): cells[1]
            for cells in _table_rows(page)
            if len(cells) >= 2 and cells[0].strip("`") in set(Outcome)
        }
        assert listed == {o.value: hooks._cell(o.description) for o in Outcome}, name
    budget = {
        cells[0].strip("`") for cells in _table_rows(guide) if len(cells) == 4 and cells[2] == "yes"
    }
    assert budget == set(BUDGET_OUTCOMES)


_CITED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _guarantee_citations() -> dict[str, list[tuple[str, str]]]:
    """The tests ``docs/guarantees.md`` cites, by section (``## ...`` heading)."""
    text = (DOCS / "guarantees.md").read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {
        heading: _CITED_TEST.findall(body)
        for heading, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def test_every_test_the_guarantees_page_cites_exists() -> None:
    cited = _guarantee_citations()
    promised = {h: tests for h, tests in cited.items() if h != "Not yet promised"}
    assert len(promised) >= 6, sorted(cited)
    for heading, tests in promised.items():
        assert tests, f"guarantees: section '{heading}' names no test"
    assert not cited.get("Not yet promised"), "a known gap cites a test as if it were promised"
    for path, name in {t for tests in promised.values() for t in tests}:
        source = ROOT / path
        assert source.is_file(), f"guarantees cites {path}::{name}, but {path} does not exist"
        defined = re.search(
            rf"^(?:async )?def {name}\(", source.read_text(encoding="utf-8"), re.MULTILINE
        )
        assert defined, f"guarantees cites {path}::{name}, which {path} does not define"


def test_an_unknown_marker_stops_the_build() -> None:
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="spec-keyz"):
        _hooks().render("text\n<!-- generated: spec-keyz -->\n")


def test_sections_that_tests_read_are_in_the_docs() -> None:
    pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
    for name in ("prices", "plan", "simulate", "trial", "sweep", "tui"):
        start, end = f"<!-- section: {name} -->", f"<!-- /section: {name} -->"
        assert pages.count(start) == 1 and pages.count(end) == 1, name
        assert pages.index(start) < pages.index(end), name


# ---------------------------------------------------------------- the whole site


def _command_ids(command: click.Command, prefix: str) -> list[str]:
    ids = [prefix]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            ids += _command_ids(sub, f"{prefix}-{name}")
    return ids


@pytest.mark.slow
def test_site_builds_strictly_with_every_command(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    from tui.cli import main

    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "WARNING" not in done.stderr, done.stderr[-4000:]
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for anchor in _command_ids(main, "paretune"):
        assert f'id="{anchor}"' in cli, anchor
    for page in ("reference/spec", "reference/schema"):
        html = (site / page / "index.html").read_text(encoding="utf-8")
        assert "generated:" not in html and "<table>" in html, page
