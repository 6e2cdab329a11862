"""The data check: exact and near-duplicate rows, leakage between train and eval or retain,
personal data, and length and format statistics; and the leakage-safe data a trial trains on.

    report = check_files("train.jsonl", eval="eval.jsonl", retain=["retain.jsonl"])
    report.findings, report.eval_leaks.total, report.pii.counts

``paretune data check`` prints it (:mod:`tui.cli.data`), the sweep's preflight runs it, and
each trial cleans its data with :func:`~sweeps.datacheck.clean.clean_task` and records the
provenance. Modules: ``dupes`` (MinHash/LSH through datasketch), ``pii`` (patterns, Luhn),
``stats`` (lengths, chat role order), ``check`` (the report), ``report`` (its tables),
``clean`` (the trial's leakage policy and fingerprint).
"""

from sweeps.datacheck.check import DataReport, check_files, check_rows

__all__ = ["DataReport", "check_files", "check_rows"]
