"""Rough edges a new user met in the command line and the charts, on a real results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RESULTS_STUDY as STUDY
from conftest import paretune, write_study

from pricing.display import format_dollars
from sweeps.results.colours import METHOD_COLOURS
from sweeps.results.store import ResultsStore


@pytest.fixture(scope="module")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("results") / "results.duckdb"
    write_study(db)
    return db


def test_dollars_have_significant_digits() -> None:
    assert format_dollars(8.928e-05) == "$0.0000893"
    assert format_dollars(0.012) == "$0.0120"
    assert format_dollars(0) == "$0"
    assert format_dollars(1234.5) == "$1,234.50"
    assert format_dollars(0.5, sign=False) == "0.500"
    assert format_dollars(None) == ""


def test_sql_star_switches_to_one_block_per_row(results_db: Path) -> None:
    done = paretune("sql", "SELECT * FROM trials ORDER BY number LIMIT 2", "--db", str(results_db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("-[ row 1 ]")
    assert any(line.split("|")[0].strip() == "method" and "lora" in line for line in lines)
    assert "one block per row" in done.stdout and "--format csv" in done.stdout
    assert "(2 rows)" in done.stdout


def test_sql_grid_writes_booleans_and_dollars_readably(results_db: Path) -> None:
    query = "SELECT number, dollars, dollars < 0.015 AS cheap FROM trials ORDER BY number"
    done = paretune("sql", query, "--db", str(results_db))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[3]
    assert "0.0100" in first and "true" in first
    assert "e-0" not in done.stdout and "False" not in done.stdout
    assert "0.00100" in done.stdout  # the OOM trial's $0.001


@pytest.mark.parametrize("name", ["t.xlsx", "t.txt"])
def test_sql_out_refuses_formats_it_does_not_write(results_db: Path, tmp_path: Path, name) -> None:
    done = paretune("sql", "SELECT 1", "--db", str(results_db), "--out", str(tmp_path / name))
    assert done.returncode == 2
    assert ".csv, .parquet and .json" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / name).exists()


def test_sql_out_refuses_a_missing_folder_like_the_ui(results_db: Path, tmp_path: Path) -> None:
    from sweeps.results.export import ExportError, write_table

    out = tmp_path / "nothere" / "rows.csv"
    done = paretune("sql", "SELECT 1", "--db", str(results_db), "--out", str(out))
    assert done.returncode == 2 and "does not exist" in done.stderr and "mkdir -p" in done.stderr
    assert not out.parent.exists()
    import pyarrow as pa

    with pytest.raises(ExportError, match="does not exist"):  # the SQL screen's writer
        write_table(pa.table({"a": [1]}), out)


def test_sql_out_json_and_csv(results_db: Path, tmp_path: Path) -> None:
    query = "SELECT number, state FROM trials ORDER BY number LIMIT 2"
    for name in ("rows.json", "rows.csv"):
        done = paretune("sql", query, "--db", str(results_db), "--out", str(tmp_path / name))
        assert done.returncode == 0 and "wrote 2 rows" in done.stderr, done.stderr
    assert json.loads((tmp_path / "rows.json").read_text())[1] == {"number": 1, "state": "complete"}
    assert (tmp_path / "rows.csv").read_text().splitlines()[1] == '0,"complete"'


def test_piped_sweep_status_keeps_artifact_paths_whole(results_db: Path) -> None:
    done = paretune("sweep", "status", STUDY, "--db", str(results_db))
    assert done.returncode == 0, done.stderr
    assert f"runs/{STUDY}/trial-0" in done.stdout and "…" not in done.stdout
    assert "spent $0.123" in done.stdout  # 0.01 + 0.012 + 0.02 + 0.05 + 0.03 + 0.001
    assert "not completed: oom 1" in done.stdout


def test_png_and_terminal_charts_use_the_shared_colours(results_db: Path, tmp_path: Path) -> None:
    from sweeps.results.colours import method_rgb
    from sweeps.results.frontier import plot_frontier, terminal_frontier

    rows = ResultsStore(results_db).trials(STUDY)
    svg = plot_frontier(rows, tmp_path / "chart.svg").read_text()
    text = terminal_frontier(rows, width=80, height=20)
    for method in ("lora", "dora", "full", "freeze"):
        assert f"fill: {METHOD_COLOURS[method]}" in svg, method
        r, g, b = method_rgb(method)
        assert f"38;2;{r};{g};{b}m" in text, method
    # A legend of what a marker's size costs, with the trials' cheapest and dearest.
    assert "cost" in svg and "$0.0100" in svg and "$0.0500" in svg


def test_png_legends_name_methods_and_cost_sizes(results_db: Path) -> None:
    import matplotlib.pyplot as plt

    from sweeps.results.frontier import frontier_figure

    figure = frontier_figure(ResultsStore(results_db).trials(STUDY))
    try:
        axes = figure.axes[0]
        methods, costs = [*axes.artists, axes.get_legend()]
        assert methods.get_title().get_text() == "method"
        method_markers = [h for h in methods.legend_handles if h.get_marker() == "o"]
        assert [h.get_label() for h in method_markers] == ["dora", "freeze", "full", "lora"]
        assert {h.get_markersize() for h in method_markers} == {7}  # not the dearest point's
        assert costs.get_title().get_text() == "cost"
        sizes = [h.get_markersize() for h in costs.legend_handles]
        assert [t.get_text() for t in costs.get_texts()] == ["$0.0100", "$0.0200", "$0.0500"]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
        # Each Pareto point's "#n" label starts past its marker's edge.
        offsets = [a.xyann for a in axes.texts]
        assert offsets and all(dx > 2 and dy > 2 for dx, dy in offsets)
    finally:
        plt.close(figure)


def test_bitsandbytes_kernel_warning_is_dropped_and_nothing_else(caplog) -> None:
    import logging

    import bitsandbytes  # noqa: F401 - the library whose logger is filtered

    from planner.methods import quiet_bitsandbytes

    quiet_bitsandbytes()
    quiet_bitsandbytes()  # twice: one filter
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure "
            "you already `pip install kernels` and the kernels >= 0.11.1",
            "no network",
        )
        logger.warning("some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["some other bitsandbytes warning"]


def test_arrow_results_raise_no_duckdb_warning(results_db: Path, tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = ResultsStore(results_db).arrow("SELECT number FROM trials ORDER BY number")
    assert table.column("number").to_pylist() == [0, 1, 2, 3, 4, 5]
    out = tmp_path / "rows.parquet"
    done = paretune("sql", "SELECT * FROM trials", "--db", str(results_db), "--out", str(out))
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr


def test_trial_errors_name_the_flag_and_the_missing_folder(tmp_path: Path) -> None:
    zero = paretune("trial", "--demo", "--max-steps", "0")
    assert zero.returncode == 2 and "--max-steps: Input should be greater than 0" in zero.stderr
    train = tmp_path / "t.jsonl"
    train.write_text('{"prompt": "a", "completion": "b"}\n')
    missing = paretune("trial", "--model", "./nothere", "--train", str(train))
    assert missing.returncode == 2, missing.stderr
    assert "--model ./nothere: no such folder or file" in missing.stderr
    assert "Repo id" not in missing.stderr and "Traceback" not in missing.stderr


def test_planner_says_a_missing_model_folder_is_missing() -> None:
    from planner import resolve_model
    from pricing.errors import UserError

    with pytest.raises(UserError, match="no such folder or file: './nothere'"):
        resolve_model("./nothere")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "a"\n[budgt]\ndollars = 1', "budgt is not a known key (did you mean 'budget'?)"),
        ('name = "a"\n[budget]\ndolars = 1', "budget.dolars is not a known key (did you mean"),
        ('name = "a"\n[trial]\ntrain = "x.jsonl"', "trial.train is set by [data] train"),
    ],
)
def test_spec_key_errors_say_where_and_suggest(text: str, expected: str) -> None:
    from pricing.errors import UserError
    from sweeps.spec import spec_from_text

    with pytest.raises(UserError) as raised:
        spec_from_text(text)
    assert expected in raised.value.message


def test_bad_row_hint_names_options_that_exist(tmp_path: Path) -> None:
    from sweeps.trial.data import DataError, load_texts

    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n[1, 2]\n')
    with pytest.raises(DataError) as raised:
        load_texts(str(data))
    assert "--bad-rows skip" in raised.value.hint and "[trial]" in raised.value.hint
    assert "--bad-rows [fail|skip]" in paretune("trial", "--help").stdout
    assert load_texts(str(data), bad_rows="skip")[0] == ["fine"]


def test_trial_says_at_once_that_a_data_file_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    done = paretune("trial", "--demo", "--train", str(empty), "--max-steps", "1")
    assert done.returncode == 2
    assert f"--train {empty}: the file is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_sweep_summary_line_reads_plainly() -> None:
    import io

    from rich.console import Console

    from sweeps.spec import SweepSpec
    from sweeps.worker import SweepState
    from tui.cli.sweep import _summary

    state = SweepState("demo", budget_trials=4, budget_dollars=0.5, budget_hours=None)
    state.failed, state.done, state.dollars = {"failed": 3}, 2, 8.928e-05
    state.stop_reason = "interrupted"
    console = Console(record=True, width=300, file=io.StringIO())
    _summary(console, state, SweepSpec(name="demo", budget={"dollars": 0.5}), stop_line=False)
    text = console.export_text()
    assert "2 complete, 3 not completed (failed 3)" in text and "failed: failed" not in text
    assert "spent $0.0000893 of $0.500" in text and "e-05" not in text
    assert "stopped:" not in text  # after Ctrl-C the next line says why, once
