"""The instance actor: one task per instance, the only writer of its state."""
