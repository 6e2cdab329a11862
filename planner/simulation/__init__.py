"""The fake-tensor simulator of one training step (torch imported inside its functions)."""
