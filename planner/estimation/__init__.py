"""Pure estimation: architecture -> parameters -> memory, FLOPs -> time -> dollars.

No torch here: every figure is computed from the model's config and the catalogue.
"""
