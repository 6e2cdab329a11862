"""The data check: duplicates, leakage, personal data and format, for a train file and its
eval and retain files, as one :class:`DataReport`.

Rows are read by the trial's own loaders (:mod:`sweeps.trial.data`) with bad rows skipped and
reported, so what is checked is what a trial would train and score on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweeps.datacheck.dupes import NEAR_CHARS, THRESHOLD, Duplicates, find_duplicates
from sweeps.datacheck.pii import PiiFindings, scan
from sweeps.datacheck.stats import LengthStats, RowIssues, lengths, row_issues, token_counts

__all__ = ["DataReport", "FileSummary", "Overlap", "check_files", "check_rows", "file_sha256"]

_KEEP = 5  # examples kept per finding


@dataclass(frozen=True)
class FileSummary:
    """One checked file: its role, path, content hash, usable rows and skipped bad rows."""

    role: str  # train | eval | retain
    path: str
    sha256: str | None
    rows: int
    bad_rows: list[str]
    length: LengthStats | None = None


@dataclass
class Overlap:
    """Rows of one set that are copies (``exact``) or near copies (``near``) of rows of
    another (or of earlier rows of the same set); ``examples`` as ``this ~ that (kind)``."""

    exact: int = 0
    near: int = 0
    examples: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # indices, in the set checked

    @property
    def total(self) -> int:
        return self.exact + self.near

    def add(self, index: int, kind: str, this: str, that: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.rows.append(index)
        if len(self.examples) < _KEEP:
            symbol = "=" if kind == "exact" else "≈"
            self.examples.append(f"{this} {symbol} {that} ({kind})")


@dataclass
class DataReport:
    """Everything the check found. ``findings`` counts what a user should look at; 0: clean."""

    files: list[FileSummary]
    train_duplicates: Overlap
    eval_leaks: Overlap
    retain_overlap: Overlap
    pii: PiiFindings
    issues: RowIssues
    threshold: float
    max_seq_len: int | None
    eval_rows: int = 0

    @property
    def eval_leak_share(self) -> float | None:
        return self.eval_leaks.total / self.eval_rows if self.eval_rows else None

    @property
    def bad_rows(self) -> int:
        return sum(len(f.bad_rows) for f in self.files)

    def finding_counts(self) -> dict[str, int]:
        """Each kind of finding and how many rows have it (zero kinds included)."""
        return {
            "bad rows": self.bad_rows,
            "train duplicates": self.train_duplicates.total,
            "eval rows leaking from train": self.eval_leaks.total,
            "retain rows in train": self.retain_overlap.total,
            "personal data": self.pii.total,
            "empty answers": self.issues.counts.get("empty_completion", 0),
            "chat role order": self.issues.counts.get("role_order", 0),
            "longer than max_seq_len": self.issues.counts.get("over_max_seq_len", 0),
            "no answer left after cutting": self.issues.counts.get("no_completion_left", 0),
        }

    @property
    def findings(self) -> int:
        return sum(self.finding_counts().values())

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (what ``paretune data check --format json`` prints); matches never."""
        return {
            "clean": self.findings == 0,
            "findings": self.finding_counts(),
            "files": [asdict(f) for f in self.files],
            "train_duplicates": _overlap_json(self.train_duplicates),
            "eval_leaks": {
                **_overlap_json(self.eval_leaks),
                "eval_rows": self.eval_rows,
                "share": self.eval_leak_share,
            },
            "retain_overlap": _overlap_json(self.retain_overlap),
            "personal_data": {"counts": self.pii.counts, "rows": self.pii.rows},
            "format": {
                "counts": self.issues.counts,
                "empty_completion": self.issues.empty_completion,
                "role_order": self.issues.role_order,
                "over_max_seq_len": self.issues.over_max_seq_len,
                "no_completion_left": self.issues.no_completion_left,
            },
            "near_duplicate_threshold": self.threshold,
            "max_seq_len": self.max_seq_len,
        }


def _overlap_json(overlap: Overlap) -> dict[str, Any]:
    return {
        "exact": overlap.exact,
        "near": overlap.near,
        "total": overlap.total,
        "examples": overlap.examples,
    }


