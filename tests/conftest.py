"""Shared fixtures: the bundled demo (built once per machine, then read from the cache)."""

from __future__ import annotations

import os

import pytest

# The test models are tiny: torch gains nothing from more than one CPU thread on them, and on a
# 2-core machine running a test process plus trial child processes, extra OpenMP threads only
# spin against each other (trials measured several times slower). Child processes inherit it.
# An explicit setting in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from sweeps.trial.demo import DemoAssets, ensure_demo


@pytest.fixture(scope="session")
def demo() -> DemoAssets:
    """The demo world and its pretrained tiny Llama (``PARETUNE_CACHE_DIR`` or the user cache)."""
    return ensure_demo()
