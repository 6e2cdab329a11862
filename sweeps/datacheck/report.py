"""The data check's report as terminal tables (rich), and its one-line summary."""

from __future__ import annotations

from sweeps.datacheck.check import DataReport

__all__ = ["render_tables", "summary_line"]


def summary_line(report: DataReport) -> str:
    """``clean`` or the non-zero findings, e.g. ``3 eval rows leaking from train (30%), ...``."""
    parts = []
    for name, count in report.finding_counts().items():
        if not count:
            continue
        text = f"{count} {name}"
        if name == "eval rows leaking from train" and report.eval_leak_share is not None:
            text += f" ({report.eval_leak_share:.0%} of eval)"
        if name == "personal data":
            kinds = ", ".join(f"{k} {n}" for k, n in report.pii.counts.items() if n)
            text += f" ({kinds})"
        parts.append(text)
    return ", ".join(parts) if parts else "clean"


def render_tables(report: DataReport, console) -> None:
    """Print the files, the findings with counts, and examples by ``file:line``."""
    from rich.table import Table

    files = Table(title="files", title_justify="left")
    for column in ("role", "file", "rows", "bad rows", "length (mean / p95 / max)", "sha256"):
        files.add_column(column)
    for summary in report.files:
        length = summary.length
        files.add_row(
            summary.role,
            summary.path,
            str(summary.rows),
            str(len(summary.bad_rows)),
            f"{length.mean:.0f} / {length.p95} / {length.max} {length.unit}" if length else "-",
            (summary.sha256 or "-")[:12],
        )
    console.print(files)
    findings = Table(title="findings", title_justify="left")
    findings.add_column("check")
    findings.add_column("rows", justify="right")
    findings.add_column("examples (file:line)")
    for name, count, examples in _finding_rows(report):
        findings.add_row(name, str(count), "\n".join(examples))
    console.print(findings)
    console.print(f"summary: {summary_line(report)}")


def _finding_rows(report: DataReport) -> list[tuple[str, int, list[str]]]:
    issues, pii = report.issues, report.pii
    leak_name = "eval rows leaking from train"
    if report.eval_leak_share is not None:
        leak_name += f" ({report.eval_leak_share:.0%} of eval)"
    rows = [
        ("bad rows", report.bad_rows, [b for f in report.files for b in f.bad_rows][:5]),
        ("train duplicates", report.train_duplicates.total, report.train_duplicates.examples),
        (leak_name, report.eval_leaks.total, report.eval_leaks.examples),
        ("retain rows in train", report.retain_overlap.total, report.retain_overlap.examples),
    ]
    rows += [
        (f"personal data: {kind}", count, pii.rows[kind]) for kind, count in pii.counts.items()
    ]
    rows += [
        ("empty answers", issues.counts.get("empty_completion", 0), issues.empty_completion),
        ("chat role order", issues.counts.get("role_order", 0), issues.role_order),
        (
            f"longer than max_seq_len={report.max_seq_len}"
            if report.max_seq_len
            else "longer than max_seq_len (give --model and --max-seq-len)",
            issues.counts.get("over_max_seq_len", 0),
            issues.over_max_seq_len,
        ),
        (
            "no answer left after cutting",
            issues.counts.get("no_completion_left", 0),
            issues.no_completion_left,
        ),
    ]
    return rows
