"""Window vectors in Milvus, one collection per library.

The primary key is derived from (item, window), so writing the same item
again overwrites instead of duplicating: a retried insert is harmless."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.vectors import Sparse, Vector

log = logging.getLogger(__name__)

WINDOW_BITS = 24  # up to 16.7 M windows per item
MODEL_PROPERTY, DIM_PROPERTY, LIBRARY_PROPERTY = "audiosearch.model", "audiosearch.dim", "audiosearch.library"
SPARSE_PROPERTY = "audiosearch.sparse"
# Milvus Lite searches unsealed (growing) data slowly (~0.8 s per call for
# 5k x 2048 here, 0.06 s once flushed), so collections are flushed once
# writes have paused for FLUSH_AFTER seconds.
FLUSH_AFTER = 1.0
EMPTY_WEIGHT = 1e-6


@dataclasses.dataclass(frozen=True)
class WindowVector:
    item_id: int
    window: int
    offset: float
    vector: Vector


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
    sparse: bool = False


@dataclasses.dataclass(frozen=True)
class Binding:
    model: str
    dim: int
    sparse: bool


def collection_name(library: str) -> str:
    """Milvus names allow only [A-Za-z0-9_]; hex keeps every library
    name distinct (the readable name is kept as a property)."""
    return "lib_" + library.encode().hex()


def primary_key(item_id: int, window: int) -> int:
    return (item_id << WINDOW_BITS) | window


def _ids(values: Sequence[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


@dataclasses.dataclass(frozen=True)
class ServerTls:
    """TLS to a Milvus server: the CA's PEM file (empty: system roots) and
    the name its certificate must carry when not the URI's host."""

    ca_file: str = ""
    server_name: str = ""

    def client_options(self) -> dict[str, object]:
        options: dict[str, object] = {}
        if self.ca_file:
            if not Path(self.ca_file).expanduser().is_file():
                raise Unavailable(f"AUDIOSEARCH_MILVUS_CA_FILE: no such file {self.ca_file}")
            options.update(secure=True, server_pem_path=str(Path(self.ca_file).expanduser()))
        if self.server_name:
            options["server_name"] = self.server_name
        return options


