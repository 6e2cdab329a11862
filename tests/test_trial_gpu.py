"""The GPU path of a trial (CUDA, bf16, bitsandbytes 4-bit, MFU); skipped without a CUDA GPU."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_trial_runs_on_the_gpu_in_its_precision(method: str, tmp_path: Path, demo) -> None:
    from sweeps.trial.recipe import run_trial
    from sweeps.trial.types import TrialConfig

    result = run_trial(
        TrialConfig(
            method=method,
            lr=1e-3,
            max_steps=6,
            eval_every=3,
            device="cuda",
            run_dir=str(tmp_path),
            max_new_tokens=4,
        )
    )
    assert result.state == "complete"
    assert result.hardware.device == "cuda"
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert result.params["precision"] == expected
    assert result.measured.peak_reserved_gb >= result.measured.peak_gb > 0
    assert result.quality.eval_nll < result.quality.base_eval_nll
    if _catalogue_knows_this_gpu():
        assert 0 < result.measured.mfu < 1


def test_gpu_out_of_memory_is_an_oom_trial(tmp_path: Path, demo) -> None:
    from sweeps.trial.isolation import run_trial_isolated
    from sweeps.trial.types import TrialConfig

    # What this process holds already (earlier tests' trials ran here: bitsandbytes keeps
    # its quantization map on the device) is not the child's.
    gc.collect()
    before = torch.cuda.memory_allocated()
    # 1 MB of GPU for the CUDA allocator: the model does not even load.
    result = run_trial_isolated(
        TrialConfig(device="cuda", max_steps=2, memory_limit_gb=0.001, run_dir=str(tmp_path))
    )
    assert result.state == "oom", result.error
    gc.collect()
    assert torch.cuda.memory_allocated() == before  # the parent gained nothing


def _catalogue_knows_this_gpu() -> bool:
    from pricing import load_catalog
    from pricing.errors import UserError
    from sweeps.trial.recipe import _catalog_gpu

    try:
        _catalog_gpu(load_catalog(), torch.cuda.get_device_name())
    except UserError:
        return False
    return True
