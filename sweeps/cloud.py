"""Cloud workers through SkyPilot: a sweep as SkyPilot tasks, one worker per cluster.

:func:`plan_launch` turns a sweep spec into everything ``paretune sweep launch --cloud``
needs: the catalogue offer the clusters rent (the cheapest that fits the sweep's trials, or
the one named by ``--gpu``/``--provider``), the spec the workers run (its ``[hardware]``
priced at the cluster's hourly price, its data and model mounted next to it), and one
SkyPilot task per cluster. :func:`write_tasks` writes them as task YAML files, which
``sky launch`` runs and SkyPilot's own parser (``sky.Task.from_yaml``) reads.

Nothing here imports SkyPilot: it stays an optional extra (``paretune[cloud]``), driven
through its command line by :func:`sky_enabled_clouds` and :func:`sky_launch`.

Money: each cluster's worker charges its trials at the cluster's hourly price
(``[hardware] usd_per_hour`` = the offer's instance price / GPUs per trial, so a trial's
dollars = wall-clock hours x GPUs per trial x that = hours x the cluster's price). Those
dollars are what the study's ``[budget] dollars`` counts, under the lock every worker takes
before asking for a trial: a cloud worker stops launching trials when the study's budget is
spent, whichever worker spent it.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pricing.errors import UserError
from sweeps.spec import Choice, Fixed, Range, SweepSpec, lr_param_name

__all__ = [
    "SKYPILOT_ACCELERATORS",
    "SKYPILOT_CLOUDS",
    "CloudError",
    "CloudOffer",
    "CloudPlan",
    "choose_offer",
    "cloud_storage",
    "plan_launch",
    "sky_check",
    "sky_executable",
    "sky_launch",
    "write_tasks",
]

SKYPILOT_CLOUDS: dict[str, str] = {
    "aws": "aws",
    "azure": "azure",
    "gcp": "gcp",
    "lambda": "lambda",
    "nebius": "nebius",
    "runpod-secure": "runpod",
    "vast-ai": "vast",
}
"""Catalogue provider -> the SkyPilot cloud (``infra``) that rents it. Providers missing here
(CoreWeave, Ori, RunPod's community cloud, ...) are not offered to cloud workers."""

SKYPILOT_ACCELERATORS: dict[str, str] = {
    "b200": "B200",
    "h200": "H200",
    "h100-sxm": "H100",
    "h100-pcie": "H100",
    "a100-80gb": "A100-80GB",
    "a100-40gb": "A100",
    "l40s": "L40S",
    "rtx-6000-ada": "RTX6000-Ada",
    "a10": "A10",
    "a10g": "A10G",
    "l4": "L4",
    "rtx-4090": "RTX4090",
    "t4": "T4",
}
"""Catalogue GPU id -> SkyPilot's accelerator name (``sky show-gpus``)."""

REMOTE_DIR = "~/paretune"
"""Where a cluster's spec, data and model are mounted: ``~/paretune/<study>/``."""

INSTALL_EXTRA = "distributed"
"""The extra every cloud worker installs: the PostgreSQL driver."""

AUTOSTOP_MINUTES = 10
"""A cluster idle this long (its worker ended) is torn down (``autostop: down``)."""

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


class CloudError(UserError):
    title = "Cloud"


@dataclass(frozen=True)
class CloudOffer:
    """The catalogue offer one cluster rents, and what the sweep's trials cost on it."""

    gpu: str
    provider: str
    instance: str
    usd_per_gpu_hour: float
    cluster_gpus: int
    gpus_per_trial: int
    fits: tuple[str, ...] = ()
    too_big: tuple[str, ...] = ()
    predicted_dollars: float | None = None

    @property
    def cluster_usd_per_hour(self) -> float:
        """What the cluster costs an hour (every GPU it holds)."""
        return self.usd_per_gpu_hour * self.cluster_gpus

    @property
    def trial_usd_per_hour(self) -> float:
        """``[hardware] usd_per_hour`` of the workers: a trial's dollars (wall-clock hours x
        GPUs per trial x this) are the cluster's price for those hours."""
        return self.cluster_usd_per_hour / self.gpus_per_trial

    @property
    def cloud(self) -> str:
        return SKYPILOT_CLOUDS[self.provider]

    @property
    def accelerators(self) -> str:
        return f"{SKYPILOT_ACCELERATORS[self.gpu]}:{self.cluster_gpus}"

    def line(self) -> str:
        """The offer in one line, as the command prints it."""
        idle = self.cluster_gpus - self.gpus_per_trial
        return (
            f"{self.cluster_gpus}x {self.gpu} at {self.provider} ({self.instance}, SkyPilot "
            f"{self.cloud} {self.accelerators}): ${self.cluster_usd_per_hour:.2f}/h a cluster"
            + (f", {idle} of its GPUs idle (the smallest instance rented)" if idle > 0 else "")
        )


@dataclass
class CloudPlan:
    """What ``sweep launch --cloud`` launches: the offer, the workers' spec, the tasks."""

    spec: SweepSpec
    offer: CloudOffer
    storage_url: str
    worker_spec: SweepSpec
    clusters: list[str]
    tasks: list[dict[str, Any]]
    study_dir: str = REMOTE_DIR
    """The folder on each cluster that holds the spec (``spec.toml``), data and model."""
    mounts: dict[str, str] = field(default_factory=dict)
    """Remote path -> local path of the data and model the workers read."""


# ---------------------------------------------------------------- the storage


def cloud_storage(spec: SweepSpec, storage: str | None) -> str:
    """The PostgreSQL URL every cloud worker shares; a :class:`CloudError` for any other."""
    url = storage or spec.run.storage
    if url is None or not url.startswith(("postgresql", "postgres://")):
        what = f"the storage {url!r}" if url else f"the default journal file {spec.storage_url!r}"
        raise CloudError(
            f"cloud workers need a study storage every machine reaches, and {what} is a file "
            "on this machine: workers on rented clusters could not share it.",
            'Set `[run] storage = "postgresql://user@db-host/db"` in the spec (or pass '
            "--storage) with a PostgreSQL server the clusters can reach; see "
            "docs/guides/distributed.md.",
        )
    host = urlsplit(url.replace("postgresql+psycopg://", "postgresql://")).hostname
    if host is None or host in _LOCAL_HOSTS or host.startswith("127."):
        raise CloudError(
            f"the storage {_redact(url)} is on this machine ({host or 'a local socket'}): "
            "cloud workers need a study storage every machine reaches.",
            "Give the PostgreSQL server's address as the clusters see it (a public or VPN "
            "host name), in `[run] storage` or --storage.",
        )
    return url


def _redact(url: str) -> str:
    from sweeps.results.store import redact_url

    return redact_url(url) or url


# ---------------------------------------------------------------- the offer


def _heaviest_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Per method, the points of the search that need the most memory and time: every range
    at its high end, every numeric list at its largest value, each value of the other lists
    (``targets``, ...) in turn."""
    out: list[dict[str, Any]] = []
    for method in spec.search.methods:
        params: dict[str, Any] = {"method": method}
        others: list[tuple[str, tuple[Any, ...]]] = []
        items = list(spec.search.params.items())
        if method in spec.search.lr_by_method:
            items.append((lr_param_name(spec, method), spec.search.lr_by_method[method]))
        for name, param in items:
            if isinstance(param, Fixed):
                continue
            if isinstance(param, Range):
                params[name] = int(param.high) if param.integer else param.high
            elif isinstance(param, Choice):
                numeric = all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in param.values
                )
                if numeric:
                    params[name] = max(param.values)
                else:
                    others.append((name, param.values))
        combos = itertools.product(*(values for _, values in others))
        for combo in itertools.islice(combos, 64):
            point = dict(params)
            point.update({name: value for (name, _), value in zip(others, combo, strict=True)})
            out.append(point)
    return out


def choose_offer(spec: SweepSpec, *, gpu: str | None = None, provider: str | None = None) -> Any:
    """The offer the clusters rent: of the on-demand offers SkyPilot can launch (for ``gpu``
    and at ``provider`` when given), the one on which the most of the sweep's methods fit
    ``[hardware] gpus_per_trial`` GPUs, then the cheapest for one trial of each fitting
    method at the planner's predicted hours (each offer's instance price, all its GPUs)."""
    from pricing import load_catalog
    from sweeps.gate import Gate

    catalog = load_catalog()
    gpu_id = catalog.gpu(gpu).id if gpu is not None else None
    provider_id = catalog.check_provider(provider) if provider is not None else None
    if provider_id is not None and provider_id not in SKYPILOT_CLOUDS:
        raise CloudError(
            f"provider {provider_id!r} is not one SkyPilot launches clusters on",
            f"Pick one of {', '.join(sorted(SKYPILOT_CLOUDS))}, or leave --provider out.",
        )
    if gpu_id is not None and gpu_id not in SKYPILOT_ACCELERATORS:
        raise CloudError(
            f"GPU {gpu_id!r} has no SkyPilot accelerator name paretune knows",
            f"Pick one of {', '.join(sorted(SKYPILOT_ACCELERATORS))}, or leave --gpu out.",
        )
    offers = [
        o
        for o in catalog.offers(gpu=gpu_id, provider=provider_id)
        if o.provider in SKYPILOT_CLOUDS and o.gpu in SKYPILOT_ACCELERATORS
    ]
    if not offers:
        where = " ".join(
            p for p in (gpu_id and f"for {gpu_id}", provider_id and f"at {provider_id}") if p
        )
        raise CloudError(
            f"no on-demand offer {where} that SkyPilot launches".replace("  ", " "),
            "`paretune prices` lists the catalogue's offers; drop --gpu or --provider.",
        )
    per_trial = spec.hardware.gpus_per_trial
    gate = Gate(spec)
    arch = gate._resolve_arch()
    if arch is None and gpu_id is None:
        raise CloudError(
            f"the planner cannot size the model {spec.model!r} "
            f"({gate._planner_error or 'unknown architecture'}), so it cannot choose the GPU "
            "the clusters rent",
            "Name it: --gpu (and --provider); `paretune prices` lists the offers.",
        )
    configs = [(p["method"], spec.trial_config(p)) for p in _heaviest_points(spec)]
    by_gpu: dict[str, tuple[list[str], list[str], dict[str, float]]] = {}
    best: tuple[tuple[int, float], CloudOffer] | None = None
    for offer in offers:
        if offer.gpu not in by_gpu:
            by_gpu[offer.gpu] = _fit(gate, arch, configs, offer.gpu)
        fits, too_big, hours = by_gpu[offer.gpu]
        cluster = max(per_trial, offer.gpus_per_instance)
        usd = float(offer.usd_per_hour)
        dollars = sum(hours.values()) * usd * cluster if hours else None
        candidate = CloudOffer(
            gpu=offer.gpu,
            provider=offer.provider,
            instance=offer.instance,
            usd_per_gpu_hour=usd,
            cluster_gpus=cluster,
            gpus_per_trial=per_trial,
            fits=tuple(fits),
            too_big=tuple(too_big),
            predicted_dollars=dollars,
        )
        key = (-len(fits), dollars if dollars is not None else usd * cluster)
        if best is None or key < best[0]:
            best = (key, candidate)
    assert best is not None
    chosen = best[1]
    if not chosen.fits and arch is not None:
        raise CloudError(
            f"none of the sweep's methods ({', '.join(spec.search.methods)}) fits "
            f"{per_trial}x {chosen.gpu}" + (" or any GPU SkyPilot rents" if gpu is None else ""),
            "Shard each trial over more GPUs ([hardware] gpus_per_trial), or try a smaller "
            "model; `paretune plan MODEL` shows what fits where.",
        )
    return chosen


def _fit(
    gate: Any, arch: Any, configs: list[tuple[str, Any]], gpu: str
) -> tuple[list[str], list[str], dict[str, float]]:
    """(methods whose heaviest points all fit ``gpu``, methods that do not, predicted hours of
    each fitting method's heaviest point). Without a planner prediction (a model the planner
    cannot size) every method counts as fitting and the offers rank by price."""
    fits: dict[str, bool] = {}
    hours: dict[str, float] = {}
    for method, config in configs:
        if arch is None:
            fits.setdefault(method, True)
            continue
        try:
            est = gate.estimate_on(arch, config, gpu=gpu)
        except (ImportError, TypeError, UserError, ValueError):
            fits.setdefault(method, True)
            continue
        fits[method] = fits.get(method, True) and bool(est.fits)
        if est.hours is not None:
            hours[method] = max(hours.get(method, 0.0), float(est.hours))
    fitting = [m for m, ok in fits.items() if ok]
    return (
        fitting,
        [m for m, ok in fits.items() if not ok],
        {m: hours[m] for m in fitting if m in hours},
    )


# ---------------------------------------------------------------- the tasks


def _slug(name: str) -> str:
    """A SkyPilot cluster name part: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (slug or "sweep")[:24].rstrip("-")


