"""A study as one self-contained HTML file a person can send: ``paretune report STUDY``.

The page holds, with no script and nothing fetched (charts are inline SVG drawn by
matplotlib, in the method colours of :mod:`sweeps.results.colours`):

- the frontier: the three objectives in 3-D and the three 2-D projections;
- the configuration recommended for a stated preference, with its numbers;
- the dollars spent, and the planner's predicted dollars of the recommended configuration;
- every trial with its state; learning curves of the frontier trials; forgetting per method;
- noise bands (± one standard deviation) where trials were repeated.

:func:`recommend` picks, among the Pareto-optimal trials, the one with the lowest weighted
sum of the objectives scaled to [0, 1] over the study's complete trials.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pricing.display import format_dollars
from pricing.errors import UserError
from sweeps.outcome import Outcome
from sweeps.results.colours import method_colour

__all__ = [
    "PREFERENCES",
    "ReportError",
    "Recommendation",
    "parse_preference",
    "recommend",
    "write_report",
]

_OBJECTIVES = ("objective_quality", "objective_forgetting", "objective_cost")
_NAMES = ("quality", "forgetting", "cost")

PREFERENCES: dict[str, tuple[float, float, float]] = {
    "quality": (0.6, 0.2, 0.2),
    "forgetting": (0.2, 0.6, 0.2),
    "cost": (0.2, 0.2, 0.6),
    "balanced": (1 / 3, 1 / 3, 1 / 3),
}
"""Named preferences: weights of (quality, forgetting, cost)."""


class ReportError(UserError):
    title = "Cannot write the report"


@dataclass(frozen=True)
class Recommendation:
    trial: dict[str, Any]
    weights: tuple[float, float, float]
    score: float
    """Weighted sum of the trial's objectives scaled to [0, 1] (lower is better)."""


def parse_preference(text: str) -> tuple[float, float, float]:
    """``quality``, ``forgetting``, ``cost``, ``balanced``, or weights such as
    ``quality=2,cost=1`` (missing names weigh 0; they are normalised to sum to 1)."""
    if text in PREFERENCES:
        return PREFERENCES[text]
    weights = dict.fromkeys(_NAMES, 0.0)
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if name not in weights or weight < 0:
            raise ReportError(
                f"--prefer {text!r}: {part.strip()!r} is not a preference",
                "Use quality, forgetting, cost or balanced, or weights such as "
                "quality=2,forgetting=1,cost=1 (non-negative numbers).",
            )
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ReportError(f"--prefer {text!r}: the weights sum to 0", "Give one weight above 0.")
    return tuple(weights[n] / total for n in _NAMES)  # type: ignore[return-value]


def _complete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r.get("state") == Outcome.COMPLETE and all(r.get(c) is not None for c in _OBJECTIVES)
    ]


def recommend(
    rows: list[dict[str, Any]], weights: tuple[float, float, float]
) -> Recommendation | None:
    """The Pareto-optimal trial of ``rows`` with the lowest weighted scaled objectives."""
    from sweeps.results.frontier import pareto_mask

    done = _complete(rows)
    if not done:
        return None
    lows = [min(r[c] for r in done) for c in _OBJECTIVES]
    spans = [
        (max(r[c] for r in done) - low) or 1.0 for c, low in zip(_OBJECTIVES, lows, strict=True)
    ]
    on_front = pareto_mask([[r[c] for c in _OBJECTIVES] for r in done])

    def score(row: dict[str, Any]) -> float:
        return sum(
            w * (row[c] - low) / span
            for w, c, low, span in zip(weights, _OBJECTIVES, lows, spans, strict=True)
        )

    front = [r for r, on in zip(done, on_front, strict=True) if on]
    best = min(front, key=lambda r: (score(r), r["number"]))
    return Recommendation(best, weights, score(best))


# ---------------------------------------------------------------- charts (inline SVG)


def _svg(figure: Any) -> str:
    import matplotlib.pyplot as plt

    from sweeps.results.frontier import save_figure

    buffer = io.StringIO()
    save_figure(figure, buffer, format="svg")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # without the XML prolog and doctype


