"""Query results written to a file: one writer for ``paretune sql --out`` and the SQL screen.

The file's suffix picks the format (.csv, .parquet, .json: a list of row objects); any other
suffix is refused, and so is a folder that does not exist (a typo in a path should not create
folders), before anything is written.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pricing.errors import UserError

__all__ = ["FORMATS", "ExportError", "check_export_path", "json_default", "write_table"]

FORMATS = (".csv", ".parquet", ".json")
"""The suffixes :func:`write_table` writes."""


class ExportError(UserError):
    title = "Export failed"


def check_export_path(path: Path) -> Path:
    """``path`` if a table can be written there; else :class:`ExportError` saying what to fix."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ExportError(
            f"cannot write {path.name!r}: paretune writes .csv, .parquet and .json files",
            "End the file name with .csv, .parquet or .json (a spreadsheet opens .csv).",
        )
    if not path.parent.is_dir():
        raise ExportError(
            f"folder {path.parent} does not exist",
            f"Create it first (mkdir -p {path.parent}) or pick another path.",
        )
    return path


def write_table(table: Any, path: Path) -> Path:
    """Write the Arrow ``table`` to ``path`` in the format its suffix names."""
    path = check_export_path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import pyarrow.csv

        pyarrow.csv.write_csv(table, path)
    elif suffix == ".parquet":
        import pyarrow.parquet

        pyarrow.parquet.write_table(table, path)
    else:
        rows = table.to_pylist()
        path.write_text(json.dumps(rows, indent=2, default=json_default) + "\n", encoding="utf-8")
    return path


def json_default(value: Any) -> Any:
    """How JSON writes the values DuckDB returns that it does not know (dates, decimals)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)
