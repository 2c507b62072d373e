"""Window vectors in Milvus, one collection per library.

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

import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

# pymilvus imports scipy.sparse lazily, on the first vector it converts;
# two worker threads doing that at once see a half-initialised module. Sparse
# queries also go to it as scipy matrices (`VectorStore._queries`).
import scipy.sparse
from pymilvus import DataType, MilvusClient, MilvusException

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    disk_full,
)
from services.common.text import quoted
from services.common.vectors import Sparse, Vector
from services.search.access import AccessLock

log = logging.getLogger(__name__)

WINDOW_BITS = 24  # up to 16.7 M windows per item
MODEL_PROPERTY, DIM_PROPERTY, LIBRARY_PROPERTY = "audiosearch.model", "audiosearch.dim", "audiosearch.library"
SPARSE_PROPERTY = "audiosearch.sparse"
# Milvus Lite searches unsealed (growing) data slowly (~0.8 s per call for
# 5k x 2048 here, 0.06 s once flushed), so collections are flushed once
# writes have paused for FLUSH_AFTER seconds.
FLUSH_AFTER = 1.0
EMPTY_WEIGHT = 1e-6
# Milvus's "collection not loaded" (a collection released by a restart of
# Milvus Lite or by an operator): load it and try again.
NOT_LOADED = 101
# What a call to Milvus may raise: pymilvus passes some gRPC errors through
# unwrapped (a deadline, a refused token).
FAILURES = (MilvusException, grpc.RpcError, grpc.FutureTimeoutError, OSError)
T = TypeVar("T")


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


LIVE_PREFIX, STAGING_PREFIX = "lib_", "stage_"
STAGING_SEPARATOR = "@"


def split_key(key: str) -> tuple[str, str]:
    """A library key as (library, model): the model of a staging key
    "<library>@<model>", else "" (the library's own collection)."""
    library, separator, model = key.partition(STAGING_SEPARATOR)
    if separator and not (library and model):
        raise InvalidArgument(f"a staging collection is named '<library>@<model>', got {quoted(key)}")
    return library, model


def collection_name(library: str) -> str:
    """Milvus names allow only [A-Za-z0-9_]; hex keeps every library
    name distinct (the readable name is kept as a property). A staging key
    "<library>@<model>" names that library's staging collection."""
    name, model = split_key(library)
    if model:
        return staging_name(name, model)
    return LIVE_PREFIX + library.encode().hex()


def _staging_prefix(library: str) -> str:
    return f"{STAGING_PREFIX}{library.encode().hex()}_"  # hex has no '_': no library's prefix is another's


def staging_name(library: str, model: str) -> str:
    """The staging collection of `library` for `model` (a digest of the
    model name keeps it within Milvus's 255 characters)."""
    return _staging_prefix(library) + hashlib.sha256(model.encode()).hexdigest()[:16]


def _ours(name: str) -> bool:
    return name.startswith((LIVE_PREFIX, STAGING_PREFIX))


def _fits(binding: Binding | None, model: str, dim: int | None) -> bool:
    return binding is not None and binding.model == model and (dim is None or binding.dim == dim)


def primary_key(item_id: int, window: int) -> int:
    return (item_id << WINDOW_BITS) | window


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


def store_error(exc: BaseException) -> ServiceError:
    """What a failure of Milvus (or of the disk under Milvus Lite) means for
    the caller: a full disk is RESOURCE_EXHAUSTED, anything else of the
    store's is UNAVAILABLE (retryable), never an internal error."""
    if disk_full(exc):
        return ResourceExhausted("the vector store's disk is full: free space on it, then retry")
    return Unavailable(f"vector store error, retry: {str(exc)[:300]}")


def _not_loaded(exc: BaseException) -> bool:
    return isinstance(exc, MilvusException) and (
        getattr(exc, "code", None) == NOT_LOADED or "released" in str(exc) or "not loaded" in str(exc)
    )


def _gone(exc: BaseException) -> bool:
    """A collection dropped meanwhile: nothing of the store is damaged."""
    return isinstance(exc, MilvusException) and ("not exist" in str(exc) or "not found" in str(exc))


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except ServiceError:
        raise
    except FAILURES as exc:
        raise store_error(exc) from None


class VectorStore:
    def __init__(
        self,
        uri: str,
        token: str = "",
        index_type: str = "FLAT",
        db_name: str = "",
        tls: ServerTls | None = None,
        timeout: float = 60.0,
    ) -> None:
        """`uri` is a Milvus Lite file (…/name.db) or a server
        (http://host:19530, https:// for TLS); the client code is the same.
        `timeout` bounds every call to Milvus and every wait for the store."""
        server = uri.startswith(("http://", "https://", "tcp://", "unix:"))
        if not server:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.uri, self.index_type, self.timeout = uri, index_type, timeout
        options = (tls or ServerTls()).client_options() if server else {}
        try:
            self.client = MilvusClient(uri=uri, token=token, db_name=db_name, timeout=timeout, **options)
        except MilvusException as exc:
            raise Unavailable(f"cannot open Milvus at {uri}: {exc}") from None
        # Milvus Lite needs its writers one at a time (see access.py).
        self._access = AccessLock(enabled=not server, timeout=timeout)
        self._meta = threading.Lock()  # guards the dicts below, never held over a Milvus call
        self._bindings: dict[str, Binding] = {}
        self._dirty: dict[str, float] = {}
        # Milvus Lite after a failed write or flush: a failed flush has
        # already dropped the rows it was sealing from memory (they are only
        # in the log on disk now, and the next successful flush would delete
        # that log), and a failed write may have left a torn batch at the
        # log's end. So nothing more is written, flushed or read until the
        # engine is reopened from disk, which replays the log: everything
        # acknowledged comes back, the torn batch (never acknowledged) not.
        self._broken = False
        self._token, self._db_name = token, db_name
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="milvus-flush", daemon=True)
        self._flusher.start()

    def open(self) -> int:
        """Loads every library's collection, one at a time: done before the
        service reports SERVING, so the first search finds it loaded (and
        Milvus Lite never opens a collection from two threads). Returns
        how many there are."""
        with _store_errors(), self._access.write():
            names = [n for n in self.client.list_collections(timeout=self.timeout) if _ours(n)]
            for name in names:
                try:
                    self._load(name)
                except FAILURES as exc:  # the first request loads it again (`_use`); the others still serve
                    log.error("could not load collection %s at start-up: %s", name, exc)
        for name in names:
            try:
                self._warm(name)
            except (ServiceError, *FAILURES) as exc:
                log.warning("could not warm collection %s: %s", name, exc)
        return len(names)

    def _warm(self, name: str) -> None:
        """One search, so what Milvus builds on the first (a segment's index,
        1.6 s for 165 items here against 0.07 s for the second) is built
        before any caller waits for it."""
        binding = self._binding(name)
        if binding is None or binding.dim <= 0:  # not one of ours (a shared Milvus database)
            return
        query: list[float] | dict[int, float] = (
            {binding.dim - 1: 1.0} if binding.sparse else [1.0 / binding.dim**0.5] * binding.dim
        )
        began = time.monotonic()
        self._use(
            name,
            False,
            lambda: self.client.search(
                name, data=[query], anns_field="vector", limit=1, output_fields=["item_id"], timeout=self.timeout
            ),
        )
        log.info("warmed collection %s in %.2f s", name, time.monotonic() - began)

    def check(self) -> None:
        """Raises unless the store answers a cheap call now (the health probe)."""
        self._recover()
        # Without the lock: a busy store is not a stuck one (every call that
        # holds the lock is bounded by the timeout), and Milvus answers this
        # metadata call beside writes.
        with _store_errors():
            self.client.list_collections(timeout=min(self.timeout, 10.0))

    def _recover(self) -> None:
        """Reopens Milvus Lite from disk after a failed write or flush (see
        `_broken`); a no-op otherwise. Fails (UNAVAILABLE) while it cannot."""
        if not self._broken:
            return
        with _store_errors(), self._access.write():
            if not self._broken:
                return  # another thread did it
            from milvus_lite.server_manager import server_manager_instance

            log.warning("reopening Milvus Lite at %s to replay its log after a failed write", self.uri)
            with contextlib.suppress(Exception):
                self.client.close()
            server_manager_instance.release_server(self.uri)
            self.client = MilvusClient(uri=self.uri, token=self._token, db_name=self._db_name, timeout=self.timeout)
            for name in self.client.list_collections(timeout=self.timeout):
                if _ours(name):
                    self._load(name)
            self._broken = False

    def close(self) -> None:
        self._stop.set()
        self._flusher.join(5)
        self.flush()
        self.client.close()

    def _load(self, name: str) -> None:
        """Loads `name` (the caller holds the write lock); bounded by the timeout."""
        began = time.monotonic()
        self.client.load_collection(name, timeout=self.timeout)
        log.info("loaded collection %s in %.2f s", name, time.monotonic() - began)

    def _use(self, name: str, write: bool, action: Callable[[], T]) -> T:
        """Runs `action` on collection `name` under the read or the write
        lock, with the store's failures as domain errors; a collection
        found released (Milvus restarted, an operator released it) is
        loaded and `action` runs once more."""
        self._recover()
        for attempt in (1, 2):
            try:
                with self._access.write() if write else self._access.read():
                    if self._broken:  # a write failed while this call waited for the lock
                        raise Unavailable("the vector store is reopening after a failed write; retry")
                    try:
                        return action()
                    except FAILURES as exc:
                        if write and self._access.enabled and not _not_loaded(exc) and not _gone(exc):
                            # Still under the lock: no other write may slip in
                            # before the engine is reopened (see `_broken`).
                            self._broken = True
                            log.error("a write to Milvus Lite failed (%s); reopening it before the next request", exc)
                        raise
            except FAILURES as exc:
                if attempt == 2 or not _not_loaded(exc):
                    raise store_error(exc) from None
                log.warning("collection %s was released; loading it again", name)
            with _store_errors(), self._access.write():
                self._load(name)
        raise AssertionError("unreachable")

    def flush(self) -> None:
        """Seals what was written, so searches run on indexed segments."""
        with self._meta:
            names, self._dirty = list(self._dirty), {}
        for name in names:
            self._flush(name)

    def _flush(self, name: str) -> bool:
        try:
            self._use(name, True, lambda: self.client.flush(name, timeout=self.timeout))
        except ServiceError as exc:  # dropped meanwhile, or the disk is full: retried later
            log.warning("flush of %s failed: %s", name, exc.message)
            return False
        except Exception:  # the flusher thread must outlive any surprise
            log.exception("flush of %s failed", name)
            return False
        return True

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_AFTER / 2):
            now = time.monotonic()
            with self._meta:
                idle = [n for n, t in self._dirty.items() if now - t >= FLUSH_AFTER]
                for name in idle:
                    del self._dirty[name]
            for name in idle:
                if not self._flush(name):
                    with self._meta:
                        self._dirty.setdefault(name, now)

    def _binding(self, name: str) -> Binding | None:
        with self._meta:
            if name in self._bindings:
                return self._bindings[name]
        with _store_errors(), self._access.read():
            if not self.client.has_collection(name, timeout=self.timeout):
                return None
            props = self.client.describe_collection(name, timeout=self.timeout).get("properties", {})
        binding = Binding(
            props.get(MODEL_PROPERTY, ""), int(props.get(DIM_PROPERTY, 0)), props.get(SPARSE_PROPERTY) == "true"
        )
        with self._meta:
            self._bindings[name] = binding
        return binding

    def _bound(self, library: str, model: str | None = None, dim: int | None = None) -> tuple[str, Binding]:
        name = collection_name(library)
        binding = self._binding(name)
        if model is not None and not _fits(binding, model, dim) and not split_key(library)[1]:
            staged = staging_name(library, model)
            staged_binding = self._binding(staged)
            if _fits(staged_binding, model, dim):
                # The library was switched to `model`, and its staging
                # collection is not adopted yet (module doc).
                assert staged_binding is not None
                return staged, staged_binding
        if binding is None:
            raise NotFound(f"library {quoted(library)} has no vector collection")
        if model is not None and not _fits(binding, model, dim):
            raise FailedPrecondition(
                f"library {quoted(library)} holds {binding.model} vectors ({binding.dim}-d); "
                f"{model} ({dim}-d) vectors cannot be mixed in. Use a library created for {model}."
            )
        return name, binding

    def create(self, library: str, model: str, dim: int, sparse: bool = False) -> bool:
        """The collection of `library` (or of a staging key) for `model`. A
        library's staging collection for `model` is adopted (module doc)."""
        if dim <= 0 or (dim > 32768 and not sparse) or dim > 1 << 32:
            raise InvalidArgument(f"dimension {dim} is out of range")
        base, staged_model = split_key(library)
        if staged_model and staged_model != model:
            raise InvalidArgument(f"the staging collection {quoted(library)} is for {staged_model}, not {model}")
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
            with _store_errors(), self._access.write():
                if not self.client.has_collection(name, timeout=self.timeout):  # a concurrent create may have won
                    self.client.create_collection(
                        name, schema=schema, index_params=index, properties=properties, timeout=self.timeout
                    )
                    self._load(name)  # loaded once, here, by one thread
                    log.info("created collection %s for library %r (%s, %d-d)", name, library, model, dim)
                    return True
            binding = self._binding(name)
        if binding != wanted:
            raise FailedPrecondition(f"library {quoted(library)} is already bound to {binding.model} ({binding.dim}-d)")
        return False

    def _adopt(self, library: str, wanted: Binding) -> bool:
        """Makes the staging collection of `library` for `wanted` the
        library's own, dropping the collection it replaces; False when
        there is no such staging collection."""
        staged, live = staging_name(library, wanted.model), collection_name(library)
        if self._binding(staged) != wanted:
            return False
        with _store_errors(), self._access.write():
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
        prefix = _staging_prefix(library)
        with _store_errors(), self._access.read():
            return [n for n in self.client.list_collections(timeout=self.timeout) if n.startswith(prefix)]

    def drop(self, library: str) -> bool:
        """Drops the collection of `library` and, first, its staging
        collections (a staging key: only that one)."""
        base, staged_model = split_key(library)
        name = collection_name(library)
        names = ([] if staged_model else self._stagings(base)) + [name]
        dropped = False
        with _store_errors(), self._access.write():
            for each in names:
                with self._meta:
                    self._bindings.pop(each, None)
                    self._dirty.pop(each, None)
                if self.client.has_collection(each, timeout=self.timeout):
                    self.client.drop_collection(each, timeout=self.timeout)
                    dropped = each == name
        return dropped

    def _encode(self, vector: Vector, binding: Binding, what: str) -> list[float] | dict[int, float]:
        """A vector as Milvus takes it in a row, checked against the collection."""
        if binding.sparse:
            return self._sparse(vector, binding, what).as_dict()
        if isinstance(vector, Sparse) or len(vector) != binding.dim:
            raise InvalidArgument(f"{what}: expected a dense {binding.dim}-d vector")
        return np.asarray(vector, dtype=np.float32).tolist()

    def _sparse(self, vector: Vector, binding: Binding, what: str) -> Sparse:
        """A sparse vector checked against the collection. Milvus refuses an
        all-zero one (a silent window): it gets a negligible weight on the
        last index instead, which matches nothing."""
        if not isinstance(vector, Sparse):
            raise InvalidArgument(f"{what}: this library holds sparse vectors ({binding.model})")
        if len(vector.indices) and int(vector.indices.max()) >= binding.dim:
            raise InvalidArgument(f"{what}: sparse index out of range 0..{binding.dim - 1}")
        if not len(vector.indices):
            return Sparse(np.array([binding.dim - 1], dtype=np.uint32), np.array([EMPTY_WEIGHT], dtype=np.float32))
        if np.any(np.diff(vector.indices.astype(np.int64)) <= 0):  # a client's unsorted or repeated indices
            return Sparse.from_dict(vector.as_dict())
        return vector

    def _queries(self, queries: Sequence[Vector], binding: Binding) -> list:
        """Query vectors as Milvus takes them. Sparse ones go as one-row CSR
        matrices straight from their (ascending) arrays: pymilvus checks a
        list of dicts entry by entry in Python (measured: 0.38 s of a 0.87 s
        search with 81 vectors of 1,500 entries each), a matrix not at all."""
        if not binding.sparse:
            return [self._encode(q, binding, "query") for q in queries]
        out = []
        for q in queries:
            v = self._sparse(q, binding, "query")
            matrix = (v.values, v.indices.astype(np.int64), [0, len(v.indices)])
            out.append(scipy.sparse.csr_matrix(matrix, shape=(1, binding.dim)))
        return out

    def _write(self, name: str, action: Callable[[], T]) -> T:
        """A write that, once it returns, survives a SIGKILL of this process:
        Milvus Lite has it in its write-ahead log in the OS's page cache (a
        server: in its own log)."""
        result = self._use(name, True, action)
        with self._meta:
            self._dirty[name] = time.monotonic()
        return result

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

    def _count(self, name: str, expr: str = "") -> int:
        rows = self.client.query(name, filter=expr, output_fields=["count(*)"], timeout=self.timeout)
        return int(rows[0]["count(*)"]) if rows else 0

    def stats(self, library: str = "") -> list[Stats]:
        if library:
            names = [collection_name(library)]
            if self._binding(names[0]) is None:
                raise NotFound(f"library {quoted(library)} has no vector collection")
        else:
            with _store_errors(), self._access.read():
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
