"""The plan screen: per method, peak memory, fit, GPUs, hours and dollars, as you type.

Every input change re-reads the form and recomputes the table in the handler (the
planner is pure and fast). Two things can be slow and run in thread workers: resolving
a model name that is not in the built-in catalogue (a local folder or a Hugging Face id)
and the step simulator (Ctrl+S).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Checkbox, DataTable, Header, Input, Label, Select, Static
from textual.worker import get_current_worker

from pricing.errors import UserError
from pricing.staleness import staleness_notice
from tui.messages import SweepThisPlan
from tui.screens.plan_inputs import (
    PLAN_METHODS,
    BadInput,
    PlanForm,
    PlanRequest,
    PlanView,
    plan_command,
    plan_view,
    planner_inputs,
)
from tui.screens.plan_project import project_panel
from tui.widgets import AppFooter, AppScreen, ErrorLine

__all__ = ["PlanScreen"]

_INPUTS = {  # widget id -> PlanForm field
    "model": "model",
    "seq-len": "seq_len",
    "batch": "batch",
    "grad-accum": "grad_accum",
    "dataset": "dataset",
    "epochs": "epochs",
    "gpus": "gpus",
    "rank": "rank",
    "targets": "targets",
    "logit-copies": "logit_copies",
}
_SELECTS = {
    "framework": "framework",
    "loss": "loss",
    "gpu": "gpu",
    "sharding": "sharding",
    "provider": "provider",
    "optimizer": "optimizer",
}
_CHECKBOXES = {
    "grad-ckpt": "grad_checkpointing",
    "opt-in-bwd": "optimizer_in_backward",
    "unquantized-fp32": "unquantized_fp32",
}
_BAR_WIDTH = 20
_RESOLVE_PAUSE_S = 0.3


@dataclass
class ModelResolved(Message):
    name: str
    arch: Any | None
    error: BaseException | None = None


@dataclass
class Simulated(Message):
    request: PlanRequest
    peaks_gb: dict[str, float]
    error: BaseException | None = None
    done: bool = False


class PlanScreen(AppScreen):
    BINDINGS = [
        Binding("ctrl+y", "copy_command", "Copy command"),
        Binding("ctrl+s", "simulate", "Simulate"),
        # Inputs take Ctrl+W as "delete a word"; here it means "sweep this plan".
        Binding("ctrl+w", "sweep_plan", "Sweep this plan", priority=True),
    ]
    AUTO_FOCUS = "#model"  # the first thing to type
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    DEFAULT_CSS = """
    PlanScreen #plan-body { height: 1fr; }
    PlanScreen #plan-form { width: 33; border-right: tall $panel; padding: 0 1 0 0; }
    PlanScreen.-narrow #plan-form { width: 30; }
    PlanScreen.-narrow #plan-out { padding: 0; scrollbar-size-vertical: 1; }
    PlanScreen .field { height: 1; margin: 0 0 0 1; }
    PlanScreen .field Label { width: 13; color: $text-muted; }
    PlanScreen .field Input, PlanScreen .field Select { width: 1fr; }
    PlanScreen #model-matches { color: $text-muted; height: auto; margin: 0 0 1 1; }
    PlanScreen #plan-form Checkbox { margin: 0 0 0 1; }
    PlanScreen #framework-heading { color: $text-muted; margin: 0 0 0 1; }
    PlanScreen #plan-out { width: 1fr; padding: 0 1; }
    PlanScreen #methods { height: auto; max-height: 9; }
    PlanScreen #cheapest, PlanScreen #breakdown, PlanScreen #api-prices, PlanScreen #project-cost {
        margin: 1 0 0 0; height: auto;
    }
    PlanScreen #sim-status { height: 1; color: $text-muted; }
    PlanScreen #price-age { color: $text-muted; margin: 1 0 0 0; }
    """

    def __init__(self, form: PlanForm | None = None) -> None:
        super().__init__()
        from planner import list_models
        from pricing import load_catalog

        self.catalog = load_catalog()
        self.models = list_models()
        self.profile, self.profile_note = _calibration_profile()
        self.form = form or PlanForm()
        self.arch: Any | None = None
        self.arch_name: str | None = None
        self.view: PlanView | None = None
        self.simulated: dict[str, float] = {}
        self.simulated_for: PlanRequest | None = None
        self.selected_method = "lora"
        self._resolve_timer = None
        self._model_error: BaseException | None = None
        """Why the typed model did not resolve, held back while it may be half typed."""

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        from planner.specs import FRAMEWORKS, LOSSES, OPTIMIZERS, SHARDINGS, TARGET_GROUPS

        # Shortest first: the suggester offers the first name that extends the text, so
        # "qwen2.5-7" completes to "qwen2.5-7b", not "qwen2.5-72b".
        names = sorted(
            {n for arch in self.models for n in (arch.name, *arch.aliases)},
            key=lambda n: (len(n), n),
        )
        gpu_ids = [gpu.id for gpu in self.catalog.gpus]
        f = self.form
        yield Header()
        with Horizontal(id="plan-body"):
            with VerticalScroll(id="plan-form"):
                yield from self._field(
                    "model",
                    Input(
                        f.model,
                        id="model",
                        compact=True,
                        suggester=SuggestFromList(names, case_sensitive=False),
                        placeholder="name, HF id or folder",
                    ),
                )
                yield Static("", id="model-matches")
                yield from self._field("seq length", Input(f.seq_len, id="seq-len", compact=True))
                yield from self._field("micro-batch", Input(f.batch, id="batch", compact=True))
                yield from self._field(
                    "grad accum", Input(f.grad_accum, id="grad-accum", compact=True)
                )
                yield from self._field(
                    "dataset",
                    Input(f.dataset, id="dataset", compact=True, placeholder="20M or 50k x 400"),
                )
                yield from self._field("epochs", Input(f.epochs, id="epochs", compact=True))
                yield from self._field(
                    "GPU",
                    Select(
                        [(g, g) for g in gpu_ids],
                        value=f.gpu,
                        id="gpu",
                        compact=True,
                        allow_blank=False,
                    ),
                )
                yield from self._field("GPU count", Input(f.gpus, id="gpus", compact=True))
                yield from self._field(
                    "sharding",
                    Select(
                        [(h, h) for h in SHARDINGS],
                        value=f.sharding,
                        id="sharding",
                        compact=True,
                        allow_blank=False,
                    ),
                )
                yield from self._field(
                    "provider",
                    Select(
                        [(p, p) for p in self.catalog.providers],
                        value=f.provider or Select.NULL,
                        prompt="cheapest",
                        id="provider",
                        compact=True,
                    ),
                )
                yield from self._field("LoRA rank", Input(f.rank, id="rank", compact=True))
                # attn, mlp, all, or module names such as q_proj,v_proj
                yield from self._field(
                    "targets",
                    Input(
                        f.targets,
                        id="targets",
                        compact=True,
                        suggester=SuggestFromList(TARGET_GROUPS),
                        placeholder="attn, mlp, all",
                    ),
                )
                yield from self._field(
                    "optimizer",
                    Select(
                        [(o, o) for o in OPTIMIZERS],
                        value=f.optimizer,
                        id="optimizer",
                        compact=True,
                        allow_blank=False,
                    ),
                )
                yield Checkbox(
                    "gradient checkpointing", f.grad_checkpointing, id="grad-ckpt", compact=True
                )
                # How the training framework behaves (paretune plan's framework options).
                yield Label("framework options", id="framework-heading")
                yield from self._field(
                    "framework",
                    Select(
                        [(name, name) for name in FRAMEWORKS],
                        value=f.framework,
                        id="framework",
                        compact=True,
                        allow_blank=False,
                        tooltip=(
                            "Plan the run as this framework runs it (its loss, checkpointing, "
                            "adapter dtype, optimizer); settings you change here win."
                        ),
                    ),
                )
                yield from self._field(
                    "loss",
                    Select(
                        [("framework's", "")] + [(name, name) for name in LOSSES],
                        value=f.loss,
                        id="loss",
                        compact=True,
                        allow_blank=False,
                        tooltip=(
                            "standard: full fp32 logits; chunked: 16-bit logits upcast chunk "
                            "by chunk (torchtune); fused: lm_head + loss in chunks (Liger, "
                            "TRL, Unsloth)."
                        ),
                    ),
                )
                yield Checkbox(
                    "optimizer in backward",
                    f.optimizer_in_backward,
                    id="opt-in-bwd",
                    compact=True,
                    tooltip=(
                        "Step each parameter as soon as its gradient is complete and free it "
                        "(torchtune's optimizer_in_bwd): one gradient alive at a time. Needs "
                        "grad accum 1."
                    ),
                )
                yield Checkbox(
                    "QLoRA unquantized fp32",
                    f.unquantized_fp32,
                    id="unquantized-fp32",
                    compact=True,
                    tooltip=(
                        "QLoRA: embeddings, lm_head and norms in fp32, as peft's "
                        "prepare_model_for_kbit_training leaves them (TRL, paretune trial); "
                        "off: in the 16-bit compute dtype (transformers, torchtune)."
                    ),
                )
                yield from self._field(
                    "logit copies",
                    Input(
                        f.logit_copies,
                        id="logit-copies",
                        compact=True,
                        tooltip=(
                            "fp32 copies of the seq x batch x vocab logits alive in the loss "
                            "backward: 3 with transformers 5, 4 with fp32 logits from the model "
                            "(torchtune 0.1), 5 with transformers 4.31-4.44."
                        ),
                    ),
                )
            with VerticalScroll(id="plan-out"):
                yield ErrorLine(id="plan-error")
                # One space between columns (the cells carry it), not two: at 80 columns the
                # table fits beside the form, "$" and "sim GB" included.
                yield DataTable(id="methods", cursor_type="row", cell_padding=0)
                yield Static("", id="sim-status")
                yield Static("", id="cheapest")
                yield Static("", id="breakdown")
                yield Static("", id="api-prices")
                yield Static("", id="project-cost")
                yield Static("", id="price-age")
        yield AppFooter()

    def _field(self, label: str, widget) -> ComposeResult:
        with Horizontal(classes="field"):
            yield Label(label)
            yield widget

    def on_mount(self) -> None:
        table = self.query_one("#methods", DataTable)
        table.add_columns(*_spaced(["method", "peak GB", "fits", "GPUs", "hours", "$", "sim GB"]))
        self._model_changed(self.form.model)

    # -- reading the form --------------------------------------------------------------

    def _read_form(self) -> PlanForm:
        values: dict[str, Any] = {}
        for widget_id, name in _INPUTS.items():
            values[name] = self.query_one(f"#{widget_id}", Input).value
        for widget_id, name in _SELECTS.items():
            value = self.query_one(f"#{widget_id}", Select).value
            values[name] = "" if value is Select.NULL else str(value)
        for widget_id, name in _CHECKBOXES.items():
            values[name] = self.query_one(f"#{widget_id}", Checkbox).value
        return PlanForm(**values)

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if event.input.id == "model":
            self._model_changed(event.value)
        else:
            self.recompute()

    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _choice_changed(self, event) -> None:
        event.stop()
        self.recompute()

    # -- the model ---------------------------------------------------------------------

    def _model_changed(self, name: str) -> None:
        from planner import search_models

        name = name.strip()
        self._model_error = None
        matches = search_models(name) if name else ()
        shown = ", ".join(m.name for m in matches[:4]) + (" …" if len(matches) > 4 else "")
        self.query_one("#model-matches", Static).update(
            f"catalogue: {shown}" if matches else "not in the catalogue: HF id or local folder"
        )
        exact = next(
            (
                m
                for m in self.models
                if name.lower()
                in {m.name.lower(), *(a.lower() for a in m.aliases), (m.hf_id or "").lower()}
            ),
            None,
        )
        if exact is not None:
            # A catalogue entry resolves instantly, in the handler.
            self.arch, self.arch_name = exact, name
            self.recompute()
        else:
            # A folder or Hub id may take a while (disk, network): resolve it in a worker,
            # once typing pauses, so a half-typed id does not start a lookup per keystroke.
            # Until it answers, the table keeps the last model's plan and nothing is copied
            # or swept under the new name.
            self.arch, self.arch_name = None, None
            if self._resolve_timer is not None:
                self._resolve_timer.stop()
            self._resolve_timer = self.set_timer(
                _RESOLVE_PAUSE_S, lambda: self._resolve_model(name)
            )

    @work(thread=True, exclusive=True, exit_on_error=False, group="resolve")
    def _resolve_model(self, name: str) -> None:
        from planner import resolve_model

        if not name:
            self.post_message(
                ModelResolved(
                    name,
                    None,
                    BadInput("model: type a catalogue name, a Hugging Face id or a local folder"),
                )
            )
            return
        try:
            self.post_message(ModelResolved(name, resolve_model(name)))
        except Exception as error:  # a UserError in the normal case; shown inline either way
            self.post_message(ModelResolved(name, None, error))

    @on(ModelResolved)
    def _model_resolved(self, message: ModelResolved) -> None:
        if message.name != self.query_one("#model", Input).value.strip():
            return  # the user has typed on since: a newer lookup is coming
        if message.error is not None:
            self.arch, self.arch_name = None, None
            if self._still_typing(message.name):
                self._model_error = message.error  # shown if the field is left like this
            else:
                self._show_error(message.error)
            return
        self.arch, self.arch_name = message.arch, message.name
        self.recompute()

    def _still_typing(self, name: str) -> bool:
        """Whether ``name`` is, in the focused model field, the start of a catalogue name."""
        field = self.query_one("#model", Input)
        return field.has_focus and bool(name) and _starts_a_catalogue_name(name, self.models)

    @on(Input.Blurred, "#model")
    @on(Input.Submitted, "#model")
    def _model_left(self, event) -> None:
        error, self._model_error = self._model_error, None
        if error is not None and self.arch is None:
            self._show_error(error)

    # -- computing and showing ---------------------------------------------------------

    def recompute(self) -> None:
        """Re-read the form and redraw every output (called on each change)."""
        try:
            request = self._read_form().parse()
            if self.arch is None:
                return
            view = plan_view(request, self.arch, self.catalog, self.profile)
        except UserError as error:
            self._show_error(error)
            return
        self.query_one("#plan-error", ErrorLine).clear()
        self.view = view
        self._show_view(view)

    def _show_error(self, error: BaseException) -> None:
        self.query_one("#plan-error", ErrorLine).show_error(error)

    def _show_view(self, view: PlanView) -> None:
        table = self.query_one("#methods", DataTable)
        cursor = table.cursor_row
        table.clear()
        sims = self.simulated if self.simulated_for == view.request else {}
        for row in view.rows:
            fits = Text("✓", style="bold green") if row.fits else Text("✗", style="bold red")
            name = Text(row.label, style="bold" if row is view.cheapest else "")
            cells = [
                name,
                _gb(row.peak_gb),
                fits,
                "" if row.min_gpus is None else str(row.min_gpus),
                "—" if row.hours is None else f"{row.hours:,.2f}",
                "—" if row.dollars is None else f"{row.dollars:,.2f}",  # the column says "$"
                _gb(sims[row.method]) if row.method in sims else "",
            ]
            table.add_row(*_spaced(cells), key=row.method)
        if self.simulated_for is None and view.cheapest is not None and cursor == 0:
            cursor = [r.method for r in view.rows].index(self.selected_method)
        table.move_cursor(row=cursor, animate=False)
        request = view.request
        if view.cheapest is not None:
            c = view.cheapest
            where = c.provider or request.provider or "no known provider"
            cheapest = Text.assemble(
                ("Cheapest that fits: ", "bold"),
                (c.label, "bold green"),
                f" — ${c.dollars:,.2f}, {c.hours:,.2f} h on {request.gpus}× {request.gpu}"
                f" at {where}",
            )
        else:
            cheapest = Text(
                f"No method fits on {request.gpus}× {request.gpu} with a known price: "
                "raise the GPU count or lower the sequence length or micro-batch.",
                style="yellow",
            )
        self.query_one("#cheapest", Static).update(cheapest)
        self._show_breakdown()
        self.query_one("#api-prices", Static).update(_api_table(view))
        today = getattr(self.app, "today", None) or date.today()
        checked = view.prices_checked
        age = (
            f"GPU prices checked {checked.isoformat()} ({(today - checked).days} days ago)"
            if checked
            else f"no price on record for {request.gpu}"
        )
        stale = staleness_notice([checked], today=today) if checked else None
        age += " — older than the limit: run `paretune prices update`" if stale else ""
        self.query_one("#price-age", Static).update(
            f"{age}; {view.total_params_b:,.2f}B parameters; memory in GB = 10^9 bytes."
        )

    @on(DataTable.RowHighlighted, "#methods")
    def _method_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value:
            self.selected_method = event.row_key.value
            self._show_breakdown()

    def _show_project(self) -> None:
        target = self.query_one("#project-cost", Static)
        if self.view is None or self.arch is None:
            target.update("")
            return
        target.update(project_panel(self.view, self.arch, self.catalog, self.selected_method))

    def _show_breakdown(self) -> None:
        self._show_project()
        row = self.view.row(self.selected_method) if self.view else None
        target = self.query_one("#breakdown", Static)
        if row is None or not row.breakdown_gb:
            target.update("")
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_column(justify="right")
        largest = max(row.breakdown_gb.values())
        for term, gb in sorted(row.breakdown_gb.items(), key=lambda kv: -kv[1]):
            cells = int(round(_BAR_WIDTH * gb / largest)) if largest else 0
            grid.add_row(
                term.replace("_", " "), Text("█" * max(cells, 1), style="cyan"), f"{gb:,.2f} GB"
            )
        title = Text(f"Memory of {row.label} (peak {row.peak_gb:,.1f} GB)", style="bold")
        from rich.console import Group

        notes = [
            Text(f"{term.replace('_', ' ')}: {note}", style="dim")
            for term, note in row.term_notes.items()
        ]
        if row.calibration:
            notes.append(Text(f"{self.profile_note}: {row.calibration}", style="dim"))
            notes += [Text(f"! {w}", style="yellow") for w in row.calibration_warnings]
        elif self.profile_note.startswith("calibration profile unreadable"):
            notes.append(Text(self.profile_note, style="yellow"))
        target.update(Group(title, grid, *notes))

    # -- actions -----------------------------------------------------------------------

    def _request(self) -> PlanRequest | None:
        try:
            return self._read_form().parse()
        except UserError as error:
            self._show_error(error)
            return None

    def _model_ready(self, request: PlanRequest) -> bool:
        """True when the table shows ``request``'s model; else says why not, inline."""
        if self.arch is None or self.view is None or self.view.request.model != request.model:
            self._show_error(
                BadInput(
                    f"model: {request.model!r} is not resolved (yet)",
                    "Wait for the lookup to finish, or fix the name.",
                )
            )
            return False
        return True

    def action_copy_command(self) -> None:
        request = self._request()
        if request is None or not self._model_ready(request):
            return
        command = plan_command(request)
        self.app.copy_to_clipboard(command)
        self.notify(command, title="Copied")

    def action_simulate(self) -> None:
        request = self._request()
        if request is None or self.arch is None:
            return
        status = self.query_one("#sim-status", Static)
        status.loading = True
        self._simulate(request, self.arch)

    @work(thread=True, exclusive=True, exit_on_error=False, group="simulate")
    def _simulate(self, request: PlanRequest, arch: Any) -> None:
        from planner.simulation.simulate import simulate

        # One message per method, so the column fills in as each simulation finishes; the
        # highlighted method goes first. A newer request (or leaving the app) cancels the rest.
        worker = get_current_worker()
        order = sorted(PLAN_METHODS, key=lambda kind: kind != self.selected_method)
        peaks: dict[str, float] = {}
        for kind in order:
            if worker.is_cancelled:
                return
            try:
                workload, method = planner_inputs(request, kind)
                peaks[kind] = simulate(arch, workload, method).peak_bytes / 1e9
            except Exception as error:
                self.post_message(Simulated(request, dict(peaks), error, done=True))
                return
            self.post_message(Simulated(request, dict(peaks), done=kind == order[-1]))

    @on(Simulated)
    def _simulated(self, message: Simulated) -> None:
        status = self.query_one("#sim-status", Static)
        if message.done:
            status.loading = False
            status.update("sim GB: peak of two training steps simulated on fake tensors (per GPU)")
        if message.error is not None:
            self._show_error(message.error)
        self.simulated, self.simulated_for = message.peaks_gb, message.request
        if self.view is not None:
            self._show_view(self.view)

    def action_sweep_plan(self) -> None:
        request = self._request()
        if request is None or not self._model_ready(request):
            return
        inputs = request.as_dict()
        inputs["methods"] = [r.method for r in self.view.rows if r.fits]
        inputs["cheapest_dollars"] = self.view.cheapest.dollars if self.view.cheapest else None
        self.app.post_message(SweepThisPlan(inputs))


