"""`paretune sweep launch --cloud`: SkyPilot tasks, read back by SkyPilot's own parser, the
errors without SkyPilot or credentials, and a cloud worker's trials charged at the cluster's
price against the study's dollar budget.

SkyPilot is an optional extra that pins older releases of packages paretune's environment
has (click, uvicorn), so it may live in a virtual environment of its own: set
PARETUNE_TEST_SKYPILOT_PYTHON to that environment's python (its bin folder holds `sky`).
Without it, and without `sky` importable here, the SkyPilot tests skip and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import cli_env, paretune

from pricing import load_catalog
from sweeps.cloud import SKYPILOT_CLOUDS, plan_launch, write_tasks
from sweeps.spec import load_spec

REMOTE_DB = "postgresql://sweep:s3cret@db.example.com:5432/sweeps"


def _sky_python() -> str | None:
    """A python that imports SkyPilot: PARETUNE_TEST_SKYPILOT_PYTHON, else this one."""
    given = os.environ.get("PARETUNE_TEST_SKYPILOT_PYTHON")
    if given:
        return given
    try:
        import sky  # noqa: F401
    except ImportError:
        return None
    return sys.executable


@pytest.fixture
def sky_python() -> str:
    found = _sky_python()
    if found is None:
        pytest.skip(
            "SkyPilot is not installed here and PARETUNE_TEST_SKYPILOT_PYTHON is unset: "
            "the SkyPilot parser test did NOT run"
        )
    return found


def _spec(
    folder: Path,
    name: str,
    *,
    storage: str | None = REMOTE_DB,
    device: str = "auto",
    model: str = "demo",
    data: str = "",
    budget: str = "trials = 4",
) -> Path:
    path = folder / f"{name}.toml"
    storage_line = f'storage = "{storage}"' if storage else ""
    path.write_text(f"""
name = "{name}"
model = "{model}"
{data}
[hardware]
device = "{device}"
[search]
methods = ["lora", "freeze"]
rank = [2, 8]
lr = {{ low = 1e-4, high = 1e-2, log = true }}
max_steps = 2
[trial]
batch = 4
eval_every = 2
max_seq_len = 64
[budget]
{budget}
[run]
dir = "{folder / "runs"}"
results = "{folder / "results.duckdb"}"
timeout_s = 300
{storage_line}
""")
    return path


_PARSE = """
import json, sys
import sky
out = []
for path in sys.argv[1:]:
    task = sky.Task.from_yaml(path)
    (res,) = task.resources
    out.append({
        "name": task.name,
        "cloud": str(res.cloud).lower(),
        "accelerators": res.accelerators,
        "use_spot": res.use_spot,
        "autostop_down": res.autostop_config.down,
        "file_mounts": task.file_mounts,
        "secrets": sorted(task.secrets),
        "setup": task.setup,
        "run": task.run,
    })
