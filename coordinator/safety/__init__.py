"""The safety layer: gates every order must pass."""
