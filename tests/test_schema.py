"""One schema source: the DDL, the rows written from Optuna, TrialResult and the documented tables
agree, on a real DuckDB file written by the store."""

from __future__ import annotations

import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import duckdb
import pytest
from conftest import ROOT, journal_study, paretune
from pydantic import BaseModel

from sweeps.outcome import Outcome
from sweeps.results.schema import (
    MIGRATIONS,
    RESULT_ROOTS,
    SCHEMA_VERSION,
    STEPS,
    TABLES,
    TRIALS,
    UNSTORED_RESULT_FIELDS,
    VERSIONS,
    VIEWS,
    Column,
    schema_markdown,
)
from sweeps.results.store import ResultsStore, StoreError, trial_record, trial_row, trial_rows
from sweeps.trial.types import StepLog, TrialConfig, TrialResult, TrialState


def _model_fields(model: type[BaseModel]) -> dict[str, type | None]:
    """Field name -> its model class when the field is a nested model, or an optional one
    (else None)."""
    fields = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        members = [k for k in typing.get_args(kind) if k is not type(None)]
        if isinstance(kind, types.UnionType) and len(members) == 1:
            kind = members[0]
        fields[name] = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None
    return fields


def _result_leaves() -> set[str]:
    """Every field of TrialResult, nested models (but its TrialConfig) opened one level."""
    leaves = set()
    for name, nested in _model_fields(TrialResult).items():
        if nested is None or nested is TrialConfig:
            leaves.add(name)
        else:
            leaves |= {f"{name}.{inner}" for inner in nested.model_fields}
    return leaves


def _result_paths(column: Column) -> set[str]:
    """The TrialResult fields a trials column reads (its paths under the result's roots)."""
    found = set()
    for path in column.paths:
        root, _, rest = path.partition(".")
        if root not in RESULT_ROOTS:
            continue
        base = RESULT_ROOTS[root]
        if root == "config":  # the whole TrialConfig is one field of the result
            found.add("config")
        elif root == "versions":  # keys of the versions dict
            found.add(base)
        else:
            path = ".".join(part for part in (base, rest) if part)
            found.add(".".join(path.split(".")[:2]))  # a dict field's keys: the field
    return found


def test_every_trial_result_field_has_a_column_or_a_reason() -> None:
    read = set().union(*(_result_paths(column) for column in TRIALS.columns))
    leaves = _result_leaves()
    missing = leaves - read - set(UNSTORED_RESULT_FIELDS)
    assert not missing, f"TrialResult fields no trials column reads: {sorted(missing)}"
    whole = {name for name, nested in _model_fields(TrialResult).items() if nested is not None}
    unknown = read - leaves - whole  # a JSON column may hold a nested model whole
    assert not unknown, f"trials columns read fields TrialResult does not have: {sorted(unknown)}"
    stale = set(UNSTORED_RESULT_FIELDS) - (leaves - read)
    assert not stale, f"UNSTORED_RESULT_FIELDS lists fields that are stored or gone: {stale}"


def test_config_and_step_columns_name_real_fields() -> None:
    config_fields = set(TrialConfig.model_fields)
    for column in TRIALS.columns:
        for path in column.paths:
            if path.startswith("config."):
                assert path.removeprefix("config.") in config_fields, (column.name, path)
    step_paths = {p.removeprefix("step.") for c in STEPS.columns for p in c.paths}
    assert set(StepLog.model_fields) <= step_paths
    assert step_paths - set(StepLog.model_fields) == {"study", "trial.number"}


def test_every_source_names_a_part_of_its_record() -> None:
    for table in TABLES:
        for column in table.columns:
            for path in column.paths:
                assert path.split(".", 1)[0] in table.sources, (table.name, column.name, path)


def test_the_trials_record_has_exactly_the_documented_parts(tmp_path: Path) -> None:
    study = journal_study(tmp_path)
    directions = [d.name.lower() for d in study.directions]
    for trial in study.get_trials(deepcopy=False):
        assert set(trial_record("s", trial, directions)) == set(TRIALS.sources)
        row, steps = trial_row("s", trial, directions)
        assert list(row) == TRIALS.names
        assert all(list(step) == STEPS.names for step in steps)


