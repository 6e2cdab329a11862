"""The quality-forgetting-cost frontier: Pareto set, hypervolume and charts.

All objectives here are "smaller is better" (the store's ``objective_*`` columns already
negate maximised metrics such as exact match). :func:`pareto_mask` and
:func:`hypervolume` are plain numpy, reused by the terminal UI and the benchmarks;
:func:`plot_frontier` (matplotlib: PNG, SVG, or an HTML page with the SVG inline) and
:func:`terminal_frontier` (plotext) draw trials as points coloured by method and sized by
cost, with the Pareto points joined.

Only ``complete`` trials are on the frontier and in its hypervolume. A ``pruned`` trial
(stopped at a rung by the sweep's early stopping, :mod:`sweeps.early_stopping`) has an eval
NLL from that step, no final forgetting and the cost of part of a run: its numbers are not
comparable with a finished trial's, so it is left out like the other unfinished states (the
SQL ``frontier`` view agrees).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pricing.display import format_dollars
from sweeps.outcome import Outcome
from sweeps.results.colours import method_colour, method_rgb

__all__ = [
    "AXES",
    "axis_labels",
    "frontier_figure",
    "frontier_hypervolume",
    "save_figure",
    "hypervolume",
    "indistinguishable_pairs",
    "mixed_data_warning",
    "pareto_mask",
    "plot_frontier",
    "reference_point",
    "terminal_frontier",
]

AXES = {
    "quality": ("objective_quality", "quality (eval NLL; lower is better)"),
    "forgetting": ("objective_forgetting", "forgetting (retain dNLL; lower is better)"),
    "cost": ("objective_cost", "cost ($)"),
}
"""Axis name -> (store column, label) for the charts."""

_MIN_MARKER, _MAX_MARKER = 30.0, 300.0
"""Marker areas (points^2) of the cheapest and the dearest trial in the PNG chart."""


def pareto_mask(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (minimisation, any dimension).

    A row is dominated when another row is <= in every objective and < in at least one;
    duplicates of a non-dominated row are all kept.
    """
    values = np.asarray(points, dtype=float)
    if values.ndim != 2:
        raise ValueError(
            f"points must be a 2-D array (trials x objectives), got shape {values.shape}"
        )
    n = len(values)
    mask = np.ones(n, dtype=bool)
    if n == 0:
        return mask
    # In lexicographic order a row's dominators all come before it, and a dominated dominator
    # is dominated by a non-dominated one (dominance is transitive): so each row needs to be
    # compared only with the non-dominated rows before it. The cost grows with the rows times
    # the frontier's size, not with the square of the rows (5,000 trials: 30 ms, not 300).
    order = np.lexsort(values.T[::-1])
    front = np.empty_like(values)
    kept = 0
    for i in order:
        row = values[i]
        ahead = front[:kept]
        if np.any(np.all(ahead <= row, axis=1) & np.any(ahead < row, axis=1)):
            mask[i] = False
            continue
        front[kept] = row
        kept += 1
    return mask


def reference_point(
    points: Sequence[Sequence[float]] | np.ndarray, margin: float = 0.1
) -> np.ndarray:
    """The worst value of each objective pushed out by ``margin`` of its range.

    The hypervolume of a set is only comparable with another measured against the same
    reference point; benchmarks fix it once from all the points they compare.
    """
    values = np.asarray(points, dtype=float)
    worst = values.max(axis=0)
    span = worst - values.min(axis=0)
    span = np.where(span > 0, span, np.maximum(np.abs(worst), 1e-12))
    return worst + margin * span


