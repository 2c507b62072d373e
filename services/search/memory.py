"""The reference store: the store contract held in memory, searched exactly
(inner product over every window, dense or sparse). It keeps the Milvus
adapter's semantics (collections named and keyed as in `naming`, staging
collections adopted the same way, offsets stored as float32, a sparse
query matching only windows it shares an index with), so the contract
tests hold both to the same behaviour. Nothing survives the process."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import numpy as np

from services.common.errors import InvalidArgument, NotFound
from services.common.text import quoted
from services.common.vectors import Sparse, Vector
from services.search import rules
from services.search.contract import Binding, Hit, Stats, WindowVector
from services.search.naming import LIVE_PREFIX, collection_name, primary_key, split_key, staging_name, staging_prefix


@dataclasses.dataclass
class _Collection:
    library: str  # a staging collection's too is its library's name
    binding: Binding
    rows: dict[int, WindowVector] = dataclasses.field(default_factory=dict)  # by primary key


def _copy(v: WindowVector) -> WindowVector:
    """A window that shares no array with the caller's (Milvus hands out
    fresh ones too)."""
    vector = v.vector
    if isinstance(vector, Sparse):
        vector = Sparse(np.array(vector.indices, dtype=np.uint32), np.array(vector.values, dtype=np.float32))
    else:
        vector = np.array(vector, dtype=np.float32)
    return WindowVector(v.item_id, v.window, v.offset, vector)


def _scores(query: Vector, rows: list[WindowVector]) -> tuple[list[WindowVector], np.ndarray]:
    """The rows a query reaches and their inner products with it: every row
    for a dense query, those sharing an index for a sparse one."""
    if not isinstance(query, Sparse):
        if not rows:
            return [], np.zeros(0, dtype=np.float32)
        return rows, np.stack([np.asarray(r.vector) for r in rows]) @ np.asarray(query, dtype=np.float32)
    reached, scores = [], []
    for row in rows:
        vector = row.vector
        assert isinstance(vector, Sparse)
        _, mine, theirs = np.intersect1d(vector.indices, query.indices, assume_unique=True, return_indices=True)
        if len(mine):
            reached.append(row)
            scores.append(np.dot(vector.values[mine], query.values[theirs]))
    return reached, np.asarray(scores, dtype=np.float32)


def _best(query: Vector, rows: list[WindowVector], top_k: int, hits_per_item: int) -> list[Hit]:
    reached, scores = _scores(query, rows)
    hits: list[Hit] = []
    seen: set[int] = set()
    for k in np.argsort(-scores, kind="stable"):
        row = reached[k]
        if hits_per_item > 0 and row.item_id in seen:
            continue
        seen.add(row.item_id)
        hits.append(Hit(row.item_id, row.window, row.offset, float(scores[k])))
        if len(hits) == top_k:
            break
    return hits


class MemoryStore:
    """The store contract in memory; one lock makes every call atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collections: dict[str, _Collection] = {}  # by collection name, as Milvus names them

    def open(self) -> int:
        with self._lock:
            return len(self._collections)

    def check(self) -> None:
        """Always answers: there is nothing to reach."""

    def close(self) -> None:
        """Nothing to release."""

    def flush(self) -> None:
        """Nothing to seal: every write is searchable at once."""

    def _binding(self, name: str) -> Binding | None:
        collection = self._collections.get(name)
        return collection.binding if collection else None

    def _bound(self, library: str, model: str | None = None, dim: int | None = None) -> _Collection:
        name, _ = rules.resolve(library, self._binding, model, dim)
        return self._collections[name]

    def _stagings(self, library: str) -> list[str]:
        return [name for name in self._collections if name.startswith(staging_prefix(library))]

    def create(self, library: str, model: str, dim: int, sparse: bool = False) -> bool:
        """As the Milvus adapter: a library's staging collection for `model` is adopted."""
        base, staged_model = rules.creation(library, model, dim, sparse)
        name, wanted = collection_name(library), Binding(model, dim, sparse)
        with self._lock:
            binding, staged = self._binding(name), staging_name(base, model)
            if not staged_model and binding != wanted and self._binding(staged) == wanted:
                self._collections[name] = self._collections.pop(staged)
                return True
            if binding is None:
                self._collections[name] = _Collection(base, wanted)
                return True
            if binding != wanted:
                raise rules.already_bound(library, binding)
            return False

    def drop(self, library: str) -> bool:
        base, staged_model = split_key(library)
        name = collection_name(library)
        with self._lock:
            for staged in [] if staged_model else self._stagings(base):
                del self._collections[staged]
            return self._collections.pop(name, None) is not None

    def upsert(self, library: str, model: str, dim: int, vectors: Sequence[WindowVector]) -> int:
        with self._lock:
            collection = self._bound(library, model, dim)
            rows = {}
            for v in vectors:
                rules.check_key(v)
                vector = rules.checked(v.vector, collection.binding, f"item {v.item_id} window {v.window}")
                # Milvus keeps offsets as float32.
                row = WindowVector(v.item_id, v.window, float(np.float32(v.offset)), vector)
                rows[primary_key(v.item_id, v.window)] = _copy(row)
            collection.rows.update(rows)
            return len(vectors)

    def get(self, library: str, item_id: int, windows: Sequence[int] = ()) -> list[WindowVector]:
        with self._lock:
            rows = self._bound(library).rows
            if windows:
                keys = [primary_key(int(item_id), int(w)) for w in windows]
                found = [rows[k] for k in keys if k in rows]
            else:
                found = [r for r in rows.values() if r.item_id == int(item_id)]
        return [_copy(r) for r in sorted(found, key=lambda r: r.window)]

    def get_many(self, library: str, windows: Sequence[tuple[int, Sequence[int]]]) -> list[WindowVector]:
        with self._lock:
            rows = self._bound(library).rows
            keys = [primary_key(int(item_id), int(w)) for item_id, chosen in windows for w in chosen]
            found = [rows[k] for k in keys if k in rows]
        rank = {int(item_id): k for k, (item_id, _) in reversed(list(enumerate(windows)))}
        return [_copy(r) for r in sorted(found, key=lambda r: (rank[r.item_id], r.window))]

    def search(
        self,
        library: str,
        model: str,
        dim: int,
        queries: Sequence[Vector],
        top_k: int,
        item_ids: Sequence[int] = (),
        exclude: Sequence[int] = (),
        hits_per_item: int = 0,
    ) -> list[list[Hit]]:
        wanted, unwanted = {int(i) for i in item_ids}, {int(i) for i in exclude}
        with self._lock:
            collection = self._bound(library, model, dim)
            if not queries:
                raise InvalidArgument("no query vectors given")
            checked = [rules.checked(q, collection.binding, "query") for q in queries]
            rows = [
                collection.rows[k]
                for k in sorted(collection.rows)
                if (not wanted or collection.rows[k].item_id in wanted) and collection.rows[k].item_id not in unwanted
            ]
        return [_best(q, rows, top_k, hits_per_item) for q in checked]

    def delete(self, library: str, item_ids: Sequence[int]) -> int:
        """Deletes the items' vectors, from a library's staging collections
        too; returns how many the named collection held."""
        if not item_ids:
            return 0
        base, staged_model = split_key(library)
        name, ids = collection_name(library), {int(i) for i in item_ids}
        deleted = 0
        with self._lock:
            for each in [name] + ([] if staged_model else self._stagings(base)):
                collection = self._collections.get(each)
                if collection is None:
                    continue
                gone = [k for k, r in collection.rows.items() if r.item_id in ids]
                for k in gone:
                    del collection.rows[k]
                if each == name:
                    deleted = len(gone)
        return deleted

    def item_ids(self, library: str) -> list[int]:
        with self._lock:
            return sorted({r.item_id for r in self._bound(library).rows.values()})

    def stats(self, library: str = "") -> list[Stats]:
        with self._lock:
            if library:
                names = [collection_name(library)]
                if names[0] not in self._collections:
                    raise NotFound(f"library {quoted(library)} has no vector collection")
            else:
                names = [n for n in self._collections if n.startswith(LIVE_PREFIX)]
            out = []
            for name in sorted(names):
                c = self._collections[name]
                rows = c.rows.values()
                items = sum(r.window == 0 for r in rows)  # as Milvus counts: every item has exactly one window 0
                out.append(Stats(c.library, c.binding.model, c.binding.dim, len(rows), items, c.binding.sparse))
            return out