def _worker_spec(
    spec: SweepSpec, offer: CloudOffer, storage_url: str, study_dir: str
) -> tuple[SweepSpec, dict[str, str]]:
    """The spec the workers run, and what to mount next to it (remote path -> local path)."""
    mounts: dict[str, str] = {}
    data_updates: dict[str, Any] = {}
    for key in ("train", "eval", "retain"):
        value = getattr(spec.data, key)
        if isinstance(value, str) and Path(value).is_absolute() and not Path(value).is_file():
            raise CloudError(
                f"[data] {key} = {value!r}: no such file here, so it cannot be copied to the "
                "clusters",
                "Give the file's path (relative to the spec), or a Hugging Face dataset name "
                "the clusters fetch themselves.",
            )
        if isinstance(value, str) and Path(value).is_file():
            name = f"{key}-{Path(value).name}"
            mounts[f"{study_dir}/data/{name}"] = str(Path(value).resolve())
            data_updates[key] = f"./data/{name}"
    model = spec.model
    if model != "demo" and Path(model).is_dir():
        mounts[f"{study_dir}/model"] = str(Path(model).resolve())
        model = "./model"
    hardware = spec.hardware.model_copy(
        update={
            "gpu": offer.gpu,
            "provider": offer.provider,
            "usd_per_hour": round(offer.trial_usd_per_hour, 6),
            "gpus": [],
            "memory_gb": None,
            "cpu_instance": None,
        }
    )
    run = spec.run.model_copy(
        update={"dir": "runs", "results": "runs/results.duckdb", "storage": _redact(storage_url)}
    )
    worker = spec.model_copy(
        update={
            "model": model,
            "hardware": hardware,
            "run": run,
            "data": spec.data.model_copy(update=data_updates),
        }
    )
    return worker, mounts


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("paretune")
    except PackageNotFoundError:
        return None
    return None if "+" in found else found


