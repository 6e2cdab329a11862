"""Pure estimation: architecture -> parameters -> memory, FLOPs -> time -> dollars."""
