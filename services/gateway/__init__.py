"""Gateway: the public API; orchestrates embedder, search and catalog."""