def plan_launch(
    spec: SweepSpec,
    *,
    workers: int = 1,
    gpu: str | None = None,
    provider: str | None = None,
    storage: str | None = None,
    install: str | None = None,
    max_trials: int | None = None,
) -> CloudPlan:
    """Everything ``sweep launch --cloud`` launches, without launching anything."""
    if workers < 1:
        raise CloudError(f"--workers must be >= 1, got {workers}")
    if spec.hardware.device == "cpu":
        raise CloudError(
            'the spec runs its trials on the CPU ([hardware] device = "cpu"), and cloud workers '
            "rent GPUs.",
            'Set device = "auto" or "cuda" for cloud workers (keep a CPU copy of the spec for '
            "local runs).",
        )
    url = cloud_storage(spec, storage)
    offer = choose_offer(spec, gpu=gpu, provider=provider)
    study_dir = f"{REMOTE_DIR}/{_slug(spec.name)}"
    worker, mounts = _worker_spec(spec, offer, url, study_dir)
    if install is None:
        version = _version()
        install = f"'paretune[{INSTALL_EXTRA}]" + (f"=={version}'" if version else "'")
    command = 'paretune sweep worker spec.toml --storage "$PARETUNE_STORAGE"'
    if max_trials is not None:
        command += f" --max-trials {max_trials}"
    clusters = [f"paretune-{_slug(spec.name)}-{i}" for i in range(1, workers + 1)]
    tasks = []
    for cluster in clusters:
        tasks.append(
            {
                "name": cluster,
                "resources": {
                    "infra": offer.cloud,
                    "accelerators": offer.accelerators,
                    "use_spot": False,
                    "autostop": {"idle_minutes": AUTOSTOP_MINUTES, "down": True},
                },
                "num_nodes": 1,
                "envs": {"PARETUNE_CLUSTER": cluster},
                "secrets": {"PARETUNE_STORAGE": url},
                "file_mounts": dict(mounts),
                "setup": f"pip install {install}\n",
                "run": f"cd {study_dir}\n{command}\n",
            }
        )
    return CloudPlan(
        spec=spec,
        offer=offer,
        storage_url=url,
        worker_spec=worker,
        clusters=clusters,
        tasks=tasks,
        study_dir=study_dir,
        mounts=mounts,
    )


