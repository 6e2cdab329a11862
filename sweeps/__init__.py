"""Real fine-tunes (trials), their metrics, Optuna sweeps, the DuckDB results store."""
