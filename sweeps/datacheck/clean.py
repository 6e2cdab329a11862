"""A trial's data made leakage-safe, and its provenance.

With an eval file, eval rows that copy or nearly copy a train row are dropped (``leakage =
"drop"``, the default), kept and counted (``"warn"``) or refused (``"error"``). Without one,
the eval rows are held out of train by :func:`sweeps.trial.data.split_eval` with duplicate
groups kept whole, so no eval row has a copy in train. Either way the result carries a
:class:`~sweeps.trial.types.DataProvenance`: the files and their hashes, the counts, and a
fingerprint of what was trained and scored on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sweeps.datacheck.check import check_rows, file_sha256
from sweeps.datacheck.dupes import find_duplicates
from sweeps.trial.types import DataFile, DataProvenance

__all__ = ["CleanTask", "clean_task"]


@dataclass(frozen=True)
class CleanTask:
    train: list[Any]
    eval: list[Any]
    provenance: DataProvenance


def clean_task(
    train: list[Any],
    eval: list[Any] | None,
    *,
    fraction: float,
    leakage: str,
    train_path: str,
    eval_path: str | None,
    retain_path: str | None,
) -> CleanTask:
    """(train, eval) after the leakage policy, with their provenance; raises the trial's
    ``DataError`` when ``leakage == "error"`` and eval rows leak."""
    from sweeps.trial.data import DataError, load_text_rows, split_eval

    if eval is None:
        groups = find_duplicates([e.text for e in train]).group.tolist()
        train, eval = split_eval(train, fraction, groups=groups)
        split = "grouped"
    else:
        split = "file"
    retain_rows: list[tuple[str, str]] = []
    if retain_path is not None and not retain_path.startswith("lm-eval:"):
        retain_rows, _ = load_text_rows(retain_path, bad_rows="skip")
    report = check_rows(train, eval, retain_rows, files=[])
    leaked = set(report.eval_leaks.rows)
    if leaked and leakage == "error":
        raise DataError(
            f"{len(leaked)} of {len(eval)} eval rows copy or nearly copy train rows: "
            + "; ".join(report.eval_leaks.examples),
            'Remove them from the eval file, or set [data] leakage = "drop" to drop them.',
        )
    kept = [e for i, e in enumerate(eval) if i not in leaked] if leakage == "drop" else eval
    if not kept:
        raise DataError(
            f"every eval row ({len(eval)}) copies a train row: nothing is left to score on",
            "Give an eval file of rows that are not in the training set.",
        )
    dropped = len(eval) - len(kept)
    rows = {
        "train": len(train) + (len(eval) if split == "grouped" else 0),
        "eval": len(eval),
        "retain": len(retain_rows),
    }
    paths = {"train": train_path, "eval": eval_path, "retain": retain_path}
    files = [
        DataFile(role=role, path=path, sha256=file_sha256(path), rows=rows[role])
        for role, path in paths.items()
        if path is not None and not path.startswith("lm-eval:")
    ]
    provenance = DataProvenance(
        fingerprint=_fingerprint(train, kept, retain_path, retain_rows, dropped),
        files=files,
        split=split,
        leakage=leakage,
        train_rows=len(train),
        eval_rows=len(kept),
        eval_leaked=len(leaked),
        eval_dropped=dropped,
        train_duplicates=report.train_duplicates.total,
        train_exact_duplicates=report.train_duplicates.exact,
        train_near_duplicates=report.train_duplicates.near,
        retain_in_train=report.retain_overlap.total,
        personal_data={kind: n for kind, n in report.pii.counts.items() if n},
    )
    return CleanTask(train, kept, provenance)


def _fingerprint(
    train: list[Any],
    eval: list[Any],
    retain_path: str | None,
    retain_rows: list[tuple[str, str]],
    dropped: int,
) -> str:
    digest = hashlib.sha256()
    for part in (train, eval):
        digest.update(json.dumps([[list(e.roles), e.text] for e in part]).encode())
    retain = [text for _, text in retain_rows] if retain_rows else retain_path
    digest.update(json.dumps([retain, dropped]).encode())
    return digest.hexdigest()