def write_tasks(plan: CloudPlan, out_dir: Path) -> list[Path]:
    """Write the workers' spec and one task YAML per cluster into ``out_dir``; their paths
    (the spec first). The files hold the storage URL (a SkyPilot secret): only their owner
    may read them."""
    import os

    import yaml

    from sweeps.spec import write_spec

    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = write_spec(plan.worker_spec, out_dir / f"{_slug(plan.spec.name)}.cloud.toml")
    written = [spec_path]
    for task in plan.tasks:
        mounts = {f"{plan.study_dir}/spec.toml": str(spec_path.resolve()), **task["file_mounts"]}
        path = out_dir / f"{task['name']}.yaml"
        text = (
            "# A paretune cloud worker: `sky launch -c {name} --down {file}`, then "
            "`sky down {name}`.\n".format(name=task["name"], file=path.name)
            + yaml.safe_dump({**task, "file_mounts": mounts}, sort_keys=False)
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, 0o600)
        written.append(path)
    return written


# ---------------------------------------------------------------- SkyPilot's command line


def sky_executable() -> str:
    """The ``sky`` command; a :class:`CloudError` naming the extra when it is missing."""
    found = shutil.which("sky")
    if found is None:
        raise CloudError(
            "SkyPilot is not installed (no `sky` command on PATH): launching cloud workers "
            "needs it.",
            "Install the cloud extra: pip install 'paretune[cloud]', then run `sky check` to "
            "set up a cloud's credentials. --dry-run writes the task files without it.",
        )
    return found