def _calibration_profile() -> tuple[Any, str]:
    """The user's active calibration profile (None where none was written) and the line
    that names it; an unreadable one is reported on the screen, not raised."""
    from planner.calibration import active_profile

    try:
        active = active_profile()
    except UserError as error:
        return None, f"calibration profile unreadable, plans uncalibrated: {error}"
    if active is None:
        return None, ""
    path, profile = active
    return profile, f"calibration profile {path}"


def _spaced(cells: list) -> list[Text]:
    """Table cells with one space before each (the table adds no padding of its own)."""
    return [Text.assemble(" ", cell) for cell in cells]


def _starts_a_catalogue_name(text: str, models) -> bool:
    text = text.lower()
    return any(n.lower().startswith(text) for m in models for n in (m.name, *m.aliases))


def _gb(value: float) -> str:
    # Small models are planned too (the demo is a few MB): keep three significant digits.
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def _api_table(view: PlanView) -> Table | str:
    if not view.api_prices:
        return Text(
            f"No fine-tuning API trains a {view.total_params_b:,.1f}B model with LoRA.", style="dim"
        )
    from rich.console import Group

    tokens = view.request.dataset_tokens * view.request.epochs
    title = Text(f"Fine-tuning APIs (LoRA) for the same {tokens / 1e6:,.1f}M tokens", style="bold")
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("provider")
    table.add_column("model")
    table.add_column("dollars", justify="right")
    for provider, bracket, dollars in view.api_prices[:5]:
        table.add_row(provider, bracket, f"${dollars:,.2f}")
    return Group(title, table)
