"""The plan screen's whole-project panel: what the highlighted method's project costs.

Nothing here imports textual; it returns a rich renderable for a ``Static``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tui.screens.plan_inputs import PlanView, planner_inputs

__all__ = ["project_panel"]


def project_panel(view: PlanView, arch: Any, catalog: Any, method: str) -> Group | Text:
    """Training, evaluation, forgetting, start-up and storage of ``method``'s sweep, broken down."""
    from planner import estimate
    from planner.estimation.project_cost import project_cost

    request = view.request
    workload, spec = planner_inputs(request, method)
    est = estimate(
        arch, workload, spec, gpu=request.gpu, provider=request.provider, catalog=catalog
    )
    project = project_cost(arch, est)
    if project is None:
        return Text(f"No price for {request.gpu}: no whole-project cost.", style="dim")
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("term")
    table.add_column("dollars", justify="right")
    table.add_column("what", style="dim")
    for term in project.per_trial:
        table.add_row(f"{term.name} / trial", f"${term.dollars:,.2f}", term.detail)
    table.add_row("× trials", str(project.trials), "the sweep's default trial budget")
    for term in project.once:
        table.add_row(term.name, f"${term.dollars:,.2f}", term.detail)
    table.add_row(Text("total", style="bold"), Text(f"${project.total:,.2f}", style="bold"), "")
    title = Text(
        f"Whole project of {spec.label()}: a sweep of {project.trials} trials", style="bold"
    )
    return Group(title, table)
