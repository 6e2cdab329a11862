"""Sweep specs: every shipped example loads; bad specs name the bad key; write_spec round-trips."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sweeps.spec import (
    Choice,
    Fixed,
    Range,
    SpecError,
    SweepSpec,
    load_spec,
    spec_from_text,
    write_spec,
)

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_the_three_examples_ship() -> None:
    assert {p.name for p in EXAMPLES} >= {"demo.toml", "gpu-small.toml", "gpu-8b.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_and_makes_trial_configs(path: Path) -> None:
    spec = load_spec(path)
    for method in spec.search.methods:
        params = {"method": method}
        for name, param in spec.search.params.items():
            if isinstance(param, Choice):
                params[name] = param.values[0]
            elif isinstance(param, Range):
                params[name] = int(param.low) if param.integer else param.low
        for m, param in spec.search.lr_by_method.items():
            if m == method and isinstance(param, Range):
                params[f"lr_{m}"] = param.low
        config = spec.trial_config(params, trial_number=0)
        assert config.method == method
        assert config.study == spec.name


def test_demo_example_works_when_copied_anywhere(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "demo.toml"
    copy.parent.mkdir()
    shutil.copy(Path(__file__).parent.parent / "examples" / "demo.toml", copy)
    spec = load_spec(copy)
    assert spec.model == "demo"
    assert spec.data.train is None and spec.data.retain is None


def test_parameter_forms() -> None:
    spec = spec_from_text(
        'name = "s"\n[search]\nmethods = ["lora", "full"]\nrank = { low = 4, high = 64, log = true }\n'
        'alpha_ratio = 2.0\ntargets = ["attn", "all"]\n[search.lr]\nlora = { low = 1e-4, high = 1e-2, log = true }\n'
        "full = 1e-5\n[budget]\ntrials = 3\n"
    )
    assert spec.search.params["rank"] == Range(4, 64, log=True, integer=True)
    assert spec.search.params["alpha_ratio"] == Fixed(2.0)
    assert spec.search.params["targets"] == Choice(("attn", "all"))
    lora = spec.trial_config({"method": "lora", "rank": 16, "targets": "attn", "lr_lora": 3e-3})
    assert (lora.rank, lora.alpha, lora.lr, lora.targets) == (16, 32.0, 3e-3, "attn")
    full = spec.trial_config({"method": "full"})
    assert full.lr == 1e-5 and full.method == "full"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'name = "s"\n[search]\nrank = { low = 0, high = 8 }',
            "search.rank.low must be >= 1, got 0",
        ),
        (
            'name = "s"\n[search]\nrank = { low = 8, high = 4 }',
            "search.rank.high must be >= rank.low",
        ),
        ('name = "s"\n[search]\nmethods = ["lora", "lorra"]', "search.methods[1] must be one of"),
        ('name = "s"\n[search]\nlr = { low = -1, high = 1 }', "search.lr.low must be > 0"),
        ('name = "s"\n[search]\nranks = 4', "search.ranks is not a searchable parameter"),
        ('name = "s"\n[search]\nrank = 2.5', "search.rank must be a whole number"),
        ('name = "s"\n[search]\ntargets = { low = 1, high = 2 }', "search.targets is not numeric"),
        (
            'name = "s"\n[search]\nmethods = ["lora", "full"]\nlr.lora = 1e-3',
            "search.lr.full is missing",
        ),
        ('name = "s"\n[budget]\ndollars = -1', "budget.dollars"),
        ('name = "s"\n[budget]\n', "budget: set at least one of dollars, hours or trials"),
        ('name = "s"\n[trial]\neval_every = 0', "trial.eval_every"),
        ('name = "s"\n[trial]\nmethod = "full"', "trial.method is set by [search] methods"),
        ('name = "s"\n[trial]\nbogus = 1', "trial.bogus is not a trial setting"),
        ('name = "s"\n[hardware]\ngpus = [0, 0]', "hardware.gpus"),
        ('name = "s"\n[run]\nsave = "some"', "run.save"),
        ('name = "s"\n[run]\nstorage = "mysql://x/y"', "run.storage"),
        ('name = "s"\ncolour = "red"', "colour is not a known key"),
        ('model = "demo"', "name is missing"),
        ('name = "s"\n[search\n', "is not valid TOML"),
        (
            'name = "s"\n[search]\nbatch = 8\n[trial]\nbatch = 4',
            "trial.batch is also set in [search]",
        ),
        ('name = "s"\n[hardware]\nusd_per_hour = inf', "hardware.usd_per_hour"),
        ('name = "s"\n[hardware]\nmemory_gb = nan', "hardware.memory_gb"),
        ('name = "s"\n[budget]\ndollars = inf', "budget.dollars"),
        ('name = "s"\n[run]\ntimeout_s = inf', "run.timeout_s"),
        ('name = "s"\n[trial]\nweight_decay = nan', "trial.weight_decay must be finite"),
        ('name = "s"\n[search]\nlr = { low = 1e-4, high = 1e-2, step = nan }', "step"),
        ('name = "s"\nseed = -1', "seed"),
        ('name = ".."', "name: must not be only dots"),
        ('name = "."', "name: must not be only dots"),
        ('name = "a/b"', "name: use letters, digits"),
        (f'name = "{"n" * 200}"', "name: must be at most 128 characters"),
    ],
)
def test_malformed_specs_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_text(toml, source="bad.toml")
    assert message in caught.value.message
    assert caught.value.message.startswith("bad.toml")


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no sweep spec at"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_write_spec_round_trips(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    written = write_spec(spec, tmp_path / "copy.toml")
    assert written.read_text().startswith(
        "# Sweep spec. Run it with:  paretune sweep run copy.toml"
    )
    assert load_spec(written) == spec


def test_write_spec_of_a_spec_built_in_code(tmp_path: Path) -> None:
    spec = SweepSpec(
        name="from-plan",
        model="Qwen/Qwen2.5-0.5B",
        search={
            "methods": ["qlora"],
            "rank": [8, 16],
            "lr": {"low": 1e-4, "high": 1e-3, "log": True},
        },
        hardware={"gpu": "h100-sxm", "provider": "runpod"},
        budget={"dollars": 10.0},
    )
    again = load_spec(write_spec(spec, tmp_path / "plan.toml"))
    assert again == spec
    assert again.search.params["rank"] == Choice((8, 16))


def test_sweep_run_with_a_malformed_spec_exits_2_naming_the_key(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "s"\n[search]\nrank = { low = 0, high = 8 }\n')
    root = str(Path(__file__).parent.parent)
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "sweep", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": root},
        check=False,
    )
    assert done.returncode == 2
    assert "search.rank.low must be >= 1, got 0" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created


# Inputs that once took minutes and gigabytes, or gave a traceback, before their error.
UNBOUNDED_SPECS = {
    "a 50,000-part dotted key": (
        'name = "s"\n' + ".".join(["a"] * 50_000) + " = 1\n",
        "more than 16 levels deep (line 2)",
    ),
    "deeply nested arrays": (
        'name = "s"\n[trial]\nx = ' + "[" * 5_000 + "]" * 5_000 + "\n",
        "more than 16 levels deep (line 3)",
    ),
    "a deep table header": ("[" + ".".join(["t"] * 40) + "]\nname = 1\n", "16 levels deep"),
    "a file over 256 KiB": ('name = "s"\n' + "# padding\n" * 30_000, "larger than 256 KiB"),
    "an infinite hourly price": (
        'name = "s"\n[hardware]\nusd_per_hour = inf\n',
        "hardware.usd_per_hour: Input should be a finite number",
    ),
    "a nan hourly price": ('name = "s"\n[hardware]\nusd_per_hour = nan\n', "usd_per_hour"),
    "the study name ..": ('name = ".."\n', "name: must not be only dots"),
}


@pytest.mark.parametrize("case", list(UNBOUNDED_SPECS))
def test_sweep_run_refuses_unbounded_specs_in_one_paragraph(tmp_path: Path, case: str) -> None:
    """Through the command line, in bounded time (the subprocess' timeout): exit 2, one
    paragraph naming the problem, no traceback, nothing created."""
    import os
    import subprocess
    import sys

    text, message = UNBOUNDED_SPECS[case]
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "sweep", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "\n\n" not in done.stderr.strip() and len(done.stderr) < 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_nesting_is_counted_outside_strings_and_comments_only() -> None:
    """Brackets and dots in strings (one-line, multi-line, literal) and comments nest nothing."""
    deep = "[{" * 40
    text = (
        f'name = "s"  # {deep}\n'
        f'model = "{deep}.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r"\n'
        f"[data]\ntrain = '''{deep}\n{deep}'''\n"
        f'eval = """\\"{deep}\\""""\n'
    )
    spec = spec_from_text(text, source="ok.toml")
    assert spec.model.startswith(deep) and spec.data.eval == f'"{deep}"'
