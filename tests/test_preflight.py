"""Preflight through the real command line: the shipped demo spec, copied into a temporary
folder with its run folder and results file there, then broken one way at a time.

Every failure exits with status 2 from both `paretune sweep check` and `paretune sweep run`,
says what to fix, and leaves no journal and no results file behind (a corrupt results file
stays byte for byte as it was).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sweeps.preflight import Check, first_point, preflight
from sweeps.spec import load_spec, spec_from_text

ROOT = Path(__file__).parent.parent
DEMO_SPEC = ROOT / "examples" / "demo.toml"


def demo_spec(folder: Path, *, replace: dict[str, str] | None = None, data: str = "") -> Path:
    """examples/demo.toml with its run folder and results file under ``folder``; each key of
    ``replace`` (a line's beginning) is replaced by its value; ``data`` lines go in [data]."""
    text = DEMO_SPEC.read_text()
    edits = {
        'dir = "runs"': f'dir = "{folder / "runs"}"',
        'results = "runs/results.duckdb"': f'results = "{folder / "results.duckdb"}"',
        **(replace or {}),
    }
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    if data:
        text += "\n[data]\n" + data + "\n"
    spec = folder / "spec.toml"
    spec.write_text(text)
    return spec


def paretune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def assert_refused(spec: Path, *expected: str) -> str:
    """`sweep check` and `sweep run` both exit 2 naming ``expected``; nothing is created."""
    folder = spec.parent
    results = folder / "results.duckdb"
    before = results.read_bytes() if results.exists() else None
    for command in ("check", "run"):
        done = paretune("sweep", command, str(spec), cwd=folder)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        for text in expected:
            assert text in done.stderr, done.stderr
        assert not (folder / "runs").exists(), "the run folder (journal) was created"
        if before is None:
            assert not results.exists(), "a results file was created"
        else:
            assert results.read_bytes() == before, "the results file was changed"
    return done.stderr


# ---------------------------------------------------------------- what passes


def test_first_point_is_the_first_value_of_everything() -> None:
    spec = load_spec(DEMO_SPEC)
    assert first_point(spec) == {
        "method": "lora",
        "rank": 2,
        "alpha_ratio": 1.0,
        "targets": "attn",
        "max_steps": 50,
        "lr_lora": 3e-4,
    }
    config = spec.trial_config(first_point(spec))
    assert (config.method, config.rank, config.alpha, config.lr) == ("lora", 2, 2.0, 3e-4)


@pytest.mark.slow
def test_the_demo_spec_passes_every_check_and_writes_nothing(demo, tmp_path: Path) -> None:
    spec = demo_spec(tmp_path)
    done = paretune("sweep", "check", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("✓")]
    names = [line.split(":")[0] for line in lines]
    assert names == [
        "✓ model",
        "✓ device",
        "✓ data",
        "✓ data check",
        "✓ objectives",
        "✓ calibration",
        "✓ storage",
        "✓ dry step",
    ], done.stdout
    assert "LlamaForCausalLM" in lines[0] and "meta device" in lines[0]
    assert "train 96 rows" in lines[2]
    assert lines[3] == "✓ data check: clean"
    # max_steps 50 to 200: on by default, rungs of the first (shortest) point from step 10.
    assert lines[4].endswith("; early stopping: mo-asha, rungs at steps 10, 30 (eta 3)")
    assert lines[5].startswith("✓ calibration: none, the planner's defaults (no profile at ")
    assert "1 step, loss" in lines[7]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results.duckdb").exists()


# ---------------------------------------------------------------- what is refused


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_asked_on_a_machine_without_one(demo, tmp_path: Path) -> None:
    spec = demo_spec(tmp_path, replace={'device = "cpu"': 'device = "cuda"'})
    error = assert_refused(spec, "asks for a CUDA GPU", 'device = "cuda"', "none is visible")
    assert 'device = "cpu"' in error  # what to do instead


@pytest.mark.slow
def test_an_empty_train_file(demo, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("")
    spec = demo_spec(tmp_path, data='train = "train.jsonl"')
    assert_refused(spec, f"train data {tmp_path / 'train.jsonl'} is empty")


@pytest.mark.slow
def test_a_malformed_row_is_named_by_file_and_line(demo, tmp_path: Path) -> None:
    rows = demo.train.read_text().splitlines(keepends=True)
    rows[2] = '{"prompt": "Q : where does"\n'  # line 3: cut short
    (tmp_path / "train.jsonl").write_text("".join(rows))
    spec = demo_spec(tmp_path, data='train = "train.jsonl"')
    error = assert_refused(spec, f"{tmp_path / 'train.jsonl'}:3", "1 bad row")
    assert 'bad_rows = "skip"' in error


@pytest.mark.slow
def test_a_missing_model_folder(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": " b"}\n' * 4)
    spec = demo_spec(
        tmp_path,
        replace={'model = "demo"': f'model = "{tmp_path / "no-such-model"}"'},
        data='train = "train.jsonl"\nretain = "train.jsonl"',
    )
    assert_refused(spec, f"the model folder '{tmp_path / 'no-such-model'}' does not exist")


@pytest.mark.slow
def test_truncated_weights_are_found_without_loading_them(demo, tmp_path: Path) -> None:
    """A copy of the demo's folder whose safetensors file lost its second half."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(demo.model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    spec = demo_spec(
        tmp_path,
        replace={'model = "demo"': f'model = "{model}"'},
        data=f'train = "{demo.train}"\nretain = "{demo.retain}"',
    )
    done = paretune("sweep", "check", str(spec), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{weights} is not a readable safetensors file" in done.stderr, done.stderr
    assert "Download or save the model again" in done.stderr


@pytest.mark.slow
def test_a_results_file_that_cannot_be_created(demo, tmp_path: Path) -> None:
    # Under a regular file: no folder can be made there, whoever runs the test (root too).
    (tmp_path / "somefile").write_text("not a folder\n")
    spec = demo_spec(
        tmp_path,
        replace={
            'results = "runs/results.duckdb"': f'results = "{tmp_path / "somefile" / "r.duckdb"}"'
        },
    )
    assert_refused(spec, "the results file", "cannot be written", "is a file")
    assert (tmp_path / "somefile").read_text() == "not a folder\n"


@pytest.mark.slow
def test_a_corrupt_results_file_is_left_as_it_was(demo, tmp_path: Path) -> None:
    (tmp_path / "results.duckdb").write_bytes(b"these are not the results you are looking for\n")
    spec = demo_spec(tmp_path)
    assert_refused(spec, "not a readable DuckDB database")
    journal = tmp_path / "shared" / "demo.journal"
    done = paretune("sweep", "worker", str(spec), "--storage", str(journal), cwd=tmp_path)
    assert done.returncode == 2 and "not a readable DuckDB database" in done.stderr, done.stderr
    assert not journal.parent.exists()


@pytest.mark.slow
def test_an_unreachable_study_database(demo, tmp_path: Path) -> None:
    spec = demo_spec(
        tmp_path,
        replace={
            'save = "frontier"': 'save = "frontier"\n'
            'storage = "postgresql+psycopg://nobody@127.0.0.1:9/nothing"'
        },
    )
    assert_refused(spec, "the study database", "cannot be reached")


@pytest.mark.slow
def test_forgetting_needs_a_retain_source_on_a_model_of_ones_own(demo, tmp_path: Path) -> None:
    """The demo's weights as a local folder: a model of the user's own, with no retain set.
    Once the trial has self-sampled retain sources (sweeps.trial.retain), any model has one."""
    spec = demo_spec(
        tmp_path,
        replace={'model = "demo"': f'model = "{demo.model_dir}"'},
        data=f'train = "{demo.train}"',
    )
    try:
        retain = importlib.import_module("sweeps.trial.retain")
    except ModuleNotFoundError:
        retain = None
    if retain is None or not hasattr(retain, "retain_source_for"):
        assert_refused(spec, 'forgetting = "retain_delta_nll" needs a retain set', "[data] retain")
        return
    passed: list[Check] = []
    preflight(load_spec(spec), dry_step=False, on_check=passed.append)
    objectives = next(c for c in passed if c.name == "objectives")
    assert "self-samples" in objectives.detail


@pytest.mark.slow
def test_a_first_point_that_cannot_train_fails_the_dry_step(demo, tmp_path: Path) -> None:
    spec = demo_spec(
        tmp_path, replace={'targets = ["attn", "mlp", "all"]': 'targets = "no_such_proj"'}
    )
    assert_refused(spec, "dry step", "no_such_proj")


@pytest.mark.slow
def test_no_check_skips_the_checks(demo, tmp_path: Path) -> None:
    # An empty train file: refused by the check; --no-check creates the study anyway.
    (tmp_path / "train.jsonl").write_text("")
    spec = demo_spec(tmp_path, data='train = "train.jsonl"')
    assert_refused(spec, f"train data {tmp_path / 'train.jsonl'} is empty")
    done = paretune("sweep", "run", str(spec), "--no-check", "--max-trials", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓" not in done.stdout
    assert (tmp_path / "runs" / "demo.journal").exists()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """In process, without the dry step: two independent problems, two paragraphs."""
    from sweeps.preflight import PreflightError

    (tmp_path / "somefile").write_text("")
    text = demo_spec(
        tmp_path,
        replace={
            "usd_per_hour = 0.10": 'cpu_instance = "no-such-instance"',
            'results = "runs/results.duckdb"': f'results = "{tmp_path / "somefile" / "r.duckdb"}"',
        },
    ).read_text()
    with pytest.raises(PreflightError) as raised:
        preflight(spec_from_text(text, base_dir=tmp_path), dry_step=False)
    assert [p.check for p in raised.value.problems] == ["objectives", "storage"]
    assert raised.value.message.count("\n\n") == 2  # a heading, then one paragraph each


def _objectives(spec: Path) -> str:
    """The objectives check's line, in process and without the dry step."""
    passed: list[Check] = []
    preflight(load_spec(spec), dry_step=False, on_check=passed.append)
    detail = next(c for c in passed if c.name == "objectives").detail
    return detail.split("; early stopping:")[0]  # the rungs' part has its own test


def test_dollars_need_no_price_given_trials_price_themselves(tmp_path: Path) -> None:
    # On the CPU with no price, a trial is priced as local-cpu: dollars are always measured.
    spec = demo_spec(tmp_path, replace={"usd_per_hour = 0.10": ""})
    assert _objectives(spec).endswith("dollars at the local-cpu price, $0/h")
    spec = demo_spec(tmp_path, replace={"usd_per_hour = 0.10": 'cpu_instance = "local-cpu"'})
    assert "local-cpu" in _objectives(spec)
    spec = demo_spec(tmp_path)
    assert _objectives(spec).endswith("dollars at $0.1/h")


@pytest.mark.parametrize(
    ("hardware", "says"),
    [
        ('gpu = "no-such-gpu"', "no-such-gpu"),
        ('cpu_instance = "no-such-instance"', "no-such-instance"),
        ('provider = "no-such-provider"', "no-such-provider"),
        # A provider prices a GPU; this trial runs on the CPU (the trial's own refusal).
        ('provider = "lambda"', "prices a GPU"),
    ],
)
def test_price_ids_not_in_the_catalogue_are_refused(
    tmp_path: Path, hardware: str, says: str
) -> None:
    from sweeps.preflight import PreflightError

    text = demo_spec(tmp_path, replace={"usd_per_hour = 0.10": hardware}).read_text()
    with pytest.raises(PreflightError) as raised:
        preflight(spec_from_text(text, base_dir=tmp_path), dry_step=False)
    (problem,) = raised.value.problems
    assert problem.check == "objectives" and says in problem.what, problem


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_spec_with_no_price_is_priced_as_the_visible_gpu(demo, tmp_path: Path) -> None:
    spec = demo_spec(
        tmp_path, replace={'device = "cpu"': 'device = "cuda"', "usd_per_hour = 0.10": ""}
    )
    detail = _objectives(spec)
    assert "(the detected GPU)" in detail and "$" in detail, detail


@pytest.mark.slow
async def test_the_app_shows_a_failed_check_and_launches_nothing(demo, tmp_path: Path) -> None:
    from tui.app import ParetuneApp

    (tmp_path / "train.jsonl").write_text("")
    spec = demo_spec(tmp_path, data='train = "train.jsonl"')
    app = ParetuneApp(db=tmp_path / "results.duckdb", run_dir=tmp_path / "app", start="sweeps")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        screen.show_spec(spec)
        await pilot.press("ctrl+l")
        await app.workers.wait_for_complete()
        await pilot.pause()
        error = screen.query_one("#sweeps-error")
        assert error.shown
        assert "is empty" in str(error.render()) and "Cannot launch" in str(error.render())
        assert screen.launched is None
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results.duckdb").exists()
