"""Search: window vectors per library behind a store contract (contract.py),
with Milvus as its adapter (milvus.py) and an exact in-memory reference (memory.py)."""
