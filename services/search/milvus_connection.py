"""The Milvus client under the store: its connection (a Milvus Lite file or
a server), the lock Milvus Lite needs (access.py), recovery after a failed
write, the background flusher, and the cache of each collection's model.
`milvus.MilvusStore` builds the store's operations on top."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pymilvus import MilvusClient, MilvusException

from services.common.errors import ServiceError, Unavailable
from services.search.access import AccessLock
from services.search.contract import Binding
from services.search.milvus_errors import FAILURES, gone, not_loaded, store_error, store_errors
from services.search.naming import ours

log = logging.getLogger(__name__)

MODEL_PROPERTY, DIM_PROPERTY, LIBRARY_PROPERTY = "audiosearch.model", "audiosearch.dim", "audiosearch.library"
SPARSE_PROPERTY = "audiosearch.sparse"
# Milvus Lite searches unsealed (growing) data slowly (~0.8 s per call for
# 5k x 2048 here, 0.06 s once flushed), so collections are flushed once
# writes have paused for FLUSH_AFTER seconds.
FLUSH_AFTER = 1.0
T = TypeVar("T")


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


class MilvusConnection:
    """The client and its upkeep; the store's operations are `milvus.MilvusStore`'s."""

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
        with store_errors(), self._access.write():
            names = [n for n in self.client.list_collections(timeout=self.timeout) if ours(n)]
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
        with store_errors():
            self.client.list_collections(timeout=min(self.timeout, 10.0))

    def _recover(self) -> None:
        """Reopens Milvus Lite from disk after a failed write or flush (see
        `_broken`); a no-op otherwise. Fails (UNAVAILABLE) while it cannot."""
        if not self._broken:
            return
        with store_errors(), self._access.write():
            if not self._broken:
                return  # another thread did it
            from milvus_lite.server_manager import server_manager_instance

            log.warning("reopening Milvus Lite at %s to replay its log after a failed write", self.uri)
            with contextlib.suppress(Exception):
                self.client.close()
            server_manager_instance.release_server(self.uri)
            self.client = MilvusClient(uri=self.uri, token=self._token, db_name=self._db_name, timeout=self.timeout)
            for name in self.client.list_collections(timeout=self.timeout):
                if ours(name):
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
                        if write and self._access.enabled and not not_loaded(exc) and not gone(exc):
                            # Still under the lock: no other write may slip in
                            # before the engine is reopened (see `_broken`).
                            self._broken = True
                            log.error("a write to Milvus Lite failed (%s); reopening it before the next request", exc)
                        raise
            except FAILURES as exc:
                if attempt == 2 or not not_loaded(exc):
                    raise store_error(exc) from None
                log.warning("collection %s was released; loading it again", name)
            with store_errors(), self._access.write():
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
        with store_errors(), self._access.read():
            if not self.client.has_collection(name, timeout=self.timeout):
                return None
            props = self.client.describe_collection(name, timeout=self.timeout).get("properties", {})
        binding = Binding(
            props.get(MODEL_PROPERTY, ""), int(props.get(DIM_PROPERTY, 0)), props.get(SPARSE_PROPERTY) == "true"
        )
        with self._meta:
            self._bindings[name] = binding
        return binding

    def _write(self, name: str, action: Callable[[], T]) -> T:
        """A write that, once it returns, survives a SIGKILL of this process:
        Milvus Lite has it in its write-ahead log in the OS's page cache (a
        server: in its own log)."""
        result = self._use(name, True, action)
        with self._meta:
            self._dirty[name] = time.monotonic()
        return result

    def _count(self, name: str, expr: str = "") -> int:
        rows = self.client.query(name, filter=expr, output_fields=["count(*)"], timeout=self.timeout)
        return int(rows[0]["count(*)"]) if rows else 0
