"""The Milvus adapter of the store contract: window vectors in Milvus, one
collection per library.

The primary key is derived from (item, window), so writing the same item
again overwrites instead of duplicating: a retried insert is harmless.

Moving a library to another model (the gateway's ReindexLibrary) writes the
new vectors into a second collection, the library's *staging* collection
for that model, named by the key "<library>@<model>" wherever a library
name goes ('@' is never part of a library name), while the library's own
collection keeps serving. Once the catalog has switched the library to the
new model (the one step that decides):
- a request that names the library with the new model (a search, an
  upsert) is served from that staging collection for as long as the
  library's own collection is still bound to the old model;
- creating the library's collection for the new model adopts the staging
  collection: the old one is dropped and the staging one renamed in its
  place (a repair that finds the library without a collection does the
  same, should the store stop between the two).
Deleting items of a library deletes them from its staging collections too,
dropping a library drops them first, and `stats` lists only libraries' own
collections."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

# pymilvus imports scipy.sparse lazily, on the first vector it converts;
# two worker threads doing that at once see a half-initialised module. Sparse
# queries also go to it as scipy matrices (`MilvusStore._queries`).
import scipy.sparse
from pymilvus import DataType

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.text import quoted
from services.common.vectors import Sparse, Vector
from services.search import rules
from services.search.contract import Binding, Hit, Stats, WindowVector
from services.search.milvus_connection import (
    DIM_PROPERTY,
    LIBRARY_PROPERTY,
    MODEL_PROPERTY,
    SPARSE_PROPERTY,
    MilvusConnection,
)
from services.search.milvus_errors import store_errors
from services.search.naming import LIVE_PREFIX, collection_name, primary_key, split_key, staging_name, staging_prefix

log = logging.getLogger(__name__)


def _window_vector(row: dict, sparse: bool) -> WindowVector:
    vector = row["vector"]
    return WindowVector(
        row["item_id"],
        row["window"],
        row["offset"],
        Sparse.from_dict(vector) if sparse else np.asarray(vector, dtype=np.float32),
    )


def _ids(values: Sequence[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


def _encode(vector: Vector, binding: Binding, what: str) -> list[float] | dict[int, float]:
    """A vector as Milvus takes it in a row, checked against the collection."""
    if binding.sparse:
        return rules.sparse(vector, binding, what).as_dict()
    return rules.dense(vector, binding, what).tolist()


class MilvusStore(MilvusConnection):
    """The store contract (contract.Store) on Milvus: a Milvus Lite file or a server."""

    def _bound(self, library: str, model: str | None = None, dim: int | None = None) -> tuple[str, Binding]:
        return rules.resolve(library, self._binding, model, dim)

    def create(self, library: str, model: str, dim: int, sparse: bool = False) -> bool:
        """The collection of `library` (or of a staging key) for `model`. A
        library's staging collection for `model` is adopted (module doc)."""
        base, staged_model = rules.creation(library, model, dim, sparse)
        name, wanted = collection_name(library), Binding(model, dim, sparse)
        binding = self._binding(name)
        if not staged_model and binding != wanted and self._adopt(base, wanted):
            return True
        if binding is None:
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.INT64, is_primary=True)
            schema.add_field("item_id", DataType.INT64)
            schema.add_field("window", DataType.INT32)
            schema.add_field("offset", DataType.FLOAT)
            index = self.client.prepare_index_params()
            if sparse:
                schema.add_field("vector", DataType.SPARSE_FLOAT_VECTOR)
                index.add_index("vector", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
            else:
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
                index.add_index("vector", index_type=self.index_type, metric_type="IP")
            properties = {
                MODEL_PROPERTY: model,
                DIM_PROPERTY: str(dim),
                LIBRARY_PROPERTY: base,
                SPARSE_PROPERTY: "true" if sparse else "false",
            }
            with store_errors(), self._access.write():
                if not self.client.has_collection(name, timeout=self.timeout):  # a concurrent create may have won
                    self.client.create_collection(
                        name, schema=schema, index_params=index, properties=properties, timeout=self.timeout
                    )
                    self._load(name)  # loaded once, here, by one thread
                    log.info("created collection %s for library %r (%s, %d-d)", name, library, model, dim)
                    return True
            binding = self._binding(name)
        if binding != wanted:
            raise rules.already_bound(library, binding)
        return False

    def _adopt(self, library: str, wanted: Binding) -> bool:
        """Makes the staging collection of `library` for `wanted` the
        library's own, dropping the collection it replaces; False when
        there is no such staging collection."""
        staged, live = staging_name(library, wanted.model), collection_name(library)
        if self._binding(staged) != wanted:
            return False
        with store_errors(), self._access.write():
            if not self.client.has_collection(staged, timeout=self.timeout):
                return False  # adopted meanwhile
            self.client.flush(staged, timeout=self.timeout)
            with self._meta:
                for name in (staged, live):
                    self._bindings.pop(name, None)
                    self._dirty.pop(name, None)
            if self.client.has_collection(live, timeout=self.timeout):
                self.client.drop_collection(live, timeout=self.timeout)
            self.client.rename_collection(staged, live, timeout=self.timeout)
            self._load(live)  # a renamed collection comes back released
        log.info("library %r adopted its staging collection for %s; the old one is dropped", library, wanted.model)
        return True

    def _stagings(self, library: str) -> list[str]:
        prefix = staging_prefix(library)
        with store_errors(), self._access.read():
            return [n for n in self.client.list_collections(timeout=self.timeout) if n.startswith(prefix)]

    def drop(self, library: str) -> bool:
        """Drops the collection of `library` and, first, its staging
        collections (a staging key: only that one)."""
        base, staged_model = split_key(library)
        name = collection_name(library)
        names = ([] if staged_model else self._stagings(base)) + [name]
        dropped = False
        with store_errors(), self._access.write():
            for each in names:
                with self._meta:
                    self._bindings.pop(each, None)
                    self._dirty.pop(each, None)
                if self.client.has_collection(each, timeout=self.timeout):
                    self.client.drop_collection(each, timeout=self.timeout)
                    dropped = each == name
        return dropped

    def _queries(self, queries: Sequence[Vector], binding: Binding) -> list:
        """Query vectors as Milvus takes them. Sparse ones go as one-row CSR
        matrices straight from their (ascending) arrays: pymilvus checks a
        list of dicts entry by entry in Python (measured: 0.38 s of a 0.87 s
        search with 81 vectors of 1,500 entries each), a matrix not at all."""
        if not binding.sparse:
            return [_encode(q, binding, "query") for q in queries]
        out = []
        for q in queries:
            v = rules.sparse(q, binding, "query")
            matrix = (v.values, v.indices.astype(np.int64), [0, len(v.indices)])
            out.append(scipy.sparse.csr_matrix(matrix, shape=(1, binding.dim)))
        return out

    def upsert(self, library: str, model: str, dim: int, vectors: Sequence[WindowVector]) -> int:
        name, binding = self._bound(library, model, dim)
        rows = []
        for v in vectors:
            rules.check_key(v)
            rows.append(
                {
                    "pk": primary_key(v.item_id, v.window),
                    "item_id": v.item_id,
                    "window": v.window,
                    "offset": float(v.offset),
                    "vector": _encode(v.vector, binding, f"item {v.item_id} window {v.window}"),
                }
            )
        if not rows:
            return 0
        return self._write(name, lambda: int(self.client.upsert(name, rows, timeout=self.timeout)["upsert_count"]))

    def get(self, library: str, item_id: int, windows: Sequence[int] = ()) -> list[WindowVector]:
        """An item's windows (only `windows`, by index, when given), in order.
        Chosen windows are read by primary key, not by a filter, which Milvus
        Lite answers by scanning every row (measured at 1.04 h: a 5 s
        query's ten reads took 90 ms by filter, 60 ms by key)."""
        name, binding = self._bound(library)
        fields = ["item_id", "window", "offset", "vector"]
        if windows:
            ids = [primary_key(int(item_id), int(w)) for w in windows]
            read = lambda: self.client.get(name, ids=ids, output_fields=fields, timeout=self.timeout)  # noqa: E731
        else:
            expr = f"item_id == {int(item_id)}"
            read = lambda: self.client.query(name, filter=expr, output_fields=fields, timeout=self.timeout)  # noqa: E731
        rows = self._use(name, False, read)
        rows.sort(key=lambda r: r["window"])
        return [_window_vector(r, binding.sparse) for r in rows]

    def get_many(self, library: str, windows: Sequence[tuple[int, Sequence[int]]]) -> list[WindowVector]:
        """Chosen windows of several items, (item id, window indices) each,
        in one read by primary key; ordered by item as given, then by window.
        Windows that do not exist are left out. One read instead of one per
        item: the candidates of a landmark search are fetched together."""
        name, binding = self._bound(library)
        ids = [primary_key(int(item_id), int(w)) for item_id, chosen in windows for w in chosen]
        if not ids:
            return []
        fields = ["item_id", "window", "offset", "vector"]
        read = lambda: self.client.get(name, ids=ids, output_fields=fields, timeout=self.timeout)  # noqa: E731
        rows = self._use(name, False, read)
        rank = {int(item_id): k for k, (item_id, _) in reversed(list(enumerate(windows)))}
        rows.sort(key=lambda r: (rank[r["item_id"]], r["window"]))
        return [_window_vector(r, binding.sparse) for r in rows]

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
        name, binding = self._bound(library, model, dim)
        if not queries:
            raise InvalidArgument("no query vectors given")
        data = self._queries(queries, binding)
        filters = []
        if item_ids:
            filters.append(f"item_id in {_ids(item_ids)}")
        if exclude:
            filters.append(f"item_id not in {_ids(exclude)}")
        results = self._use(
            name,
            False,
            lambda: self.client.search(
                name,
                data=data,
                anns_field="vector",
                limit=top_k,
                filter=" and ".join(filters),
                output_fields=["item_id", "window", "offset"],
                search_params={"metric_type": "IP"},
                timeout=self.timeout,
                # Grouping keeps one hit per item, so long recordings with many
                # windows cannot crowd other items out of the top k.
                **({"group_by_field": "item_id", "group_size": hits_per_item} if hits_per_item > 0 else {}),
            ),
        )
        return [
            [
                Hit(h["entity"]["item_id"], h["entity"]["window"], h["entity"]["offset"], float(h["distance"]))
                for h in hits
            ]
            for hits in results
        ]

    def delete(self, library: str, item_ids: Sequence[int]) -> int:
        """Deletes the items' vectors, from a library's staging collections
        too; returns how many the named collection held."""
        if not item_ids:
            return 0
        base, staged_model = split_key(library)
        name = collection_name(library)
        expr = f"item_id in {_ids(item_ids)}"
        deleted = 0
        for each in [name] + ([] if staged_model else self._stagings(base)):
            if self._binding(each) is None:
                continue

            def delete(each: str = each) -> int:
                before = self._count(each, expr)
                self.client.delete(each, filter=expr, timeout=self.timeout)
                return before

            count = self._write(each, delete)
            if each == name:
                deleted = count
        return deleted

    def item_ids(self, library: str) -> list[int]:
        """Every item with at least one window in the library (for repair)."""
        name, _ = self._bound(library)

        def collect() -> list[int]:
            ids: set[int] = set()
            # Strong consistency: on a Milvus server, see every write acknowledged so far.
            iterator = self.client.query_iterator(
                name,
                batch_size=16384,
                filter="",
                output_fields=["item_id"],
                consistency_level="Strong",
                timeout=self.timeout,
            )
            try:
                while batch := iterator.next():
                    ids.update(int(r["item_id"]) for r in batch)
            finally:
                iterator.close()
            return sorted(ids)

        return self._use(name, False, collect)

    def stats(self, library: str = "") -> list[Stats]:
        if library:
            names = [collection_name(library)]
            if self._binding(names[0]) is None:
                raise NotFound(f"library {quoted(library)} has no vector collection")
        else:
            with store_errors(), self._access.read():
                names = [n for n in self.client.list_collections(timeout=self.timeout) if n.startswith(LIVE_PREFIX)]
        out = []
        for name in sorted(names):

            def read(name: str = name) -> Stats:
                props = self.client.describe_collection(name, timeout=self.timeout).get("properties", {})
                return Stats(
                    props.get(LIBRARY_PROPERTY, name),
                    props.get(MODEL_PROPERTY, ""),
                    int(props.get(DIM_PROPERTY, 0)),
                    self._count(name),
                    self._count(name, "window == 0"),  # every item has exactly one window 0
                    props.get(SPARSE_PROPERTY) == "true",
                )

            try:
                out.append(self._use(name, False, read))
            except Unavailable:
                if self._binding(name) is not None:
                    raise
                # dropped since the listing
        return out
