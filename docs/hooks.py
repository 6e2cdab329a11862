"""MkDocs hooks: reference tables generated from the code, so the docs cannot drift from it.

A page asks for a table with a marker on a line of its own:

- ``<!-- generated: spec-keys -->``: every key of a sweep spec, section by section, from the
  pydantic models in :mod:`sweeps.spec` (type, default, each field's description);
- ``<!-- generated: schema -->``: the DuckDB results schema, from
  :func:`sweeps.results.schema.schema_markdown`, the one source of the store's DDL and rows;
- ``<!-- generated: trial-states -->``: every trial state, from :class:`sweeps.outcome.Outcome`
  (its meaning, whether it uses up a trial of the budget, whether its parameters are queued
  again);
- ``<!-- generated: project-costs -->``: the whole-project cost constants, from
  ``planner/data/project_costs.json`` (value and source of each).

An unknown marker stops the build. :func:`render` is what the tests call.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "on_page_markdown",
    "project_costs_markdown",
    "render",
    "schema_markdown",
    "spec_keys_markdown",
    "trial_states_markdown",
]

_MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: replace each ``<!-- generated: NAME -->`` line by its table."""
    return render(markdown)


def render(markdown: str) -> str:
    """``markdown`` with every generated-table marker replaced."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in _GENERATORS:
            from mkdocs.exceptions import PluginError

            known = ", ".join(sorted(_GENERATORS))
            raise PluginError(f"unknown marker '<!-- generated: {name} -->' (known: {known})")
        return _GENERATORS[name]().strip()

    return _MARKER.sub(replace, markdown)


# ---------------------------------------------------------------- the results schema


def schema_markdown() -> str:
    """The results schema as Markdown tables."""
    from sweeps.results.schema import schema_markdown as from_schema_module

    return from_schema_module()


# ---------------------------------------------------------------- trial states


def trial_states_markdown() -> str:
    """Every :class:`~sweeps.outcome.Outcome` with its meaning, budget use and re-run."""
    from sweeps.outcome import BUDGET_OUTCOMES, RERUN_OUTCOMES, Outcome

    rows = [
        (
            f"`{outcome}`",
            _cell(outcome.description),
            "yes" if outcome in BUDGET_OUTCOMES else "no",
            "yes" if outcome in RERUN_OUTCOMES else "no",
        )
        for outcome in Outcome
    ]
    header = ("state", "meaning", "uses up a trial of `budget.trials`", "queued to run again")
    return _table(header, rows)


# ---------------------------------------------------------------- the sweep spec


def spec_keys_markdown() -> str:
    """Every key of a sweep spec, one table per section."""
    from pydantic import BaseModel

    from sweeps.spec import SweepSpec

    top = []
    sections = []
    for name, field in SweepSpec.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((name, annotation))
        else:
            top.append(
                (
                    f"`{name}`",
                    _type_text(annotation),
                    _default_text(field),
                    _cell(field.description),
                )
            )
    header = ("key", "type", "default", "meaning")
    parts = ["### Top level\n\n" + _table(header, top)]
    for name, model in sections:
        about = _cell((model.__doc__ or "").strip().split("\n\n")[0])
        omitted = SweepSpec.model_fields[name].get_default(call_default_factory=True)
        implied = omitted.model_dump(exclude_defaults=True)
        if implied:
            settings = ", ".join(f"`{key} = {value}`" for key, value in implied.items())
            about += f" Without this section: {settings}."
        rows = _SECTION_ROWS.get(name, _model_rows)(model)
        parts.append(f"### `[{name}]`\n\n{about}\n\n" + _table(header, rows))
    return "\n\n".join(parts)


def _model_rows(model: type) -> list[tuple[str, ...]]:
    return [
        (f"`{name}`", _type_text(field.annotation), _default_text(field), _cell(field.description))
        for name, field in model.model_fields.items()  # type: ignore[attr-defined]
    ]


def _search_rows(model: type) -> list[tuple[str, ...]]:
    """``methods``, then each searchable parameter: a value, a list or a ``{low, high}`` range."""
    from sweeps.spec import SEARCHABLE
    from sweeps.trial.types import METHODS, TrialConfig

    methods = model.model_fields["methods"]  # type: ignore[attr-defined]
    rows = [
        (
            "`methods`",
            "list of " + _choices(METHODS),
            _default_text(methods),
            "the fine-tuning methods searched",
        )
    ]
    for name, kind in SEARCHABLE.items():
        if kind.choices:
            values = _choices(kind.choices)
        else:
            values = _PYTHON_TYPES.get(kind.type, kind.type.__name__)
            if kind.type in (int, float):
                values += ", a list or a range"
            else:
                values += " or a list"
        field = TrialConfig.model_fields.get(name)
        default = _default_text(field) if field is not None else "unset"
        rows.append((f"`{name}`", values, default, _cell(kind.help)))
    warm_start = model.model_fields["warm_start"]  # type: ignore[attr-defined]
    rows.append(("`warm_start`", "string", "unset", _cell(warm_start.description)))
    return rows + _early_stopping_rows(model)


def _early_stopping_rows(model: type) -> list[tuple[str, ...]]:
    """``early_stopping`` (a table or false), then each key of its table."""
    from sweeps.spec import EarlyStoppingSection

    field = model.model_fields["early_stopping"]  # type: ignore[attr-defined]
    rows = [
        (
            "`early_stopping`",
            "a table or false",
            "on where trials have 2 rungs",
            _cell(field.description),
        )
    ]
    for name, sub in EarlyStoppingSection.model_fields.items():
        rows.append(
            (
                f"`early_stopping.{name}`",
                _type_text(sub.annotation),
                _default_text(sub),
                _cell(sub.description),
            )
        )
    return rows


def _trial_rows(model: type) -> list[tuple[str, ...]]:
    """The keys of ``[trial]``: the section's own (``repeats``), then the trial settings a spec
    may fix there: every ``TrialConfig`` field it does not set itself (described by the field,
    else by the search parameter of the same name)."""
    from sweeps.spec import _SET_ELSEWHERE, SEARCHABLE
    from sweeps.trial.types import TrialConfig

    def about(name: str, description: str | None) -> str:
        return _cell(description or (SEARCHABLE[name].help if name in SEARCHABLE else ""))

    return _model_rows(model) + [
        (
            f"`{name}`",
            _type_text(field.annotation),
            _default_text(field),
            about(name, field.description),
        )
        for name, field in TrialConfig.model_fields.items()
        if name not in _SET_ELSEWHERE
    ]


_SECTION_ROWS: dict[str, Callable[[type], list[tuple[str, ...]]]] = {
    "search": _search_rows,
    "trial": _trial_rows,
}

_PYTHON_TYPES = {str: "string", int: "integer", float: "number", bool: "true or false"}


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return _choices(args)
    if origin in (typing.Union, types.UnionType):
        named = [_type_text(a) for a in args if a is not type(None)]
        return " or ".join(named)
    if origin in (list, tuple):
        item = next((a for a in args if a is not Ellipsis), str)
        return "list of " + _type_text(item).replace("integer", "integers").replace(
            "string", "strings"
        ).replace("number", "numbers")
    return _PYTHON_TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _choices(values: Sequence[Any]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    if hasattr(value, "model_dump"):
        return ""
    return f"`{value}`"


# ---------------------------------------------------------------- Markdown


_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?(\w+)`")


def _cell(text: str | None) -> str:
    """Text safe in one table cell: one line, no Sphinx roles, no HTML, no column breaks."""
    text = _ROLE.sub(r"`\1`", " ".join((text or "").split()))
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def project_costs_markdown() -> str:
    """The whole-project cost constants: name, value and source."""
    from planner.estimation.project_cost import cost_constants

    rows = [
        (f"`{name}`", f"`{entry['value']}`", _cell(entry["source"]))
        for name, entry in cost_constants().items()
    ]
    return _table(("constant", "default", "source or reasoning"), rows)


_GENERATORS: dict[str, Callable[[], str]] = {
    "project-costs": project_costs_markdown,
    "schema": schema_markdown,
    "spec-keys": spec_keys_markdown,
    "trial-states": trial_states_markdown,
}