print(json.dumps(out))
"""


def _parse(sky_python: str, paths: list[Path], home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sky_python, "-c", _PARSE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(home)},
    )


def test_dry_run_tasks_parse_with_skypilot(tmp_path: Path, sky_python: str, own_model) -> None:
    spec = _spec(
        tmp_path,
        "cloudy",
        model=str(own_model.model_dir),
        data=f'[data]\ntrain = "{own_model.train}"\neval = "{own_model.eval}"',
    )
    out = tmp_path / "tasks"
    done = paretune(
        "sweep",
        "launch",
        str(spec),
        "--cloud",
        "--dry-run",
        "--workers",
        "2",
        "--gpu",
        "a100-80gb",
        "--provider",
        "lambda",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    files = sorted(out.glob("*.yaml"))
    assert [f.name for f in files] == ["paretune-cloudy-1.yaml", "paretune-cloudy-2.yaml"]
    assert all(f.stat().st_mode & 0o077 == 0 for f in files)  # the storage URL is a secret
    assert (
        str(files[0]) in done.stdout
        and "sky down paretune-cloudy-1 paretune-cloudy-2" in done.stdout
    )
    parsed = _parse(sky_python, files, tmp_path / "home")
    assert parsed.returncode == 0, parsed.stderr
    tasks = json.loads(parsed.stdout)
    assert [t["name"] for t in tasks] == ["paretune-cloudy-1", "paretune-cloudy-2"]
    task = tasks[0]
    # Lambda rents A100 80GB as 8-GPU instances only: the cluster holds 8, a trial uses 1, and
    # the trial is charged the whole instance's hour.
    assert task["cloud"] == "lambda" and task["accelerators"] == {"A100-80GB": 8}
    assert task["use_spot"] is False and task["autostop_down"] is True
    assert task["secrets"] == ["PARETUNE_STORAGE"]
    assert 'paretune sweep worker spec.toml --storage "$PARETUNE_STORAGE"' in task["run"]
    assert "pip install 'paretune[distributed]" in task["setup"]
    mounts = task["file_mounts"]
    assert mounts["~/paretune/cloudy/model"] == str(own_model.model_dir)
    assert mounts["~/paretune/cloudy/data/train-train.jsonl"] == str(own_model.train)
    worker = load_spec(mounts["~/paretune/cloudy/spec.toml"])
    assert worker.model == "./model"
    (offer,) = load_catalog().offers("a100-80gb", "lambda")
    assert offer.gpus_per_instance == 8
    assert worker.hardware.usd_per_hour == pytest.approx(8 * float(offer.usd_per_hour))
    assert (worker.hardware.gpu, worker.hardware.provider) == ("a100-80gb", "lambda")
    assert worker.run.storage == "postgresql://sweep@db.example.com:5432/sweeps"  # no password
    # SkyPilot's parser checks what it reads: a task it cannot launch is refused.
    broken = tmp_path / "broken.yaml"
    broken.write_text(files[0].read_text().replace("infra: lambda", "infra: lambdacloud"))
    refused = _parse(sky_python, [broken], tmp_path / "home")
    assert refused.returncode != 0 and "infra" in refused.stderr


def test_every_cloud_paretune_maps_is_one_skypilot_launches(
    tmp_path: Path, sky_python: str
) -> None:
    """One task per catalogue provider paretune rents through SkyPilot, each parsed."""
    spec = load_spec(_spec(tmp_path, "clouds"))
    rented = {o.provider for o in load_catalog().offers()} & set(SKYPILOT_CLOUDS)
    assert {"aws", "gcp", "lambda"} <= rented
    files = []
    for provider in sorted(rented):
        plan = plan_launch(spec, provider=provider)
        assert plan.offer.provider == provider
        files += write_tasks(plan, tmp_path / provider)[1:]
    parsed = _parse(sky_python, files, tmp_path / "home")
    assert parsed.returncode == 0, parsed.stderr
    assert sorted(t["cloud"] for t in json.loads(parsed.stdout)) == sorted(
        SKYPILOT_CLOUDS[p] for p in rented
    )


@pytest.mark.parametrize(
    ("storage", "flag", "expected"),
    [
        (None, [], "journal file"),
        (REMOTE_DB, ["--storage", "sqlite:///study.db"], "every machine reaches"),
        ("postgresql://sweep@127.0.0.1/sweeps", [], "on this machine"),
        ("postgresql://sweep@localhost/sweeps", [], "on this machine"),
    ],
)
def test_a_storage_the_clusters_cannot_reach_is_refused(
    tmp_path: Path, storage: str | None, flag: list[str], expected: str
) -> None:
    spec = _spec(tmp_path, "local-db", storage=storage)
    done = paretune("sweep", "launch", str(spec), "--cloud", "--dry-run", *flag)
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert "postgresql://" in done.stderr  # says what to give instead
    assert not (tmp_path / "runs" / "cloud").exists()


def test_cpu_spec_and_missing_cloud_flag_are_refused(tmp_path: Path) -> None:
    done = paretune("sweep", "launch", str(_spec(tmp_path, "cpu", device="cpu")), "--cloud")
    assert done.returncode == 2 and 'device = "cpu"' in done.stderr
    done = paretune("sweep", "launch", str(_spec(tmp_path, "flag")), "--dry-run")
    assert done.returncode == 2 and "needs --cloud" in done.stderr


def test_without_skypilot_the_command_names_the_extra(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "nosky")
    env = {**cli_env(), "PATH": str(tmp_path / "empty-bin")}
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "sweep", "launch", str(spec), "--cloud"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert "SkyPilot is not installed" in done.stderr and "paretune[cloud]" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "cloud").exists()


@pytest.mark.slow
def test_without_credentials_the_command_says_what_to_configure(
    tmp_path: Path, sky_python: str, own_model
) -> None:
    """The real `sky check` (it starts SkyPilot's local API server) in an empty home. The
    spec names a local checkpoint: the demo model would be built again in that home."""
    bin_dir = Path(sky_python).parent
    sky = bin_dir / "sky"
    if not sky.exists():
        pytest.skip(f"no `sky` command next to {sky_python}: the credentials test did NOT run")
    home = tmp_path / "home"
    home.mkdir()
    env = {**cli_env(), "HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}
    for key in [k for k in env if k.startswith(("AWS_", "GOOGLE_", "AZURE_", "RUNPOD_"))]:
        del env[key]
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tui.cli",
                "sweep",
                "launch",
                str(_spec(tmp_path, "nocreds", model=str(own_model.model_dir))),
                "--cloud",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    finally:
        subprocess.run([str(sky), "api", "stop"], capture_output=True, timeout=120, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no cloud credentials" in done.stderr and "sky check" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "cloud").exists()  # nothing written, nothing launched


def _emulate_cluster(task_file: Path, home: Path, storage: str) -> subprocess.CompletedProcess[str]:
    """Do on this machine what the cluster does: the task's file mounts under ``home``, then
    its run command (paretune comes from this source tree instead of its setup's pip)."""
    task = yaml.safe_load(task_file.read_text())
    for remote, local in task["file_mounts"].items():
        target = home / remote.removeprefix("~/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).is_dir():
            shutil.copytree(local, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(local, target)
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "paretune").write_text(f'#!/bin/sh\nexec {sys.executable} -m tui.cli "$@"\n')
    (bin_dir / "paretune").chmod(0o755)
    env = {
        **cli_env(),
        **task.get("envs", {}),
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PARETUNE_STORAGE": storage,
        "CUDA_VISIBLE_DEVICES": "",
    }
    return subprocess.run(
        ["bash", "-c", task["run"]],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=home,
    )


@pytest.mark.postgres
@pytest.mark.slow
def test_cloud_workers_charge_the_cluster_price_and_stop_at_the_dollar_budget(
    tmp_path: Path, postgres_url: str, own_model
) -> None:
    """Two clusters' workers (run here as their tasks say) on the user's own checkpoint: the
    first charges its trial at the offer's hourly price and spends the study's dollar budget;
    the second then launches no trial."""
    import optuna

    from sweeps.study import open_storage

    name = f"cloud-{uuid.uuid4().hex[:8]}"
    spec = _spec(
        tmp_path,
        name,
        model=str(own_model.model_dir),
        data=f'[data]\ntrain = "{own_model.train}"\neval = "{own_model.eval}"',
        budget="trials = 3\ndollars = 0.0002",  # 0.1 s at the offer's price: any trial spends it
    )
    out = tmp_path / "tasks"
    done = paretune(
        "sweep",
        "launch",
        str(spec),
        "--cloud",
        "--dry-run",
        "--workers",
        "2",
        "--gpu",
        "b200",
        "--provider",
        "lambda",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    (offer,) = [
        o for o in load_catalog().offers("b200", "lambda") if o.gpus_per_instance == 1
    ]  # the 1-GPU instance: cheaper an hour than the 8-GPU one
    price = float(offer.usd_per_hour)
    assert f"${price:.2f}/h a cluster" in done.stdout
    worker_spec = load_spec(next(out.glob("*.cloud.toml")))
    assert worker_spec.hardware.usd_per_hour == pytest.approx(price)

    first = _emulate_cluster(out / f"paretune-{name}-1.yaml", tmp_path / "cluster-1", postgres_url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "dollar budget" in first.stdout
    second = _emulate_cluster(out / f"paretune-{name}-2.yaml", tmp_path / "cluster-2", postgres_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "dollar budget" in second.stdout

    storage = open_storage(postgres_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = [t for t in study.trials if t.user_attrs.get("result")]
    finally:
        storage.engine.dispose()
    assert len(trials) == 1  # the second worker found the budget spent
    result = trials[0].user_attrs["result"]
    wall_h = result["measured"]["wall_s"] / 3600
    assert result["dollars"] == pytest.approx(wall_h * price * 1, rel=1e-6)
    assert result["dollars"] > 0.0002  # one trial at the cluster's price spent the budget


def test_a_data_file_missing_here_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "nodata", data='[data]\ntrain = "data/train.jsonl"')
    done = paretune("sweep", "launch", str(spec), "--cloud", "--dry-run")
    assert done.returncode == 2 and "no such file here" in done.stderr
    assert not (tmp_path / "runs" / "cloud").exists()


def test_the_gate_prices_a_sharded_trial_for_every_gpu(tmp_path: Path) -> None:
    """A worker's hourly price is per GPU (a trial is charged hours x GPUs x price): the
    budget's prediction of a 2-GPU trial counts both GPUs, as the trial will."""
    from sweeps.gate import Gate
    from sweeps.preflight import first_point

    path = _spec(tmp_path, "pair")
    priced = path.read_text().replace(
        'device = "auto"', 'device = "auto"\ngpu = "h100-sxm"\nusd_per_hour = 3.0'
    )
    path.write_text(priced)
    one = load_spec(path)
    path.write_text(priced.replace("usd_per_hour = 3.0", "usd_per_hour = 3.0\ngpus_per_trial = 2"))
    two = load_spec(path)
    assert (one.hardware.gpus_per_trial, two.hardware.gpus_per_trial) == (1, 2)
    for spec, gpus in ((one, 1), (two, 2)):
        prediction = Gate(spec).predict(spec.trial_config(first_point(spec)))
        assert prediction.hours is not None and prediction.dollars is not None
        assert prediction.dollars == pytest.approx(prediction.hours * 3.0 * gpus)