def _frontier_3d(done: list[dict[str, Any]], front: set[int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(6.5, 5), dpi=100)
    axes = figure.add_subplot(projection="3d")
    for row in done:
        axes.scatter(
            row["objective_forgetting"],
            row["objective_cost"],
            row["objective_quality"],
            color=method_colour(row.get("method")),
            s=60 if row["number"] in front else 25,
            edgecolors="black" if row["number"] in front else "none",
            depthshade=False,
        )
    axes.set_xlabel("forgetting")
    axes.set_ylabel("cost ($)")
    axes.set_zlabel("quality")
    axes.set_title("all three objectives (outlined: Pareto-optimal)")
    return _svg(figure)


def _projections(rows: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    from sweeps.results.frontier import frontier_figure

    charts = []
    for x, y in (("forgetting", "quality"), ("cost", "quality"), ("cost", "forgetting")):
        figure = frontier_figure(rows, x=x, y=y, labels=labels, title=f"{y} vs {x}")
        _noise_bars(figure.axes[0], rows, x, y)
        charts.append(_svg(figure))
    return charts


def _noise_bars(axes: Any, rows: list[dict[str, Any]], x: str, y: str) -> None:
    """± one standard deviation on repeated trials (the noise band of each point)."""
    xc, yc = f"objective_{x}", f"objective_{y}"
    for row in _complete(rows):
        xerr, yerr = row.get(f"{xc}_sd"), row.get(f"{yc}_sd")
        if xerr is None and yerr is None:
            continue
        axes.errorbar(
            row[xc],
            row[yc],
            xerr=xerr,
            yerr=yerr,
            fmt="none",
            ecolor=method_colour(row.get("method")),
            alpha=0.6,
            capsize=3,
        )


def _curves(steps: Mapping[int, list[dict[str, Any]]], methods: Mapping[int, str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4), dpi=100)
    for number, curve in steps.items():
        if not curve:
            continue
        colour = method_colour(methods.get(number))
        axes.plot(
            [s["step"] for s in curve],
            [s["loss"] for s in curve],
            color=colour,
            lw=1,
            label=f"#{number} {methods.get(number)} train loss",
        )
        evals = [s for s in curve if s.get("eval_nll") is not None]
        if evals:
            axes.plot(
                [s["step"] for s in evals],
                [s["eval_nll"] for s in evals],
                color=colour,
                ls="--",
                marker="o",
                ms=3,
                lw=1,
                label=f"#{number} eval NLL",
            )
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss / NLL")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7)
    return _svg(figure)


# ---------------------------------------------------------------- the page


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if "dollars" in column:
        return format_dollars(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _with_sd(row: dict[str, Any], column: str, objective: str) -> str:
    value = _cell(row.get(column), column)
    sd = row.get(f"{objective}_sd")
    return f"{value} ± {sd:.2g}" if sd is not None and value else value


_TRIAL_COLUMNS = (
    ("#", "number"),
    ("state", "state"),
    ("method", "method"),
    ("rank", "rank"),
    ("lr", "lr"),
    ("quality", "objective_quality"),
    ("forgetting", "objective_forgetting"),
    ("$", "dollars"),
    ("predicted $", "predicted_dollars"),
    ("peak GB", "measured_peak_gb"),
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .charts svg { max-width: 100%; height: auto; }
.state-complete { color: #2a7a2a; } .state-other { color: #b22; }
.dot { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin-right: 0.3em; }
.pick { background: #fff6d5; } .muted { color: #777; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _trials_table(rows: list[dict[str, Any]], front: set[int], pick: int | None) -> str:
    head = "".join(
        f"<th class='{'text' if c in ('state', 'method') else ''}'>{_esc(h)}</th>"
        for h, c in _TRIAL_COLUMNS
    )
    body = []
    for row in rows:
        cells = []
        for _, column in _TRIAL_COLUMNS:
            if column == "state":
                state = row.get("state") or ""
                css = "state-complete" if state == Outcome.COMPLETE else "state-other"
                cells.append(f"<td class='text {css}'>{_esc(state)}</td>")
            elif column == "method":
                method = row.get("method") or ""
                cells.append(
                    f"<td class='text'><span class='dot' style='background:{method_colour(method)}'>"
                    f"</span>{_esc(method)}</td>"
                )
            elif column.startswith("objective_"):
                cells.append(f"<td>{_esc(_with_sd(row, column, column))}</td>")
            else:
                cells.append(f"<td>{_esc(_cell(row.get(column), column))}</td>")
        number = row["number"]
        mark = " ★" if number in front else ""
        cells[0] = f"<td>{number}{mark}</td>"
        css = " class='pick'" if number == pick else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return (
        f"<table id='trials'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _forgetting_table(rows: list[dict[str, Any]]) -> str:
    by_method: dict[str, list[float]] = {}
    for row in _complete(rows):
        by_method.setdefault(row.get("method") or "?", []).append(row["objective_forgetting"])
    lines = []
    for method, values in sorted(by_method.items(), key=lambda kv: sum(kv[1]) / len(kv[1])):
        mean = sum(values) / len(values)
        lines.append(
            f"<tr><td class='text'><span class='dot' style='background:{method_colour(method)}'>"
            f"</span>{_esc(method)}</td><td>{len(values)}</td><td>{mean:.4g}</td>"
            f"<td>{min(values):.4g}</td><td>{max(values):.4g}</td></tr>"
        )
    return (
        "<table id='forgetting'><thead><tr><th class='text'>method</th><th>trials</th>"
        "<th>mean</th><th>best</th><th>worst</th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>"
    )


def _recommendation(pick: Recommendation | None, preference: str) -> str:
    if pick is None:
        return "<p id='recommendation'>No trial completed: nothing to recommend yet.</p>"
    t = pick.trial
    weights = ", ".join(f"{n} {w:.2f}" for n, w in zip(_NAMES, pick.weights, strict=True))
    parts = [
        f"<b>trial #{t['number']}</b>: {_esc(t.get('method'))}",
        f"rank {t['rank']}" if t.get("rank") is not None else "",
        f"lr {t['lr']:.2g}" if t.get("lr") is not None else "",
    ]
    return (
        f"<div id='recommendation'><p>For the preference <b>{_esc(preference)}</b> (weights "
        f"{weights}), among the Pareto-optimal trials: {', '.join(p for p in parts if p)}.</p>"
        "<ul>"
        f"<li>quality (eval NLL): {_esc(_with_sd(t, 'objective_quality', 'objective_quality'))}</li>"
        f"<li>forgetting: {_esc(_with_sd(t, 'objective_forgetting', 'objective_forgetting'))}</li>"
        f"<li>measured cost: {_esc(format_dollars(t.get('dollars')))}</li>"
        f"<li>reproduce: <code>{_esc(t.get('command') or '')}</code></li>"
        "</ul></div>"
    )


def _costs(study: dict[str, Any], rows: list[dict[str, Any]], pick: Recommendation | None) -> str:
    spent = sum(r.get("dollars") or 0.0 for r in rows)
    budget = study.get("budget_dollars")
    lines = [
        f"<li>spent on this study: <b>{format_dollars(spent)}</b>"
        + (f" of a {format_dollars(budget)} budget" if budget else "")
        + f" over {len(rows)} trials</li>"
    ]
    if pick is not None:
        predicted = pick.trial.get("predicted_dollars")
        lines.append(
            "<li>the recommended configuration, as the planner predicts it on the study's "
            "hardware for the trial's workload: "
            + (
                f"<b>{format_dollars(predicted)}</b>"
                if predicted is not None
                else "no prediction recorded"
            )
            + "; run <code>paretune plan</code> with the full dataset's tokens to price a "
            "full-scale run</li>"
        )
    return f"<ul id='costs'>{''.join(lines)}</ul>"


def build_report(
    study: dict[str, Any],
    rows: list[dict[str, Any]],
    steps: Mapping[int, list[dict[str, Any]]],
    *,
    weights: tuple[float, float, float],
    preference: str,
    front: set[int],
) -> str:
    """The report's HTML text for one study (its row, its trials and the frontier's steps)."""
    from sweeps.results.frontier import axis_labels

    pick = recommend(rows, weights)
    done = _complete(rows)
    labels = axis_labels(
        {
            "quality": study.get("quality_metric"),
            "forgetting": study.get("forgetting_metric"),
        }
    )
    charts = [_frontier_3d(done, front), *_projections(rows, labels)] if done else []
    methods = {int(r["number"]): r.get("method") or "?" for r in rows}
    name = _esc(study["study"])
    repeated = any(r.get("objective_quality_sd") is not None for r in rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>paretune report: {name}</title>
<style>{_STYLE}</style></head><body>
<h1>paretune report: {name}</h1>
<p class="muted">model {_esc(study.get("model"))} · {len(rows)} trials, {len(done)} complete,
{len(front)} Pareto-optimal · every objective: lower is better</p>
<h2>Recommended configuration</h2>
{_recommendation(pick, preference)}
<h2>Cost</h2>
{_costs(study, rows, pick)}
<h2>Frontier</h2>
<p class="muted">Colour: method; size: cost; outlined and ★: Pareto-optimal on all three
objectives{"; bars: ± one standard deviation over repeats" if repeated else ""}.</p>
<div class="charts" id="frontier">{"".join(charts) or "<p>No complete trial yet.</p>"}</div>
<h2>Trials</h2>
{_trials_table(rows, front, pick.trial["number"] if pick else None)}
<h2>Learning curves of the frontier trials</h2>
<div class="charts" id="curves">{_curves(steps, methods) if any(steps.values()) else "<p>No steps logged.</p>"}</div>
<h2>Forgetting per method</h2>
{_forgetting_table(rows)}
<h2>Noise</h2>
<p id="noise">{"Repeated trials show ± one standard deviation (table) and bars (charts)." if repeated else "No trial was repeated, so there is no noise estimate: set [search] repeats to measure it."}</p>
</body></html>
"""


def write_report(db: Path, study: str, out: Path, *, preference: str = "balanced") -> Path:
    """Write the report of ``study`` in the results file ``db`` to ``out`` (.html)."""
    from pricing.errors import did_you_mean
    from sweeps.results.store import ResultsStore

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{out.name!r} is not an .html file", "End the file name with .html.")
    if not out.parent.is_dir():
        raise ReportError(
            f"folder {out.parent} does not exist", f"Create it first (mkdir -p {out.parent})."
        )
    weights = parse_preference(preference)
    if not Path(db).exists():
        raise ReportError(f"there is no results file at {db}", "Run a sweep first, or pass --db.")
    store = ResultsStore(db, lock_timeout_s=5.0)
    studies = {s["study"]: s for s in store.studies()}
    if study not in studies:
        raise ReportError(f"no study {study!r} in {db}", did_you_mean(study, list(studies)))
    rows = store.trials(study)
    front = {int(r["number"]) for r in store.frontier(study)}
    steps = {number: store.steps(study, number) for number in sorted(front)}
    page = build_report(
        studies[study], rows, steps, weights=weights, preference=preference, front=front
    )
    out.write_text(page, encoding="utf-8")
    return out
