"""The DuckDB results store: schema, reads and writes, and the Pareto frontier.

Nothing here imports torch or transformers.
"""
