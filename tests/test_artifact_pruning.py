"""Policy ``save = "frontier"`` deletes the artifacts of trials off the frontier, and nothing
outside the run folder, whatever path a trial recorded (a study named '..' once put them
beside the run folder, and pruning deleted by those paths)."""

from __future__ import annotations

import socket
from pathlib import Path

import optuna

from sweeps.study import open_storage
from sweeps.worker import _prune_artifacts


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return path


def test_pruning_deletes_only_inside_the_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs"
    off_frontier = _folder(run_dir / "s" / "trial-1")
    beside = _folder(tmp_path / "elsewhere")
    study = optuna.create_study(
        study_name="s",
        storage=open_storage(str(run_dir / "s.journal")),
        directions=["minimize"] * 3,
    )
    artifacts = {
        0: str(_folder(run_dir / "s" / "trial-0")),  # on the frontier: kept
        1: str(off_frontier),  # dominated, inside: deleted
        2: str(run_dir / "s" / ".." / ".." / "elsewhere"),  # dominated, outside: kept
        3: str(run_dir),  # dominated, the run folder itself: kept
    }
    for number, artifact in artifacts.items():
        trial = study.ask()
        trial.set_user_attr("state", "complete")
        trial.set_user_attr("worker_host", socket.gethostname())
        trial.set_user_attr("artifact", artifact)
        study.tell(trial, [float(number)] * 3)
    _prune_artifacts(study, run_dir)
    assert not off_frontier.exists()
    assert (beside / "adapter_model.safetensors").exists()
    assert Path(artifacts[0]).exists() and (run_dir / "s.journal").exists()
    assert study.user_attrs["deleted_artifacts"] == [str(off_frontier)]
