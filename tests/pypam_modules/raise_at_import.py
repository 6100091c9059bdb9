"""Fails while being imported."""
raise RuntimeError("import-time failure")