class VectorStore:
    def __init__(
        self, uri: str, token: str = "", index_type: str = "FLAT", db_name: str = "", tls: ServerTls | None = None
    ) -> None:
        """`uri` is a Milvus Lite file (…/name.db) or a server
        (http://host:19530, https:// for TLS); the client code is the same."""
        server = uri.startswith(("http://", "https://", "tcp://", "unix:"))
        if not server:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.uri, self.index_type = uri, index_type
        options = (tls or ServerTls()).client_options() if server else {}
        try:
            self.client = MilvusClient(uri=uri, token=token, db_name=db_name, **options)
        except MilvusException as exc:
            raise Unavailable(f"cannot open Milvus at {uri}: {exc}") from None
        self._lock = threading.Lock()  # collection create/drop/load are not concurrent-safe
        self._loaded: set[str] = set()
        self._bindings: dict[str, Binding] = {}
        self._dirty: dict[str, float] = {}
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="milvus-flush", daemon=True)
        self._flusher.start()

    def close(self) -> None:
        self._stop.set()
        self._flusher.join(5)
        self.flush()
        self.client.close()

    def flush(self) -> None:
        """Seals what was written, so searches run on indexed segments."""
        with self._lock:
            names, self._dirty = list(self._dirty), {}
        for name in names:
            try:
                self.client.flush(name)
            except MilvusException as exc:  # dropped meanwhile, or the server is away: retried on the next write
                log.warning("flush of %s failed: %s", name, exc)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_AFTER / 2):
            now = time.monotonic()
            with self._lock:
                idle = [n for n, t in self._dirty.items() if now - t >= FLUSH_AFTER]
                for name in idle:
                    del self._dirty[name]
            for name in idle:
                try:
                    self.client.flush(name)
                except MilvusException as exc:
                    log.warning("flush of %s failed: %s", name, exc)

    def _binding(self, name: str) -> Binding | None:
        if name in self._bindings:
            return self._bindings[name]
        if not self.client.has_collection(name):
            return None
        props = self.client.describe_collection(name).get("properties", {})
        binding = Binding(
            props.get(MODEL_PROPERTY, ""), int(props.get(DIM_PROPERTY, 0)), props.get(SPARSE_PROPERTY) == "true"
        )
        self._bindings[name] = binding
        return binding

    def _ensure_loaded(self, name: str) -> None:
        # A collection is released after a restart; load it before use.
        if name in self._loaded:
            return
        with self._lock:
            state = self.client.get_load_state(name).get("state")
            if str(state) != "Loaded" and getattr(state, "name", "") != "Loaded":
                self.client.load_collection(name)
            self._loaded.add(name)

    def _bound(self, library: str, model: str | None = None, dim: int | None = None) -> tuple[str, Binding]:
        name = collection_name(library)
        binding = self._binding(name)
        if binding is None:
            raise NotFound(f"library {library!r} has no vector collection")
        if model is not None and (binding.model != model or (dim is not None and binding.dim != dim)):
            raise FailedPrecondition(
                f"library {library!r} holds {binding.model} vectors ({binding.dim}-d); "
                f"{model} ({dim}-d) vectors cannot be mixed in. Use a library created for {model}."
            )
        self._ensure_loaded(name)
        return name, binding

    def create(self, library: str, model: str, dim: int, sparse: bool = False) -> bool:
        if dim <= 0 or (dim > 32768 and not sparse) or dim > 1 << 32:
            raise InvalidArgument(f"dimension {dim} is out of range")
        name = collection_name(library)
        with self._lock:
            binding = self._binding(name)
            if binding is not None:
                if binding != Binding(model, dim, sparse):
                    raise FailedPrecondition(
                        f"library {library!r} is already bound to {binding.model} ({binding.dim}-d)"
                    )
                return False
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
                LIBRARY_PROPERTY: library,
                SPARSE_PROPERTY: "true" if sparse else "false",
            }
            self.client.create_collection(name, schema=schema, index_params=index, properties=properties)
            self._loaded.add(name)
        log.info("created collection %s for library %r (%s, %d-d)", name, library, model, dim)
        return True

    def drop(self, library: str) -> bool:
        name = collection_name(library)
        with self._lock:
            self._loaded.discard(name)
            self._bindings.pop(name, None)
            self._dirty.pop(name, None)
            if not self.client.has_collection(name):
                return False
            self.client.drop_collection(name)
        return True

    def _encode(self, vector: Vector, binding: Binding, what: str) -> list[float] | dict[int, float]:
        """A vector as Milvus takes it, checked against the collection."""
        if binding.sparse:
            if not isinstance(vector, Sparse):
                raise InvalidArgument(f"{what}: this library holds sparse vectors ({binding.model})")
            if len(vector.indices) and int(vector.indices.max()) >= binding.dim:
                raise InvalidArgument(f"{what}: sparse index out of range 0..{binding.dim - 1}")
            # Milvus refuses an all-zero sparse vector (a silent window): store
            # a negligible weight on the last index instead; it matches nothing.
            return vector.as_dict() or {binding.dim - 1: EMPTY_WEIGHT}
        if isinstance(vector, Sparse) or len(vector) != binding.dim:
            raise InvalidArgument(f"{what}: expected a dense {binding.dim}-d vector")
        return np.asarray(vector, dtype=np.float32).tolist()

    def upsert(self, library: str, model: str, dim: int, vectors: Sequence[WindowVector]) -> int:
        name, binding = self._bound(library, model, dim)
        rows = []
        for v in vectors:
            if not 0 <= v.window < (1 << WINDOW_BITS) or v.item_id <= 0:
                raise InvalidArgument(f"item id {v.item_id} / window {v.window} out of range")
            rows.append(
                {
                    "pk": primary_key(v.item_id, v.window),
                    "item_id": v.item_id,
                    "window": v.window,
                    "offset": float(v.offset),
                    "vector": self._encode(v.vector, binding, f"item {v.item_id} window {v.window}"),
                }
            )
        if not rows:
            return 0
        count = int(self.client.upsert(name, rows)["upsert_count"])
        with self._lock:
            self._dirty[name] = time.monotonic()
        return count

    def get(self, library: str, item_id: int) -> list[WindowVector]:
        name, binding = self._bound(library)
        rows = self.client.query(
            name, filter=f"item_id == {int(item_id)}", output_fields=["item_id", "window", "offset", "vector"]
        )
        rows.sort(key=lambda r: r["window"])
        return [
            WindowVector(
                r["item_id"],
                r["window"],
                r["offset"],
                Sparse.from_dict(r["vector"]) if binding.sparse else np.asarray(r["vector"], dtype=np.float32),
            )
            for r in rows
        ]

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
        data = [self._encode(q, binding, "query") for q in queries]
        filters = []
        if item_ids:
            filters.append(f"item_id in {_ids(item_ids)}")
        if exclude:
            filters.append(f"item_id not in {_ids(exclude)}")
        results = self.client.search(
            name,
            data=data,
            anns_field="vector",
            limit=top_k,
            filter=" and ".join(filters),
            output_fields=["item_id", "window", "offset"],
            search_params={"metric_type": "IP"},
            # Grouping keeps one hit per item, so long recordings with many
            # windows cannot crowd other items out of the top k.
            **({"group_by_field": "item_id", "group_size": hits_per_item} if hits_per_item > 0 else {}),
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

    def item_ids(self, library: str) -> list[int]:
        """Every item with at least one window in the library (for repair)."""
        name, _ = self._bound(library)
        ids: set[int] = set()
        # Strong consistency: on a Milvus server, see every write acknowledged so far.
        iterator = self.client.query_iterator(
            name, batch_size=16384, filter="", output_fields=["item_id"], consistency_level="Strong"
        )
        try:
            while batch := iterator.next():
                ids.update(int(r["item_id"]) for r in batch)
        finally:
            iterator.close()
        return sorted(ids)

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
                    props.get(SPARSE_PROPERTY) == "true",
                )
            )
        return out
