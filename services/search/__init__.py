"""Search: one Milvus collection of window vectors per library."""
