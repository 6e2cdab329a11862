"""One real fine-tune, measured: config and result types, data, the recipe, metrics,
process isolation, and the bundled demo.

Importing this package is cheap; torch and transformers are imported by ``recipe`` and
``metrics`` only.
"""