def test_outcomes_are_one_set_of_values() -> None:
    assert set(typing.get_args(TrialState)) < set(Outcome)
    description = TRIALS.column("state").description
    assert all(outcome.value in description for outcome in Outcome)
    page = schema_markdown()
    assert all(f"| `{outcome}` | {outcome.description} |" in page for outcome in Outcome)
    # Stored values are the plain strings, as in files written before the enum.
    result = TrialResult(state="oom", method="lora")
    assert result.model_dump(mode="json")["state"] == "oom"
    with pytest.raises(ValueError):
        TrialResult(state="lost", method="lora")  # the sweep's outcome, not a run's


def _documented(page: str) -> dict[str, list[tuple[str, str]]]:
    """Relation -> its (column, type) rows, from the Markdown of schema_markdown()."""
    found: dict[str, list[tuple[str, str]]] = {}
    for block in re.split(r"^\*\*`", page, flags=re.MULTILINE)[1:]:
        name = block.split("`", 1)[0]
        found[name] = re.findall(r"^\| `(\w+)` \| ([A-Z\[\]]+) \|", block, flags=re.MULTILINE)
    return found


def test_a_results_file_has_exactly_the_documented_columns(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    assert store.sync_study(journal_study(tmp_path)) == 4
    columns, rows = store.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "ORDER BY table_name, ordinal_position"
    )
    in_file: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        in_file.setdefault(table, []).append((column, kind))
    documented = _documented(schema_markdown())
    documented["frontier"] = documented["trials"] + documented["frontier"]  # trials' and its own
    parts = (*TABLES, VERSIONS, *VIEWS)
    assert set(in_file) == set(documented) == {part.name for part in parts}
    for relation, found in in_file.items():
        assert found == documented[relation], relation
    # And the code's own lists are those columns, in that order.
    for part in parts:
        assert [(c.name, c.type) for c in part.columns] == in_file[part.name], part.name


def test_rows_written_from_optuna_fill_the_columns_they_should(tmp_path: Path) -> None:
    study = journal_study(tmp_path)
    rows, steps = trial_rows(study)
    complete = rows[0]
    assert complete["state"] == "complete" and complete["method"] == "lora"
    assert (complete["eval_nll"], complete["retain_delta_nll"], complete["dollars"]) == (
        1.0,
        0.5,
        0.01,
    )
    assert (complete["objective_quality"], complete["steps_done"]) == (1.0, 2)
    assert complete["torch_version"] == "2.13.0" and complete["versions"] == {"torch": "2.13.0"}
    assert complete["rank"] == 4 and rows[1]["rank"] is None  # full fine-tune: no adapter rank
    assert rows[3]["state"] == "oom" and rows[3]["error"] == "CUDA out of memory"
    assert rows[3]["versions"] is None and rows[3]["config"] is None
    assert [(s["number"], s["step"]) for s in steps[:2]] == [(0, 1), (0, 2)]


def test_a_file_from_before_an_added_column_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as connection:
        old = [c for c in TRIALS.columns if c.name not in TRIALS.added]
        body = ", ".join(f"{c.name} {c.type}" for c in old)
        connection.execute(f"CREATE TABLE trials ({body}, PRIMARY KEY (study, number))")
        connection.execute("INSERT INTO trials (study, number, state) VALUES ('old', 0, 'oom')")
    store = ResultsStore(path)
    store.ensure_schema()
    (row,) = store.trials("old")
    assert row["state"] == "oom" and row["measured_process_peak_gb"] is None
    assert set(row) == set(TRIALS.names)


def test_the_schema_imports_without_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from sweeps.results.schema import schema_markdown\n"
        "assert '| `eval_nll` | DOUBLE |' in schema_markdown()\n"
        "print(sorted({'torch', 'transformers', 'optuna', 'duckdb'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- versions


