"""A sweep spec that asks for a CUDA GPU, launched from the app where none is visible: the
app offers the CPU for a small model (and switches and launches on "Use the CPU"), and says
why not for a large one. Real preflight checks (`paretune sweep check` in its own process)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sweeps.spec import load_spec
from tui.app import ParetuneApp
from tui.screens.cpu_offer import CpuOfferScreen

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _spec(own_model, tmp_path: Path, model: str) -> Path:
    path = tmp_path / "planned.toml"
    path.write_text(f"""
name = "planned"
model = "{model}"
[data]
train = "{own_model.train}"
eval = "{own_model.eval}"
[hardware]
device = "cuda"
gpu = "h100-sxm"
provider = "runpod"
[search]
methods = ["lora"]
rank = 2
lr = 1e-3
max_steps = 2
[trial]
batch = 8
eval_every = 10
max_seq_len = 64
max_new_tokens = 2
[budget]
trials = 1
[run]
dir = "{tmp_path / "runs"}"
results = "{tmp_path / "runs" / "results.duckdb"}"
save = "none"
timeout_s = 300
""")
    return path


async def _launch(app, pilot, spec: Path) -> None:
    app.screen.show_spec(spec)
    await pilot.press("ctrl+l")
    await app.workers.wait_for_complete()  # the real preflight check
    await pilot.pause()


@pytest.mark.slow
async def test_a_small_model_is_offered_the_cpu_and_runs_there(own_model, tmp_path: Path) -> None:
    spec = _spec(own_model, tmp_path, str(own_model.model_dir))
    planned = load_spec(spec)
    app = ParetuneApp(
        db=tmp_path / "runs" / "results.duckdb", run_dir=tmp_path / "runs", start="sweeps"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        sweeps = app.screen
        await _launch(app, pilot, spec)
        assert sweeps.launched is None  # refused: no trial paid for on a missing GPU
        offer = app.screen
        assert isinstance(offer, CpuOfferScreen) and offer.offer.allowed
        assert "No CUDA GPU is visible" in offer.offer.text
        await pilot.click("#use-cpu")
        await pilot.pause()
        await app.workers.wait_for_complete()  # checked again, then launched
        await pilot.pause()
        switched = load_spec(spec)
        assert (switched.hardware.device, switched.hardware.gpu) == ("cpu", None)
        assert switched.model_copy(update={"hardware": planned.hardware}) == planned
        launched = sweeps.launched
        assert launched is not None, sweeps.query_one("#sweeps-error").render()
        deadline = time.monotonic() + 300
        while launched.exit_code() is None and time.monotonic() < deadline:
            await pilot.pause(1.0)
        assert launched.exit_code() == 0, launched.log_tail(40)


async def test_a_large_model_is_told_why_not(own_model, tmp_path: Path) -> None:
    spec = _spec(own_model, tmp_path, "llama-3.1-8b")
    before = spec.read_text()
    app = ParetuneApp(
        db=tmp_path / "runs" / "results.duckdb", run_dir=tmp_path / "runs", start="sweeps"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        sweeps = app.screen
        await _launch(app, pilot, spec)
        offer = app.screen
        assert isinstance(offer, CpuOfferScreen) and not offer.offer.allowed
        assert "8.03B parameters" in offer.offer.text and "too large" in offer.offer.text
        assert not offer.query("#use-cpu")
        await pilot.click("#cancel")
        await pilot.pause()
        assert app.screen is sweeps and sweeps.launched is None
    assert spec.read_text() == before
