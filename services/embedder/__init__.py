"""Embedder: decodes audio and turns windows of it into vectors."""
