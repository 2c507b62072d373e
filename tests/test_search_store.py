"""The Milvus adapter on real Milvus Lite, where it goes beyond the store
contract (tests/test_store_contract.py holds what both stores share)."""

from __future__ import annotations

from pathlib import Path

from services.search.milvus import MilvusStore
from tests.test_store_contract import fill, unit


def test_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    first = MilvusStore(path)
    fill(first)
    first.close()
    second = MilvusStore(path)  # collections come back released; the store loads them
    try:
        (hits,) = second.search("lib", "m", 8, [unit(30)], 1)
        assert hits[0].item_id == 3
        assert second.stats()[0].vectors == 9
    finally:
        second.close()
