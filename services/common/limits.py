"""Bounds shared by services that must agree on them."""

# Longest window a library may use: the gateway refuses to create a library
# with a longer one, and the embedder refuses to embed with it.
MAX_WINDOW_SECONDS = 60.0
