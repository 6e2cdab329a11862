"""The Textual app's screens: plan, sweeps, SQL, frontier, help. Each is imported when
its mode is first opened."""