def file_sha256(path: str) -> str | None:
    """The SHA-256 of a file's bytes (None for an ``hf:`` dataset or a missing file)."""
    file = Path(path)
    if path.startswith("hf:") or not file.is_file():
        return None
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(
    train: str,
    *,
    eval: str | None = None,
    retain: Sequence[str] = (),
    tokenizer: Any = None,
    max_seq_len: int | None = None,
    threshold: float = THRESHOLD,
) -> DataReport:
    """Read and check the files; raises :class:`sweeps.trial.data.DataError` when one cannot be
    read at all (missing, or without one usable row)."""
    from sweeps.trial.data import load_examples, load_text_rows

    train_rows, train_bad = load_examples(train, tokenizer, bad_rows="skip")
    files = [FileSummary("train", train, file_sha256(train), len(train_rows), train_bad)]
    eval_rows: list[Any] = []
    if eval is not None:
        eval_rows, eval_bad = load_examples(eval, tokenizer, bad_rows="skip")
        files.append(FileSummary("eval", eval, file_sha256(eval), len(eval_rows), eval_bad))
    retain_rows: list[tuple[str, str]] = []
    for path in retain:
        rows, bad = load_text_rows(path, bad_rows="skip")
        retain_rows += rows
        files.append(FileSummary("retain", path, file_sha256(path), len(rows), bad))
    return check_rows(
        train_rows,
        eval_rows,
        retain_rows,
        files=files,
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        threshold=threshold,
    )


def check_rows(
    train: Sequence[Any],
    eval: Sequence[Any],
    retain: Sequence[tuple[str, str]],
    *,
    files: list[FileSummary],
    tokenizer: Any = None,
    max_seq_len: int | None = None,
    threshold: float = THRESHOLD,
) -> DataReport:
    """Check parsed rows: task ``Example``s of train and eval, ``(source, text)`` retain rows."""
    texts = [e.text for e in train] + [e.text for e in eval] + [text for _, text in retain]
    texts = [text[:NEAR_CHARS] for text in texts]  # one 49 MB line must not cost gigabytes
    sources = [e.source for e in train] + [e.source for e in eval] + [s for s, _ in retain]
    duplicates = find_duplicates(texts, threshold=threshold)
    spans = _spans(len(train), len(eval), len(retain))
    task = list(train) + list(eval)
    counts = token_counts(task, tokenizer) if tokenizer is not None else None
    _add_lengths(files, task, counts, len(train))
    return DataReport(
        files=files,
        train_duplicates=_within(duplicates, sources, spans["train"]),
        eval_leaks=_across(duplicates, sources, spans["eval"], spans["train"]),
        retain_overlap=_across(duplicates, sources, spans["retain"], spans["train"]),
        pii=scan(zip(sources, texts, strict=True), keep=_KEEP),
        issues=row_issues(task, counts, max_seq_len if counts is not None else None, keep=_KEEP),
        threshold=threshold,
        max_seq_len=max_seq_len,
        eval_rows=len(eval),
    )


def _spans(train: int, eval: int, retain: int) -> dict[str, range]:
    return {
        "train": range(0, train),
        "eval": range(train, train + eval),
        "retain": range(train + eval, train + eval + retain),
    }


def _within(dupes: Duplicates, sources: list[str], span: range) -> Overlap:
    """Rows of ``span`` that copy an earlier row of ``span``."""
    found = Overlap()
    first_of: dict[int, int] = {}
    for i in span:
        group = int(dupes.group[i])
        if group not in first_of:
            first_of[group] = i
            continue
        exact = int(dupes.exact_of[i])
        if exact >= 0:
            found.add(i - span.start, "exact", sources[i], sources[exact])
        else:
            found.add(i - span.start, "near", sources[i], sources[first_of[group]])
    return found


def _across(dupes: Duplicates, sources: list[str], span: range, other: range) -> Overlap:
    """Rows of ``span`` that copy a row of ``other`` (which comes before ``span``, so an exact
    copy's first occurrence is in ``other``)."""
    in_other: dict[int, int] = {}
    for i in other:
        in_other.setdefault(int(dupes.group[i]), i)
    found = Overlap()
    for i in span:
        match = in_other.get(int(dupes.group[i]))
        if match is None:
            continue
        exact = int(dupes.exact_of[i])
        if exact in other:
            found.add(i - span.start, "exact", sources[i], sources[exact])
        else:
            found.add(i - span.start, "near", sources[i], sources[match])
    return found


def _add_lengths(
    files: list[FileSummary], task: list[Any], counts: list[tuple[int, int]] | None, train: int
) -> None:
    """Fill each task file's length statistics (tokens with a tokenizer, else words)."""
    for index, role, rows in ((0, "train", task[:train]), (1, "eval", task[train:])):
        if index >= len(files) or files[index].role != role:
            continue
        if counts is not None:
            part = counts[:train] if role == "train" else counts[train:]
            values, unit = [p + c for p, c in part], "tokens"
        else:
            values, unit = [len(e.text.split()) for e in rows], "words"
        summary = files[index]
        files[index] = FileSummary(
            summary.role,
            summary.path,
            summary.sha256,
            summary.rows,
            summary.bad_rows,
            lengths(values, unit),
        )