def _columns(path: Path) -> dict[str, list[tuple[str, str]]]:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        found.setdefault(table, []).append((column, kind))
    return found


def test_a_file_written_before_schema_versions_is_upgraded_in_place(tmp_path: Path) -> None:
    """An unversioned file, as paretune wrote them before (its first-release columns, no
    schema_version table, a trial in it), opens, gains every later column and the views, and
    records its migrations once; its rows are kept."""
    import duckdb

    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as connection:
        for table in TABLES:
            later = {c for m in MIGRATIONS for t, c in m.columns if t == table.name}
            first = [c for c in table.columns if c.name not in {*table.added, *later}]
            body = ", ".join(f"{c.name} {c.type}" for c in first)
            connection.execute(
                f"CREATE TABLE {table.name} ({body}, PRIMARY KEY ({', '.join(table.key)}))"
            )
        connection.execute(
            "INSERT INTO trials (study, number, state, method, eval_nll) "
            "VALUES ('old', 0, 'complete', 'lora', 1.25)"
        )
    store = ResultsStore(old)
    assert store.schema_version() is None
    store.ensure_schema()
    fresh = tmp_path / "fresh.duckdb"
    ResultsStore(fresh).ensure_schema()
    # Every table, column and view of a new file (added columns come last in an old one).
    assert {k: sorted(v) for k, v in _columns(old).items()} == {
        k: sorted(v) for k, v in _columns(fresh).items()
    }
    assert store.schema_version() == SCHEMA_VERSION
    _, rows = store.query("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
    _, kept = store.query("SELECT study, number, method, eval_nll FROM trials")
    assert kept == [("old", 0, "lora", 1.25)]
    # And a sweep's rows go into the upgraded file by name, whatever its column order.
    assert store.sync_study(journal_study(tmp_path)) == 4
    _, synced = store.query("SELECT number, method, eval_nll FROM trials WHERE study = 's'")
    assert sorted(synced)[0] == (0, "lora", 1.0)
    # A current file is left as it is: no migration is recorded twice.
    ResultsStore(old).ensure_schema()
    _, again = store.query("SELECT count(*) FROM schema_version")
    assert again == [(len(MIGRATIONS),)]


def test_a_file_at_an_earlier_version_gets_only_the_later_migrations(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "v1.duckdb"
    ResultsStore(path).ensure_schema()
    with duckdb.connect(str(path)) as connection:  # as version 1 left it
        connection.execute("DELETE FROM schema_version WHERE version > 1")
        connection.execute("DROP VIEW frontier")
        stamp = connection.execute("SELECT applied FROM schema_version").fetchone()
    assert ResultsStore(path).schema_version() == 1
    ResultsStore(path).ensure_schema()
    store = ResultsStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    _, rows = store.query("SELECT version, applied FROM schema_version ORDER BY version")
    assert rows[0] == (1, stamp[0])  # version 1's record is kept as it was
    columns, _ = store.query("SELECT * FROM frontier")
    assert "indistinguishable_from" in columns


def test_a_file_from_a_newer_paretune_is_refused_untouched(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "newer.duckdb"
    ResultsStore(path).ensure_schema()
    with duckdb.connect(str(path)) as connection:
        connection.execute(
            "INSERT INTO schema_version VALUES (?, now()::TIMESTAMP, '9.0', 'from the future')",
            [SCHEMA_VERSION + 1],
        )
    before = path.read_bytes()
    study = journal_study(tmp_path)
    with pytest.raises(StoreError, match="newer paretune") as refused:
        ResultsStore(path).sync_study(study)
    assert "pip install -U paretune" in refused.value.hint
    assert path.read_bytes() == before
    # Reading it still works.
    _, rows = ResultsStore(path).query("SELECT count(*) FROM trials")
    assert rows == [(0,)]
    # The command line: one paragraph, exit 2, the file unchanged.
    done = paretune("results", "sync", "--storage", str(tmp_path / "s.journal"), "--db", str(path))
    assert done.returncode == 2 and "newer paretune" in done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == before
