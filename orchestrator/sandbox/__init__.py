"""Single-use, hardened Docker sandboxes with a warm pool."""
