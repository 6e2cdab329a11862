"""The private torch APIs behind ``paretune plan --simulate``, each exercised by name.

``planner/simulation/_torch_memory.py`` is the only place that touches them. When a torch upgrade
moves or changes one, a test here fails and says which, instead of the simulator
silently reporting wrong memory.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402 - after the skip

from planner.simulation import _torch_memory as tm  # noqa: E402


def _tiny_model() -> nn.Module:
    with torch.device("meta"):
        model = nn.Sequential(
            nn.Linear(16, 32, bias=False), nn.ReLU(), nn.Linear(32, 8, bias=False)
        )
    return model


def test_private_modules_still_exist() -> None:
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    for attribute in (
        "_param_to_grad_hook_handles",
        "_peak_mem",
        "_peak_mem_snap",
        "_curr_mem_snap",
        "_update_peak_stats",
        "get_tracker_snapshot",
        "track_external",
        "reset_mod_stats",
    ):
        assert hasattr(tracker, attribute), f"MemTracker lost {attribute}"
    with FakeTensorMode():
        assert isinstance(torch.empty(3), FakeTensor)


def test_reference_types_are_the_ones_mapped() -> None:
    from torch.distributed._tools.mem_tracker import _MemRefType

    assert {t.value for t in _MemRefType} == set(tm._CATEGORY_OF_REFTYPE)


def test_materialize_as_fake_keeps_shapes_dtypes_grad_flags_and_tying() -> None:
    model = _tiny_model()
    model[2].weight.requires_grad_(False)
    model.tied = nn.Linear(16, 32, bias=False, device="meta")
    model.tied.weight = model[0].weight
    with tm.fake_tensor_mode():
        tm.materialize_as_fake(model)
        assert model[0].weight.device.type == "cpu"
        assert model[0].weight.shape == (32, 16)
        assert model[0].weight.requires_grad and not model[2].weight.requires_grad
        assert model.tied.weight is model[0].weight
        assert isinstance(model[0].weight, nn.Parameter)


def test_peak_tracker_counts_a_training_step_by_category() -> None:
    """A two-Linear model, frozen second layer, one known step: every byte accounted."""
    model = _tiny_model()
    model[2].weight.requires_grad_(False)  # frozen: the hook workaround is needed
    with tm.fake_tensor_mode():
        tm.materialize_as_fake(model)
        optimizer = torch.optim.AdamW([model[0].weight], lr=1e-3, fused=True)
        with tm.PeakTracker(model, optimizer) as tracker:
            for _ in range(2):
                tracker.start_phase("forward_backward")
                x = torch.randn(4, 16)
                model(x).sum().backward()
                del x
                tracker.end_iteration()
                tracker.start_phase("optimizer_step")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            peaks = tracker.phase_peaks()
    weights = (32 * 16 + 8 * 32) * 4
    step = peaks["optimizer_step"]
    assert step["parameters"] == weights
    assert step["gradients"] == 32 * 16 * 4  # only the trainable layer has a gradient
    # Two fp32 moments, plus fused AdamW's fp32 step counter.
    assert step["optimizer_states"] == 2 * 32 * 16 * 4 + 4
    forward = peaks["forward_backward"]
    assert forward["parameters"] == weights
    # The input (4x16) and the ReLU output (4x32) are saved; the first Linear's
    # output (4x32) is alive at its peak too: all fp32.
    assert forward["activations"] + forward["temporaries"] >= (4 * 16 + 4 * 32) * 4
    assert set(step) == set(tm.CATEGORIES)


def test_global_peak_tracker_overrides_a_method_memtracker_still_calls() -> None:
    import inspect

    from torch.distributed._tools.mem_tracker import MemTracker

    source = inspect.getsource(MemTracker.__torch_dispatch__)
    assert "_update_peak_stats" in source, "MemTracker no longer updates peaks where we hook it"
