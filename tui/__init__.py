"""The command line and the Textual terminal UI."""