def hypervolume(
    points: Sequence[Sequence[float]] | np.ndarray, reference: Sequence[float]
) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (minimisation).

    Exact, by slicing along the last objective (the "hypervolume by slicing objectives"
    scheme, While et al., IEEE TEC 2006): fine for the hundreds of trials a sweep has.
    Points not strictly better than the reference in every objective add nothing.
    """
    ref = np.asarray(reference, dtype=float)
    values = np.asarray(points, dtype=float).reshape(-1, ref.size)
    values = values[np.all(values < ref, axis=1)]
    if len(values) == 0:
        return 0.0
    values = values[pareto_mask(values)]
    return float(_slice_volume(values, ref))


def _slice_volume(values: np.ndarray, ref: np.ndarray) -> float:
    if values.shape[1] == 1:
        return float(ref[0] - values[:, 0].min())
    order = np.argsort(values[:, -1])
    values = values[order]
    volume = 0.0
    for i in range(len(values)):
        upper = values[i + 1, -1] if i + 1 < len(values) else ref[-1]
        depth = upper - values[i, -1]
        if depth <= 0:
            continue
        volume += depth * _slice_volume(values[: i + 1, :-1], ref[:-1])
    return volume


def frontier_hypervolume(
    rows: list[dict[str, Any]], reference: Sequence[float] | None = None
) -> float:
    """Hypervolume of completed store rows over the three ``objective_*`` columns."""
    columns = ("objective_quality", "objective_forgetting", "objective_cost")
    points = [
        [row[c] for c in columns]
        for row in rows
        if row.get("state") == Outcome.COMPLETE and all(row.get(c) is not None for c in columns)
    ]
    if not points:
        return 0.0
    return hypervolume(points, reference if reference is not None else reference_point(points))


_OBJECTIVES = ("objective_quality", "objective_forgetting", "objective_cost")


def indistinguishable_pairs(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Pairs of Pareto-optimal trials (their numbers, smaller first) that the measured noise
    cannot tell apart.

    Two complete trials on the frontier of ``rows`` (store rows) are indistinguishable when,
    for each of the three objectives, they are equal or differ by less than the larger of
    the two trials' standard deviations of it (``objective_*_sd``, measured by repeating a
    trial with other seeds). A pair where neither trial has a standard deviation of some
    objective is never marked: without repeats, nothing is.
    """
    done = [
        r
        for r in rows
        if r.get("state") == Outcome.COMPLETE and all(r.get(c) is not None for c in _OBJECTIVES)
    ]
    if len(done) < 2:
        return []
    front = [
        r
        for r, on in zip(
            done, pareto_mask([[r[c] for c in _OBJECTIVES] for r in done]), strict=True
        )
        if on
    ]
    pairs: list[tuple[int, int]] = []
    for i, a in enumerate(front):
        for b in front[i + 1 :]:
            if all(_within_noise(a, b, c) for c in _OBJECTIVES):
                low, high = sorted((int(a["number"]), int(b["number"])))
                pairs.append((low, high))
    return sorted(pairs)


def _within_noise(a: dict[str, Any], b: dict[str, Any], column: str) -> bool:
    spreads = [s for s in (a.get(f"{column}_sd"), b.get(f"{column}_sd")) if s is not None]
    if not spreads:
        return False
    difference = abs(a[column] - b[column])
    return difference == 0 or difference < max(spreads)


def mixed_data_warning(rows: list[dict[str, Any]]) -> str | None:
    """A warning when the complete trials of ``rows`` (store rows) trained or were scored on
    different data (several ``data_fingerprint`` values), else None: their objectives are not
    comparable on one frontier. Trials without a fingerprint (older results) are not counted."""
    by_fingerprint: dict[str, list[int]] = {}
    for row in rows:
        fingerprint = row.get("data_fingerprint")
        if row.get("state") == Outcome.COMPLETE and fingerprint:
            by_fingerprint.setdefault(fingerprint, []).append(int(row["number"]))
    if len(by_fingerprint) < 2:
        return None
    groups = "; ".join(
        f"{fingerprint[:12]}: " + ", ".join(f"#{n}" for n in sorted(numbers))
        for fingerprint, numbers in sorted(by_fingerprint.items(), key=lambda kv: min(kv[1]))
    )
    return (
        f"warning: these trials ran on {len(by_fingerprint)} different data sets (data "
        f"fingerprints {groups}); their quality and forgetting are not comparable on one "
        "frontier. The data files changed between runs of the study; compare trials with one "
        "fingerprint (`paretune sql` on trials.data_fingerprint)."
    )


def _data_section_html(rows: list[dict[str, Any]]) -> str:
    """The HTML page's data section: each data fingerprint with its trials and what the data
    check dropped and found, and the warning when there are several; empty without any."""
    from html import escape

    by_fingerprint: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("state") == Outcome.COMPLETE and row.get("data_fingerprint"):
            by_fingerprint.setdefault(row["data_fingerprint"], []).append(row)
    if not by_fingerprint:
        return ""
    lines = [
        "<h2>Data</h2>",
        "<table><tr><th>data fingerprint</th><th>trials</th><th>eval rows leaked</th>"
        "<th>dropped</th><th>train duplicates</th></tr>",
    ]
    for fingerprint, group in by_fingerprint.items():
        first = group[0]
        cells = [
            fingerprint[:16],
            ", ".join(f"#{r['number']}" for r in group),
            *(
                str(first.get(c))
                for c in ("eval_rows_leaked", "eval_rows_dropped", "train_duplicates")
            ),
        ]
        lines.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    warning = mixed_data_warning(rows)
    if warning is not None:
        lines.append(f"<p><strong>{escape(warning)}</strong></p>")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- charts


