"""Shared fixtures: the bundled demo (built once per machine, then read from the cache)."""

from __future__ import annotations

import pytest

from sweeps.demo import DemoAssets, ensure_demo


@pytest.fixture(scope="session")
def demo() -> DemoAssets:
    """The demo world and its pretrained tiny Llama (``PARETUNE_CACHE_DIR`` or the user cache)."""
    return ensure_demo()
