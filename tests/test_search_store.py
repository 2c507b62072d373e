"""The vector store on real Milvus Lite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.search.store import VectorStore, WindowVector, collection_name


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = VectorStore(str(tmp_path / "milvus" / "m.db"))
    yield s
    s.close()


def fill(store: VectorStore, library: str = "lib") -> None:
    store.create(library, "m", 8)
    rows = [WindowVector(item, w, w * 0.5, unit(item * 10 + w)) for item in (1, 2, 3) for w in range(3)]
    assert store.upsert(library, "m", 8, rows) == 9


def test_create_is_idempotent_and_bound_to_one_model(store: VectorStore) -> None:
    assert store.create("lib", "m", 8)
    assert not store.create("lib", "m", 8)
    with pytest.raises(FailedPrecondition):
        store.create("lib", "other", 8)
    with pytest.raises(FailedPrecondition, match="cannot be mixed"):
        store.upsert("lib", "other", 16, [WindowVector(1, 0, 0, unit(1, 16))])
    with pytest.raises(InvalidArgument):
        store.upsert("lib", "m", 8, [WindowVector(1, 0, 0, unit(1, 4))])
    with pytest.raises(NotFound):
        store.search("nolib", "m", 8, [unit(1)], 3)
    assert collection_name("a-b") != collection_name("a_b")


def test_search_filters_and_upsert_is_idempotent(store: VectorStore) -> None:
    fill(store)
    fill_again = [WindowVector(2, 1, 0.5, unit(21))]
    store.upsert("lib", "m", 8, fill_again)  # a retried write replaces, never duplicates
    (stats,) = store.stats()
    assert (stats.library, stats.model, stats.dim, stats.vectors, stats.items) == ("lib", "m", 8, 9, 3)

    (hits,) = store.search("lib", "m", 8, [unit(21)], 3)
    assert (hits[0].item_id, hits[0].window, hits[0].offset) == (2, 1, 0.5)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    (hits,) = store.search("lib", "m", 8, [unit(21)], 9, item_ids=[1, 3])
    assert {h.item_id for h in hits} == {1, 3}
    (hits,) = store.search("lib", "m", 8, [unit(21)], 9, exclude=[2])
    assert 2 not in {h.item_id for h in hits}
    assert [w.window for w in store.get("lib", 3)] == [0, 1, 2]


def test_delete_and_drop(store: VectorStore) -> None:
    fill(store)
    assert store.delete("lib", [2]) == 3
    (stats,) = store.stats("lib")
    assert (stats.vectors, stats.items) == (6, 2)
    assert store.delete("lib", []) == 0
    assert store.drop("lib") and not store.drop("lib")
    assert store.stats() == []
    with pytest.raises(NotFound):
        store.stats("lib")


def test_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    first = VectorStore(path)
    fill(first)
    first.close()
    second = VectorStore(path)  # collections come back released; the store loads them
    try:
        (hits,) = second.search("lib", "m", 8, [unit(30)], 1)
        assert hits[0].item_id == 3
        assert second.stats()[0].vectors == 9
    finally:
        second.close()


def test_distinct_items_returns_one_best_window_per_item(store: VectorStore) -> None:
    store.create("lib", "m", 8)
    # Item 1 has many windows close to the query; item 2 and 3 one each.
    query = unit(99)
    rows = [WindowVector(1, w, w, query + 0.01 * unit(w)) for w in range(20)]
    rows += [WindowVector(2, 0, 0, unit(5)), WindowVector(3, 0, 0, unit(6))]
    store.upsert(
        "lib", "m", 8, [WindowVector(r.item_id, r.window, r.offset, r.vector / np.linalg.norm(r.vector)) for r in rows]
    )
    (crowded,) = store.search("lib", "m", 8, [query], 3)
    assert {h.item_id for h in crowded} == {1}
    (distinct,) = store.search("lib", "m", 8, [query], 3, hits_per_item=1)
    assert sorted(h.item_id for h in distinct) == [1, 2, 3]


def test_sparse_collections(store: VectorStore) -> None:
    from services.common.vectors import Sparse

    def sparse(*indices: int) -> Sparse:
        idx = np.array(sorted(indices), dtype=np.uint32)
        return Sparse(idx, np.full(len(idx), 1 / np.sqrt(len(idx)), dtype=np.float32))

    store.create("fp", "fingerprint-v1", 1 << 22, sparse=True)
    assert not store.create("fp", "fingerprint-v1", 1 << 22, sparse=True)
    store.upsert(
        "fp",
        "fingerprint-v1",
        1 << 22,
        [
            WindowVector(1, 0, 0.0, sparse(1, 2, 3, 4)),
            WindowVector(1, 1, 0.5, sparse(5, 6, 7, 8)),
            WindowVector(2, 0, 0.0, sparse(3, 4, 9, 10)),
            WindowVector(3, 0, 0.0, Sparse(np.zeros(0, np.uint32), np.zeros(0, np.float32))),  # silence
        ],
    )
    store.flush()
    (hits,) = store.search("fp", "fingerprint-v1", 1 << 22, [sparse(5, 6, 7, 100)], 5, hits_per_item=1)
    assert (hits[0].item_id, hits[0].window, hits[0].offset) == (1, 1, 0.5)
    assert hits[0].score == pytest.approx(0.75, abs=1e-5)
    assert 3 not in [h.item_id for h in hits if h.score > 1e-3]
    (window,) = [w for w in store.get("fp", 1) if w.window == 1]
    assert list(window.vector.indices) == [5, 6, 7, 8]
    # Chosen windows are read by key: in order, a window that is not there left out.
    assert [w.window for w in store.get("fp", 1, [1, 7, 0])] == [0, 1]
    assert store.get("fp", 2, [1]) == []
    # Several items' windows in one read: by item as asked, then by window.
    many = store.get_many("fp", [(2, [0, 5]), (1, [1, 0])])
    assert [(w.item_id, w.window) for w in many] == [(2, 0), (1, 0), (1, 1)]
    assert list(many[0].vector.indices) == [3, 4, 9, 10]
    assert store.get_many("fp", []) == []
    # Several queries at once (sent as one-row matrices), a silent one among them.
    silent, both = store.search(
        "fp", "fingerprint-v1", 1 << 22, [Sparse(np.zeros(0, np.uint32), np.zeros(0, np.float32)), sparse(4, 3)], 5
    )
    assert all(h.score < 1e-3 for h in silent)
    assert {h.item_id for h in both if h.score > 0.1} == {1, 2}
    with pytest.raises(InvalidArgument, match="sparse"):
        store.upsert("fp", "fingerprint-v1", 1 << 22, [WindowVector(4, 0, 0, unit(1))])
    with pytest.raises(InvalidArgument, match="range"):
        store.upsert("fp", "fingerprint-v1", 1 << 22, [WindowVector(4, 0, 0, sparse(1 << 22))])
    with pytest.raises(InvalidArgument, match="dense"):
        store.create("d", "m", 8)
        store.upsert("d", "m", 8, [WindowVector(4, 0, 0, sparse(1))])
    assert [s.sparse for s in store.stats()] == [False, True] or [s.sparse for s in store.stats()] == [True, False]
