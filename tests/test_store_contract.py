"""The store contract, asserted of both stores: the Milvus adapter on real
Milvus Lite and the exact in-memory reference. Every test runs on each, and
the last feeds both the same data and compares what they answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.vectors import Sparse
from services.search.contract import Store, WindowVector
from services.search.memory import MemoryStore
from services.search.milvus import MilvusStore
from services.search.naming import collection_name

STORES = ("milvus", "memory")


def make(kind: str, tmp_path: Path) -> Store:
    return MilvusStore(str(tmp_path / "milvus" / "m.db")) if kind == "milvus" else MemoryStore()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make(request.param, tmp_path)
    yield s
    s.close()


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def sparse(*indices: int) -> Sparse:
    idx = np.array(sorted(indices), dtype=np.uint32)
    return Sparse(idx, np.full(len(idx), 1 / np.sqrt(len(idx)), dtype=np.float32))


def fill(store: Store, library: str = "lib") -> None:
    store.create(library, "m", 8)
    rows = [WindowVector(item, w, w * 0.5, unit(item * 10 + w)) for item in (1, 2, 3) for w in range(3)]
    assert store.upsert(library, "m", 8, rows) == 9


def test_create_is_idempotent_and_bound_to_one_model(store: Store) -> None:
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


def test_search_filters_and_upsert_is_idempotent(store: Store) -> None:
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


def test_delete_and_drop(store: Store) -> None:
    fill(store)
    assert store.delete("lib", [2]) == 3
    (stats,) = store.stats("lib")
    assert (stats.vectors, stats.items) == (6, 2)
    assert store.delete("lib", []) == 0
    assert store.drop("lib") and not store.drop("lib")
    assert store.stats() == []
    with pytest.raises(NotFound):
        store.stats("lib")


def test_distinct_items_returns_one_best_window_per_item(store: Store) -> None:
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


def test_sparse_collections(store: Store) -> None:
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


def test_a_missing_library_is_not_found(store: Store) -> None:
    for call in (
        lambda: store.get("nolib", 1),
        lambda: store.get_many("nolib", []),
        lambda: store.item_ids("nolib"),
        lambda: store.upsert("nolib", "m", 8, []),
        lambda: store.stats("nolib"),
    ):
        with pytest.raises(NotFound, match="nolib"):
            call()
    assert store.delete("nolib", [1]) == 0
    assert not store.drop("nolib")


def test_bad_requests_are_invalid(store: Store) -> None:
    for dim in (0, 40000):
        with pytest.raises(InvalidArgument, match="dimension"):
            store.create("lib", "m", dim)
    fill(store)
    with pytest.raises(InvalidArgument, match="out of range"):
        store.upsert("lib", "m", 8, [WindowVector(0, 0, 0, unit(1))])
    with pytest.raises(InvalidArgument, match="out of range"):
        store.upsert("lib", "m", 8, [WindowVector(1, 1 << 24, 0, unit(1))])
    with pytest.raises(InvalidArgument, match="no query"):
        store.search("lib", "m", 8, [], 3)
    with pytest.raises(InvalidArgument, match="staging"):
        store.create("lib@", "m", 8)
    with pytest.raises(InvalidArgument, match="is for new"):
        store.create("lib@new", "other", 8)
    assert store.stats("lib")[0].vectors == 9, "a refused batch writes nothing"


def test_reads_and_item_ids(store: Store) -> None:
    fill(store)
    store.upsert("lib", "m", 8, [WindowVector(7, 1, 0.1, unit(71))])  # an item without window 0
    assert store.item_ids("lib") == [1, 2, 3, 7]
    (window,) = store.get("lib", 7)
    # Offsets are kept as float32.
    assert window.offset == float(np.float32(0.1)) and window.vector.dtype == np.float32
    np.testing.assert_allclose(window.vector, unit(71), rtol=1e-6)
    window.vector[:] = 0  # a caller's copy, not the store's
    np.testing.assert_allclose(store.get("lib", 7)[0].vector, unit(71), rtol=1e-6)
    assert store.get("lib", 9) == [] and store.get_many("lib", [(9, [0])]) == []
    many = store.get_many("lib", [(3, [2]), (7, [0, 1]), (1, [2, 0])])
    assert [(w.item_id, w.window) for w in many] == [(3, 2), (7, 1), (1, 0), (1, 2)]
    (stats,) = store.stats("lib")
    assert (stats.vectors, stats.items) == (10, 3), "items count windows 0"
    assert store.delete("lib", [1, 7, 42]) == 4
    assert store.item_ids("lib") == [2, 3]


def test_search_ranks_by_inner_product(store: Store) -> None:
    fill(store)
    queries = [unit(11), unit(32)]
    first, second = store.search("lib", "m", 8, queries, 4)
    for query, hits in ((queries[0], first), (queries[1], second)):
        assert len(hits) == 4
        for h in hits:
            assert h.score == pytest.approx(float(unit(h.item_id * 10 + h.window) @ query), abs=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert (first[0].item_id, first[0].window, second[0].item_id, second[0].window) == (1, 1, 3, 2)
    (grouped,) = store.search("lib", "m", 8, [unit(11)], 9, item_ids=[1, 2], exclude=[2], hits_per_item=1)
    assert [(h.item_id, h.window) for h in grouped] == [(1, 1)]


def test_a_staging_collection_serves_until_the_library_adopts_it(store: Store) -> None:
    fill(store)
    assert store.create("lib@new", "new", 4)
    assert not store.create("lib@new", "new", 4)
    assert store.open() == 2
    # Named with the new model, the library is served from its staging collection.
    assert store.upsert("lib", "new", 4, [WindowVector(1, 0, 0, unit(1, 4)), WindowVector(2, 0, 0, unit(2, 4))]) == 2
    (hits,) = store.search("lib", "new", 4, [unit(2, 4)], 1)
    assert (hits[0].item_id, hits[0].score) == (2, pytest.approx(1.0, abs=1e-5))
    (hits,) = store.search("lib", "m", 8, [unit(21)], 1)
    assert (hits[0].item_id, hits[0].window) == (2, 1)
    assert [(s.library, s.model, s.vectors) for s in store.stats()] == [("lib", "m", 9)]
    assert [(s.library, s.model, s.dim, s.vectors) for s in store.stats("lib@new")] == [("lib", "new", 4, 2)]
    # Deleting items of the library deletes them from its staging collection too.
    assert store.delete("lib", [2]) == 3
    assert store.item_ids("lib@new") == [1]
    # Creating the library for the new model adopts the staging collection.
    assert store.create("lib", "new", 4)
    assert [(s.library, s.model, s.dim, s.vectors) for s in store.stats()] == [("lib", "new", 4, 1)]
    with pytest.raises(NotFound):
        store.stats("lib@new")
    with pytest.raises(FailedPrecondition):
        store.search("lib", "m", 8, [unit(1)], 1)
    assert store.open() == 1
    # Dropping a library drops its staging collections first.
    assert store.create("lib@next", "next", 2)
    assert store.drop("lib")
    assert store.open() == 0 and not store.drop("lib@next")


def test_a_staging_collection_is_not_adopted_for_another_binding(store: Store) -> None:
    fill(store)
    store.create("lib@new", "new", 4)
    with pytest.raises(FailedPrecondition, match="already bound"):
        store.create("lib", "new", 16)
    assert store.drop("lib@new") and store.stats("lib")[0].model == "m"


def test_both_stores_answer_alike(tmp_path: Path) -> None:
    milvus, memory = make("milvus", tmp_path), make("memory", tmp_path)
    rng = np.random.default_rng(7)
    dense = [WindowVector(i, w, w * 0.37, unit(i * 100 + w, 16)) for i in range(1, 31) for w in range(4)]
    sparse_rows = [
        WindowVector(
            i,
            w,
            w * 0.5,
            Sparse(
                np.sort(rng.choice(400, size=12, replace=False)).astype(np.uint32),
                rng.uniform(0.5, 1.5, 12).astype(np.float32),
            ),
        )
        for i in range(1, 21)
        for w in range(3)
    ]
    queries = [unit(1000 + k, 16) for k in range(3)]
    sparse_queries = [r.vector for r in sparse_rows[::7]]
    try:
        answers = []
        for s in (milvus, memory):
            s.create("d", "m", 16)
            s.create("s", "fp", 400, sparse=True)
            s.upsert("d", "m", 16, dense)
            s.upsert("s", "fp", 400, sparse_rows)
            s.flush()
            answers.append(
                [
                    s.search("d", "m", 16, queries, 10),
                    s.search("d", "m", 16, queries, 10, hits_per_item=1),
                    s.search("d", "m", 16, queries, 5, item_ids=[3, 4, 5, 6], exclude=[4]),
                    s.search("s", "fp", 400, sparse_queries, 50),
                    s.search("s", "fp", 400, sparse_queries, 8, hits_per_item=1, exclude=[1]),
                    [(w.item_id, w.window, w.offset) for w in s.get_many("d", [(5, [3, 1]), (2, [0])])],
                    s.item_ids("s"),
                    s.stats(),
                ]
            )
    finally:
        milvus.close()
    for ours, theirs in zip(*answers, strict=True):
        if ours and isinstance(ours[0], list):  # search results: the same windows, in order, with the same scores
            for a, b in zip(ours, theirs, strict=True):
                assert [(h.item_id, h.window, h.offset) for h in a] == [(h.item_id, h.window, h.offset) for h in b]
                assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        else:
            assert ours == theirs
