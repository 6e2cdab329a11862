"""Library messages that are noise in paretune's output, dropped one by one where we load
those libraries (never a blanket filter)."""

from __future__ import annotations

import logging

__all__ = ["quiet_bitsandbytes"]

_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_KERNEL_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropKernelWarning(logging.Filter):
    """bitsandbytes (0.49, on CPUs with AVX512-BF16) warns on import that it could not fetch
    an optional CPU kernel from the Hugging Face Hub; it falls back to its own, and the
    warning appeared on every sweep and in the app's status line. Only that record is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BNB_KERNEL_WARNING)


def quiet_bitsandbytes() -> None:
    """Drop bitsandbytes' optional-kernel warning (call before importing bitsandbytes or peft;
    calling again adds nothing)."""
    logger = logging.getLogger(_BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropKernelWarning) for f in logger.filters):
        logger.addFilter(_DropKernelWarning())
