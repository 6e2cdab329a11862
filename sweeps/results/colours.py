"""One colour per fine-tuning method, shared by every chart: the PNG/SVG chart, the terminal
charts (CLI and app) and the HTML report, so a method looks the same everywhere."""

from __future__ import annotations

__all__ = [
    "METHOD_COLOURS",
    "OTHER_COLOUR",
    "PARETO_COLOUR",
    "hex_rgb",
    "method_colour",
    "method_rgb",
]

# Matplotlib's "tab10" hues: told apart on dark and light backgrounds alike.
METHOD_COLOURS = {
    "full": "#d62728",  # red
    "lora": "#1f77b4",  # blue
    "qlora": "#2ca02c",  # green
    "dora": "#e377c2",  # pink
    "freeze": "#ff7f0e",  # orange
}
OTHER_COLOUR = "#7f7f7f"
"""A method without its own colour (grey)."""
PARETO_COLOUR = "#f2c80f"
"""The mark of Pareto-optimal trials (yellow)."""


def method_colour(method: str | None) -> str:
    """The hex colour of ``method`` (``#rrggbb``)."""
    return METHOD_COLOURS.get(method or "", OTHER_COLOUR)


def method_rgb(method: str | None) -> tuple[int, int, int]:
    """The colour of ``method`` as an (r, g, b) tuple, as plotext takes it."""
    return hex_rgb(method_colour(method))


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` as an (r, g, b) tuple."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