_CONFIGURE = {
    "lambda": "an API key in ~/.lambda_cloud/lambda_keys",
    "aws": "`aws configure`",
    "gcp": "`gcloud auth application-default login`",
    "azure": "`az login`",
    "runpod": "`runpod config`",
    "vast": "an API key in ~/.config/vastai/vast_api_key",
    "nebius": "a credentials file in ~/.nebius",
}


def sky_check(sky: str, cloud: str) -> None:
    """Whether SkyPilot can launch clusters on ``cloud`` (``sky check -o json CLOUD``, only
    that cloud: checking every cloud takes minutes); a :class:`CloudError` saying what to
    configure when it cannot."""
    import tempfile

    # Files, not pipes: `sky check` may start SkyPilot's API server, which keeps its parent's
    # output open for as long as it runs (a pipe would never reach its end).
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(
            [sky, "check", "-o", "json", cloud],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=600,
            check=False,
        ).returncode
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    enabled: set[str] = set()
    if code == 0:
        start = stdout.find("{")
        try:
            found = json.loads(stdout[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            found = {}
        for clouds in found.values() if isinstance(found, dict) else ():
            for name, capabilities in (clouds or {}).items():
                if "compute" in (capabilities or []):
                    enabled.add(name.lower())
    if cloud in enabled:
        return
    detail = (stderr or stdout).strip().splitlines()
    how = _CONFIGURE.get(cloud, "see SkyPilot's installation guide")
    raise CloudError(
        f"SkyPilot has no cloud credentials for {cloud}, the cloud of the chosen offer "
        f"(`sky check {cloud}` does not enable it"
        + (f": {detail[-1]}" if code and detail else "")
        + "), so no cluster can be launched.",
        f"Configure {cloud} ({how}) "
        f"and run `sky check {cloud}` until it says enabled, or rent from a cloud you have "
        "configured with --provider. --dry-run writes the task files without any.",
    )


def sky_launch(sky: str, task_file: Path, cluster: str) -> int:
    """``sky launch`` one task on its own cluster, torn down when its worker ends; the exit
    code (SkyPilot's output goes to this terminal)."""
    return subprocess.run(
        [sky, "launch", "--yes", "--detach-run", "--down", "--cluster", cluster, str(task_file)],
        check=False,
    ).returncode
