"""Dated, sourced catalogue of GPUs, hourly prices and fine-tuning API prices."""

from pricing.errors import UserError

__all__ = ["UserError"]