def _chart_data(rows: list[dict[str, Any]], x: str, y: str) -> dict[str, Any]:
    columns = [AXES[a][0] for a in (x, y)]
    done = [
        r
        for r in rows
        if r.get("state") == Outcome.COMPLETE and all(r.get(c) is not None for c in columns)
    ]
    objectives = ("objective_quality", "objective_forgetting", "objective_cost")
    full = np.array(
        [[r.get(c) if r.get(c) is not None else np.inf for c in objectives] for r in done]
    ).reshape(-1, 3)
    on_front = pareto_mask(full) if len(done) else np.zeros(0, dtype=bool)
    xs = np.array([r[columns[0]] for r in done], dtype=float)
    ys = np.array([r[columns[1]] for r in done], dtype=float)
    # The 2-D front of the two plotted objectives, joined left to right.
    front_2d = pareto_mask(np.column_stack([xs, ys])) if len(done) else np.zeros(0, dtype=bool)
    order = np.argsort(xs[front_2d]) if len(done) else np.zeros(0, dtype=int)
    return {
        "rows": done,
        "xs": xs,
        "ys": ys,
        "on_front": on_front,
        "front_x": xs[front_2d][order],
        "front_y": ys[front_2d][order],
    }


def axis_labels(metrics: dict[str, str | None]) -> dict[str, str]:
    """Axis labels naming a study's metrics, e.g. ``{"forgetting": "retain_kl"}``."""
    labels = {name: label for name, (_, label) in AXES.items()}
    for axis, metric in metrics.items():
        if metric:
            better = "higher" if metric == "exact_match" else "lower"
            shown = "-exact_match" if metric == "exact_match" else metric
            labels[axis] = (
                f"{axis}: {shown} ({'negated, ' if better == 'higher' else ''}lower is better)"
            )
    return labels


def plot_frontier(
    rows: list[dict[str, Any]],
    out: str | Path,
    *,
    x: str = "forgetting",
    y: str = "quality",
    title: str | None = None,
    labels: dict[str, str] | None = None,
) -> Path:
    """Draw completed trials to ``out`` (.png, .svg or .html): colour = method, size = cost."""
    import matplotlib.pyplot as plt

    out = Path(out)
    figure = frontier_figure(rows, x=x, y=y, title=title, labels=labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".html":
        import io

        buffer = io.StringIO()
        save_figure(figure, buffer, format="svg")
        out.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{title or 'paretune frontier'}</title></head><body>\n{buffer.getvalue()}\n"
            f"{_data_section_html(rows)}</body></html>\n",
            encoding="utf-8",
        )
    else:
        save_figure(figure, out)
    plt.close(figure)
    return out


def save_figure(figure: Any, target: Any, **savefig: Any) -> None:
    """``figure.savefig`` cropped to what is drawn, the legends right of the plot included
    (a tight crop leaves out a legend added with ``add_artist`` unless it is named)."""
    legends = [
        artist
        for axes in figure.axes
        for artist in (*axes.artists, axes.get_legend())
        if artist is not None
    ]
    figure.savefig(target, bbox_inches="tight", bbox_extra_artists=legends, **savefig)


