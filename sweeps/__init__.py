"""Optuna sweeps of real fine-tunes.

The sweep loop lives here (spec, study and sampler, gate, worker, liveness, progress); one
measured fine-tune in :mod:`sweeps.trial`; the DuckDB store and frontier in :mod:`sweeps.results`.
"""
