"""Window vectors in Milvus, one collection per library.

The primary key is derived from (item, window), so writing the same item
again overwrites instead of duplicating: a retried insert is harmless."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

WINDOW_BITS = 24  # up to 16.7 M windows per item
MODEL_PROPERTY, DIM_PROPERTY, LIBRARY_PROPERTY = "audiosearch.model", "audiosearch.dim", "audiosearch.library"


@dataclasses.dataclass(frozen=True)
class WindowVector:
    item_id: int
    window: int
    offset: float
    vector: np.ndarray


@dataclasses.dataclass(frozen=True)
class Hit:
    item_id: int
    window: int
    offset: float
    score: float


@dataclasses.dataclass(frozen=True)
class Stats:
    library: str
    model: str
    dim: int
    vectors: int
    items: int


def collection_name(library: str) -> str:
    """Milvus names allow only [A-Za-z0-9_]; hex keeps every library
    name distinct (the readable name is kept as a property)."""
    return "lib_" + library.encode().hex()


def primary_key(item_id: int, window: int) -> int:
    return (item_id << WINDOW_BITS) | window


def _ids(values: Sequence[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


class VectorStore:
    def __init__(self, uri: str, token: str = "", index_type: str = "FLAT") -> None:
        if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.uri, self.index_type = uri, index_type
        try:
            self.client = MilvusClient(uri=uri, token=token)
        except MilvusException as exc:
            raise Unavailable(f"cannot open Milvus at {uri}: {exc}") from None
        self._lock = threading.Lock()  # collection create/drop/load are not concurrent-safe
        self._loaded: set[str] = set()

    def close(self) -> None:
        self.client.close()

    def _binding(self, name: str) -> tuple[str, int] | None:
        if not self.client.has_collection(name):
            return None
        props = self.client.describe_collection(name).get("properties", {})
        return props.get(MODEL_PROPERTY, ""), int(props.get(DIM_PROPERTY, 0))

    def _ensure_loaded(self, name: str) -> None:
        # A collection is released after a restart; load it before use.
        if name in self._loaded:
            return
        with self._lock:
            state = self.client.get_load_state(name).get("state")
            if str(state) != "Loaded" and getattr(state, "name", "") != "Loaded":
                self.client.load_collection(name)
            self._loaded.add(name)

    def _bound(self, library: str, model: str | None = None, dim: int | None = None) -> str:
        name = collection_name(library)
        binding = self._binding(name)
        if binding is None:
            raise NotFound(f"library {library!r} has no vector collection")
        if model is not None and (binding[0] != model or (dim is not None and binding[1] != dim)):
            raise FailedPrecondition(
                f"library {library!r} holds {binding[0]} vectors ({binding[1]}-d); "
                f"{model} ({dim}-d) vectors cannot be mixed in. Use a library created for {model}."
            )
        self._ensure_loaded(name)
        return name

    def create(self, library: str, model: str, dim: int) -> bool:
        if dim <= 0 or dim > 32768:
            raise InvalidArgument(f"dimension {dim} is out of range 1..32768")
        name = collection_name(library)
        with self._lock:
            binding = self._binding(name)
            if binding is not None:
                if binding != (model, dim):
                    raise FailedPrecondition(f"library {library!r} is already bound to {binding[0]} ({binding[1]}-d)")
                return False
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.INT64, is_primary=True)
            schema.add_field("item_id", DataType.INT64)
            schema.add_field("window", DataType.INT32)
            schema.add_field("offset", DataType.FLOAT)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type=self.index_type, metric_type="IP")
            self.client.create_collection(
                name,
                schema=schema,
                index_params=index,
                properties={MODEL_PROPERTY: model, DIM_PROPERTY: str(dim), LIBRARY_PROPERTY: library},
            )
            self._loaded.add(name)
        log.info("created collection %s for library %r (%s, %d-d)", name, library, model, dim)
        return True

    def drop(self, library: str) -> bool:
        name = collection_name(library)
        with self._lock:
            self._loaded.discard(name)
            if not self.client.has_collection(name):
                return False
            self.client.drop_collection(name)
        return True

    def upsert(self, library: str, model: str, dim: int, vectors: Sequence[WindowVector]) -> int:
        name = self._bound(library, model, dim)
        rows = []
        for v in vectors:
            if len(v.vector) != dim:
                raise InvalidArgument(
                    f"vector of item {v.item_id} window {v.window} has {len(v.vector)} dims, expected {dim}"
                )
            if not 0 <= v.window < (1 << WINDOW_BITS) or v.item_id <= 0:
                raise InvalidArgument(f"item id {v.item_id} / window {v.window} out of range")
            rows.append(
                {
                    "pk": primary_key(v.item_id, v.window),
                    "item_id": v.item_id,
                    "window": v.window,
                    "offset": float(v.offset),
                    "vector": np.asarray(v.vector, dtype=np.float32).tolist(),
                }
            )
        if not rows:
            return 0
        return int(self.client.upsert(name, rows)["upsert_count"])

    def get(self, library: str, item_id: int) -> list[WindowVector]:
        name = self._bound(library)
        rows = self.client.query(
            name, filter=f"item_id == {int(item_id)}", output_fields=["item_id", "window", "offset", "vector"]
        )
        rows.sort(key=lambda r: r["window"])
        return [
            WindowVector(r["item_id"], r["window"], r["offset"], np.asarray(r["vector"], dtype=np.float32))
            for r in rows
        ]

    def search(
        self,
        library: str,
        model: str,
        dim: int,
        queries: Sequence[np.ndarray],
        top_k: int,
        item_ids: Sequence[int] = (),
        exclude: Sequence[int] = (),
        distinct_items: bool = False,
    ) -> list[list[Hit]]:
        name = self._bound(library, model, dim)
        if not queries:
            raise InvalidArgument("no query vectors given")
        if any(len(q) != dim for q in queries):
            raise InvalidArgument(f"query vectors must have {dim} dims")
        filters = []
        if item_ids:
            filters.append(f"item_id in {_ids(item_ids)}")
        if exclude:
            filters.append(f"item_id not in {_ids(exclude)}")
        results = self.client.search(
            name,
            data=[np.asarray(q, dtype=np.float32).tolist() for q in queries],
            limit=top_k,
            filter=" and ".join(filters),
            output_fields=["item_id", "window", "offset"],
            search_params={"metric_type": "IP"},
            # Grouping keeps one hit per item, so long recordings with many
            # windows cannot crowd other items out of the top k.
            **({"group_by_field": "item_id"} if distinct_items else {}),
        )
        return [
            [
                Hit(h["entity"]["item_id"], h["entity"]["window"], h["entity"]["offset"], float(h["distance"]))
                for h in hits
            ]
            for hits in results
        ]

    def delete(self, library: str, item_ids: Sequence[int]) -> int:
        if not item_ids:
            return 0
        name = collection_name(library)
        if not self.client.has_collection(name):
            return 0
        self._ensure_loaded(name)
        before = self._count(name, f"item_id in {_ids(item_ids)}")
        self.client.delete(name, filter=f"item_id in {_ids(item_ids)}")
        return before

    def _count(self, name: str, expr: str = "") -> int:
        rows = self.client.query(name, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def stats(self, library: str = "") -> list[Stats]:
        if library:
            names = [collection_name(library)]
            if not self.client.has_collection(names[0]):
                raise NotFound(f"library {library!r} has no vector collection")
        else:
            names = [n for n in self.client.list_collections() if n.startswith("lib_")]
        out = []
        for name in sorted(names):
            self._ensure_loaded(name)
            props = self.client.describe_collection(name).get("properties", {})
            out.append(
                Stats(
                    props.get(LIBRARY_PROPERTY, name),
                    props.get(MODEL_PROPERTY, ""),
                    int(props.get(DIM_PROPERTY, 0)),
                    self._count(name),
                    self._count(name, "window == 0"),  # every item has exactly one window 0
                )
            )
        return out