def frontier_figure(
    rows: list[dict[str, Any]],
    *,
    x: str = "forgetting",
    y: str = "quality",
    title: str | None = None,
    labels: dict[str, str] | None = None,
) -> Any:
    """The matplotlib figure :func:`plot_frontier` saves (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _chart_data(rows, x, y)
    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    costs = np.array([r.get("objective_cost") or 0.0 for r in data["rows"]], dtype=float)
    sizes = _marker_sizes(costs)
    methods = [r.get("method") or "?" for r in data["rows"]]
    for method in sorted(set(methods)):
        chosen = np.array([m == method for m in methods])
        for front in (False, True):  # outlined: Pareto-optimal on all three objectives
            picked = chosen & (data["on_front"] == front)
            if picked.any():
                axes.scatter(
                    data["xs"][picked],
                    data["ys"][picked],
                    s=sizes[picked],
                    c=method_colour(method),
                    alpha=0.75,
                    edgecolors="black" if front else "none",
                    linewidths=1.2,
                )
    if len(data["front_x"]):
        axes.plot(
            data["front_x"],
            data["front_y"],
            "-",
            color="black",
            lw=1,
            alpha=0.6,
            drawstyle="steps-post",
        )
    _label_frontier_points(axes, data, sizes)
    labels = labels or {name: label for name, (_, label) in AXES.items()}
    axes.set_xlabel(labels[x])
    axes.set_ylabel(labels[y])
    axes.set_title(title or "trials (size: cost; outlined: Pareto-optimal on all three)")
    axes.grid(alpha=0.3)
    if data["rows"]:
        _legends(axes, sorted(set(methods)), costs, x=x, y=y, front=len(data["front_x"]) > 0)
    return figure


def _marker_sizes(costs: np.ndarray) -> np.ndarray:
    """Marker areas growing with cost, from the cheapest trial's to the dearest's."""
    if not len(costs):
        return costs
    return _MIN_MARKER + (_MAX_MARKER - _MIN_MARKER) * (costs - costs.min()) / (
        np.ptp(costs) or 1.0
    )


def _label_frontier_points(axes: Any, data: dict[str, Any], sizes: np.ndarray) -> None:
    """ "#n" beside each Pareto point, offset past its marker's edge so it hides no point."""
    for row, xv, yv, front, size in zip(
        data["rows"], data["xs"], data["ys"], data["on_front"], sizes, strict=False
    ):
        if front:
            offset = np.sqrt(size) / 2 + 2  # the marker's radius in points, plus a gap
            axes.annotate(
                f"#{row['number']}",
                (xv, yv),
                fontsize=7,
                xytext=(offset, offset),
                textcoords="offset points",
            )


def _legends(
    axes: Any, methods: list[str], costs: np.ndarray, *, x: str, y: str, front: bool
) -> None:
    """Two legends of normal-sized markers: colour = method, and what a marker's size costs."""
    from matplotlib.lines import Line2D

    method_handles = [
        Line2D([], [], ls="", marker="o", ms=7, color=method_colour(m), label=m) for m in methods
    ]
    if front:
        method_handles.append(
            Line2D([], [], color="black", lw=1, alpha=0.6, label=f"Pareto front ({x} vs {y})")
        )
    # Outside the plot, right of it: a legend inside would hide points.
    first = axes.legend(
        handles=method_handles,
        fontsize=8,
        title="method",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
    )
    axes.add_artist(first)
    shown_costs = sorted({float(costs.min()), float(np.median(costs)), float(costs.max())})
    size_handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            ms=float(np.sqrt(size)),
            color="#bbbbbb",
            markeredgecolor="#555555",
            label=format_dollars(cost),
        )
        for cost, size in zip(shown_costs, _marker_sizes_for(shown_costs, costs), strict=True)
    ]
    axes.legend(
        handles=size_handles,
        fontsize=8,
        title="cost",
        labelspacing=1.2,
        loc="lower left",
        bbox_to_anchor=(1.02, 0.0),
    )


def _marker_sizes_for(values: list[float], costs: np.ndarray) -> list[float]:
    """The marker areas of ``values`` on the scale set by ``costs``."""
    span = np.ptp(costs) or 1.0
    return [_MIN_MARKER + (_MAX_MARKER - _MIN_MARKER) * (v - costs.min()) / span for v in values]


def terminal_frontier(
    rows: list[dict[str, Any]],
    *,
    x: str = "forgetting",
    y: str = "quality",
    width: int | None = None,
    height: int | None = None,
    title: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """The same chart as text for the terminal (plotext); returns the rendered string."""
    import plotext as plt

    data = _chart_data(rows, x, y)
    plt.clear_figure()
    if width and height:
        plt.plotsize(width, height)
    methods = [r.get("method") or "?" for r in data["rows"]]
    markers = {"full": "x", "lora": "o", "qlora": "+", "dora": "*", "freeze": "#"}
    for method in sorted(set(methods)):
        chosen = np.array([m == method for m in methods])
        plt.scatter(
            data["xs"][chosen].tolist(),
            data["ys"][chosen].tolist(),
            label=method,
            marker=markers.get(method, "dot"),
            color=method_rgb(method),
        )
    if len(data["front_x"]) > 1:
        plt.plot(data["front_x"].tolist(), data["front_y"].tolist(), label="Pareto front")
    labels = labels or {name: label for name, (_, label) in AXES.items()}
    plt.xlabel(labels[x])
    plt.ylabel(labels[y])
    plt.title(title or "trials")
    return plt.build()
