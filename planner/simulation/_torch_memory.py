"""Every private torch module the simulator relies on, wrapped in one place.

The simulator runs a real training step of a real model on *fake* tensors (shapes,
dtypes and devices but no data, so a 70B model costs no memory) and counts every
storage that step allocates. Both halves are private torch APIs:

- ``torch._subclasses.fake_tensor.FakeTensorMode``: tensors without data;
- ``torch.distributed._tools.mem_tracker.MemTracker``: a dispatch mode that tracks
  every storage alive and sorts it into parameters, buffers, gradients, activations,
  temporaries (tensors born in the backward) and optimizer states, keeping the
  breakdown at the peak.

They have no stability promise, so nothing else in paretune imports them, and
``tests/test_simulate_torch_internals.py`` exercises each thing used here on a tiny
model: a torch upgrade that breaks one of them fails that test by name instead of
turning into a wrong memory figure.

Import this module only from inside a function: it imports torch at import time.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from typing import Self

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.hooks import RemovableHandle

__all__ = ["CATEGORIES", "PeakTracker", "fake_tensor_mode", "materialize_as_fake"]

# MemTracker's reference types (``_MemRefType`` values) -> the names paretune uses.
_CATEGORY_OF_REFTYPE = {
    "Parameter": "parameters",
    "Buffer": "buffers",
    "Gradient": "gradients",
    "Activation": "activations",
    "Temp": "temporaries",
    "Optstate": "optimizer_states",
    "Other": "other",
}
CATEGORIES: tuple[str, ...] = tuple(_CATEGORY_OF_REFTYPE.values())


def fake_tensor_mode() -> FakeTensorMode:
    """A fresh fake-tensor mode: every tensor created inside it has no data."""
    return FakeTensorMode()


def materialize_as_fake(model: nn.Module, device: str = "cpu") -> None:
    """Replace every parameter and buffer of a meta-device model by a fake tensor.

    Call it inside ``fake_tensor_mode()``. The model is built (and adapted by peft)
    on the meta device first because ``Module.to()`` cannot swap fake parameters
    ("Couldn't swap ..."), and peft moves adapters with ``.to()``. Assigning new
    tensors keeps shapes, dtypes and ``requires_grad``, and keeps shared (tied)
    tensors shared, so the embedding and a tied head stay one storage.
    """
    replaced: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in replaced:
                empty = torch.empty(param.shape, dtype=param.dtype, device=device)
                replaced[id(param)] = nn.Parameter(empty, requires_grad=param.requires_grad)
            module._parameters[name] = replaced[id(param)]  # type: ignore[assignment]
        for name, buffer in list(module._buffers.items()):
            if buffer is None:
                continue
            if id(buffer) not in replaced:
                replaced[id(buffer)] = torch.empty(buffer.shape, dtype=buffer.dtype, device=device)
            module._buffers[name] = replaced[id(buffer)]


class _GlobalPeakMemTracker(MemTracker):
    """MemTracker without its per-module peaks, which cost a scan of every module's
    statistics on every operator (most of the simulation time); only the global peak
    is used."""

    def _update_peak_stats(self, peak_state: object) -> None:
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot["Total"]:
                self._peak_mem[device] = snapshot["Total"]
                self._peak_mem_snap[device] = dict(snapshot)


class PeakTracker:
    """Tracks the bytes alive during a training step, with the peak of each phase.

    Use it as a context manager around the step (inside the fake mode), call
    :meth:`start_phase` before each phase (forward+backward, optimizer step) and
    :meth:`end_iteration` after each forward+backward; :meth:`phase_peaks` then gives,
    per phase name, the breakdown by category at that phase's highest total.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._tracker = _GlobalPeakMemTracker()
        # MemTracker registers a gradient hook on every parameter it meets, which
        # raises on a frozen one ("cannot register a hook on a tensor that doesn't
        # require gradient"). Frozen parameters never get a gradient, so pre-filling
        # its hook-handle map with handles to nothing makes it skip them.
        for param in model.parameters():
            if not param.requires_grad:
                self._tracker._param_to_grad_hook_handles[param] = (
                    RemovableHandle(OrderedDict()),
                    RemovableHandle(OrderedDict()),
                )
        self._tracker.track_external(model, optimizer)
        self._phase: str | None = None
        self._peaks: dict[str, dict[str, int]] = {}

    def __enter__(self) -> Self:
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._tracker.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_phase()
        self._tracker.__exit__(*exc)
        if self._gc_was_enabled:
            gc.enable()

    def current(self) -> dict[str, int]:
        """Bytes alive now, by category."""
        return _by_category(self._tracker.get_tracker_snapshot("current"))

    def start_phase(self, name: str) -> None:
        """Close the running phase and start measuring the peak of ``name``."""
        self._close_phase()
        # Tensors caught in reference cycles (peft's DoRA makes some) are freed whenever
        # Python's collector happens to run; collecting at each phase start makes the
        # figures repeatable (the collector is otherwise off while tracking).
        gc.collect(1)
        self._phase = name
        # Restart peak tracking from what is alive now.
        snapshot = self._tracker.get_tracker_snapshot("current")
        self._tracker._peak_mem_snap = snapshot
        self._tracker._peak_mem = {dev: snap["Total"] for dev, snap in snapshot.items()}

    def end_iteration(self) -> None:
        """Forget per-module statistics so the next forward is not taken for a re-entry."""
        self._tracker.reset_mod_stats()

    def phase_peaks(self) -> dict[str, dict[str, int]]:
        """Per phase (highest over its repetitions): bytes by category at the peak."""
        self._close_phase()
        return {name: dict(peak) for name, peak in self._peaks.items()}

    def _close_phase(self) -> None:
        if self._phase is None:
            return
        peak = _by_category(self._tracker.get_tracker_snapshot("peak"))
        previous = self._peaks.get(self._phase)
        if previous is None or sum(peak.values()) > sum(previous.values()):
            self._peaks[self._phase] = peak
        self._phase = None


def _by_category(snapshot: dict[torch.device, dict[str, int]]) -> dict[str, int]:
    totals = dict.fromkeys(CATEGORIES, 0)
    for device_snapshot in snapshot.values():
        for reftype, nbytes in device_snapshot.items():
            name = getattr(reftype, "value", reftype)
            if name == "Total":
                continue
            totals[_CATEGORY_OF_REFTYPE[name]] += nbytes
    return totals
