"""In-memory fakes of the gateway's ports, for the fast test tier: the
catalog's item lifecycle (PENDING -> READY -> DELETING -> gone, one item
per content and library), a vector store, kept uploads and an embedder,
plus `Crashing`, which stops the process (as far as the gateway can tell)
at a chosen call. Semantics follow the real services (catalog/repository
and search/memory.py); the slow tier runs those for real."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.gateway.ports import (
    DELETING,
    PENDING,
    READY,
    CollectionStats,
    Embedded,
    Hit,
    Item,
    ItemState,
    Library,
    LibraryCounts,
    ModelStatus,
    Window,
)

MODEL = ModelStatus(name="fake-v1", version="1", dim=4, available=True, reason="", window=1.0, hop=1.0)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class MemoryCatalog:
    def __init__(self) -> None:
        self.libraries: dict[str, Library] = {}
        self.items: dict[int, Item] = {}
        self.touched: dict[int, datetime] = {}
        self._ids = itertools.count(1)

    async def create_library(
        self, name: str, model: str, dim: int, description: str, window: float, hop: float
    ) -> Library:
        if name in self.libraries:
            raise FailedPrecondition(f"library {name} exists")
        self.libraries[name] = Library(name, model, dim, description, _now(), window, hop)
        return self.libraries[name]

    async def get_library(self, name: str) -> Library:
        if name not in self.libraries:
            raise NotFound(f"no library {name}")
        return self.libraries[name]

    async def list_libraries(self) -> list[Library]:
        return list(self.libraries.values())

    async def delete_library(self, name: str) -> int:
        await self.get_library(name)
        gone = [i for i, item in self.items.items() if item.library == name]
        for i in gone:
            del self.items[i]
        del self.libraries[name]
        return len(gone)

    async def reserve_item(
        self, library: str, sha256: str, name: str, source_uri: str, tags: Sequence[str], idempotency_key: str = ""
    ) -> tuple[Item, bool]:
        await self.get_library(library)
        for item in self.items.values():
            if item.library == library and item.sha256 == sha256:
                if item.state == PENDING:
                    self.touched[item.id] = _now()
                return item, False
        item_id = next(self._ids)
        self.items[item_id] = Item(
            item_id, library, name, source_uri, sha256, 0.0, 0, 0, sorted(tags), [], _now(), PENDING
        )
        self.touched[item_id] = _now()
        return self.items[item_id], True

    def _set(self, item_id: int, state: str, **changes: Any) -> Item:
        self.items[item_id] = dataclasses.replace(self.items[item_id], state=state, **changes)
        self.touched[item_id] = _now()
        return self.items[item_id]

    async def mark_ready(self, item_id: int, embedded: Embedded) -> Item:
        item = await self.get_item(item_id)
        if item.state == DELETING:
            raise FailedPrecondition(f"audio item {item_id} is being deleted")
        return self._set(item_id, READY, duration_seconds=embedded.duration)

    async def mark_deleting(self, item_id: int, pending_before: datetime | None = None) -> bool:
        item = await self.get_item(item_id)
        if pending_before is not None and not (item.state == PENDING and self.touched[item_id] < pending_before):
            return False
        self._set(item_id, DELETING)
        return True

    async def get_item(self, item_id: int) -> Item:
        if item_id not in self.items:
            raise NotFound(f"audio item {item_id} not found")
        return self.items[item_id]

    async def update_item(
        self, item_id: int, name: str | None, add_tags: Sequence[str], remove_tags: Sequence[str]
    ) -> Item:
        item = await self.get_item(item_id)
        if item.state != READY:
            raise FailedPrecondition(f"audio item {item_id} is not ready")
        adding, removing = {t.strip().lower() for t in add_tags}, {t.strip().lower() for t in remove_tags}
        if "" in adding | removing or adding & removing or name == "":
            raise InvalidArgument("bad name or tags")
        kept = [t for t in item.user_tags if t not in removing]
        tags = kept + sorted(adding - set(kept))
        self.items[item_id] = dataclasses.replace(item, name=item.name if name is None else name, user_tags=tags)
        return self.items[item_id]

    async def get_ready_items(self, ids: Sequence[int]) -> list[Item]:
        return [self.items[i] for i in ids if i in self.items and self.items[i].ready]

    async def list_items(self, library: str, page_size: int, page_token: str, tag: str) -> tuple[list[Item], str]:
        return [i for i in self.items.values() if i.library == library and i.ready], ""

    async def find_item_ids(self, library: str, tags: Sequence[str]) -> list[int]:
        return [i.id for i in self.items.values() if i.library == library and set(tags) <= set(i.user_tags)]

    async def delete_item(self, item_id: int, only_if_state: str = "") -> bool:
        item = self.items.get(item_id)
        if item is None or (only_if_state and item.state != only_if_state):
            return False
        del self.items[item_id]
        return True

    async def stats(self) -> list[LibraryCounts]:
        return [
            LibraryCounts(
                name,
                sum(i.ready for i in self.items.values() if i.library == name),
                sum(i.state == PENDING for i in self.items.values() if i.library == name),
                sum(i.duration_seconds for i in self.items.values() if i.library == name and i.ready),
            )
            for name in self.libraries
        ]

    async def item_states(self, library: str) -> list[ItemState]:
        await self.get_library(library)
        return [
            ItemState(i.id, i.state, self.touched[i.id], i.source_uri, i.sha256)
            for i in sorted(self.items.values(), key=lambda i: i.id)
            if i.library == library
        ]

    async def mark_pending(self, item_id: int) -> None:
        item = await self.get_item(item_id)
        if item.state == DELETING:
            raise FailedPrecondition(f"audio item {item_id} is being deleted")
        self._set(item_id, PENDING)


class MemoryVectors:
    def __init__(self) -> None:
        self.collections: dict[str, dict[int, list[Window]]] = {}

    async def create(self, library: str, model: str, dim: int, sparse: bool) -> None:
        self.collections.setdefault(library, {})

    async def drop(self, library: str) -> None:
        self.collections.pop(library, None)

    def _collection(self, library: str) -> dict[int, list[Window]]:
        if library not in self.collections:
            raise NotFound(f"no vector collection for library {library}")
        return self.collections[library]

    async def upsert(self, library: str, model: str, dim: int, item_id: int, windows: Sequence[Window]) -> None:
        self._collection(library)[item_id] = list(windows)

    async def get(self, library: str, item_id: int, windows: Sequence[int] = ()) -> list[Window]:
        stored = self._collection(library).get(item_id, [])
        return [w for w in stored if not windows or w.index in windows]

    async def get_many(self, library: str, windows: dict[int, Sequence[int]]) -> dict[int, list[Window]]:
        return {i: await self.get(library, i, w) for i, w in windows.items()}

    async def search(
        self,
        library: str,
        model: str,
        dim: int,
        queries: Sequence[Any],
        top_k: int,
        item_ids: Sequence[int],
        exclude: Sequence[int],
        distinct_items: bool = True,
    ) -> list[list[Hit]]:
        stored = [
            (i, w)
            for i, ws in self._collection(library).items()
            for w in ws
            if (not item_ids or i in item_ids) and i not in exclude
        ]
        out = []
        for q in queries:
            scored = sorted(((float(np.dot(q, w.vector)), i, w) for i, w in stored), key=lambda s: -s[0])
            out.append([Hit(i, w.index, w.offset, s) for s, i, w in scored[:top_k]])
        return out

    async def delete(self, library: str, item_ids: Sequence[int]) -> None:
        for i in item_ids:
            self.collections.get(library, {}).pop(i, None)

    async def stats(self) -> list[CollectionStats]:
        return [CollectionStats(name, sum(map(len, c.values())), len(c)) for name, c in self.collections.items()]

    async def item_ids(self, library: str) -> set[int]:
        return set(self._collection(library))


class MemoryAudio:
    """Kept uploads."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, int], bytes] = {}

    async def put(self, library: str, item_id: int, data: bytes) -> None:
        self.files[(library, item_id)] = data

    async def read(self, library: str, item_id: int) -> bytes | None:
        return self.files.get((library, item_id))

    async def delete(self, library: str, item_id: int) -> None:
        self.files.pop((library, item_id), None)

    async def drop(self, library: str) -> None:
        for key in [k for k in self.files if k[0] == library]:
            del self.files[key]

    async def segment(self, library: str, item_id: int, duration: float, start: float, end: float) -> Any:
        raise NotImplementedError("playback is not part of the fast tier")


class FakeEmbedder:
    """Embeds bytes as one window per 4 bytes: deterministic, no model."""

    async def models(self) -> tuple[list[ModelStatus], str]:
        return [MODEL], MODEL.name

    async def embed(
        self, data: bytes, model: str, top_tags: int, window: float, hop: float, query: bool = False
    ) -> Embedded:
        values = np.frombuffer(data.ljust(-(-len(data) // 4) * 4, b"\0"), dtype=np.uint8).astype(np.float32)
        windows = [Window(k, float(k), values[4 * k : 4 * k + 4]) for k in range(len(values) // 4)]
        return Embedded(MODEL.name, MODEL.dim, 1.0, 1.0, 0.0, float(len(windows)), 8000, 1, "", windows, [])


class Crash(BaseException):
    """The process died here: nothing after this point ran (a BaseException,
    so no `except Exception` on the way up takes it for an error)."""


class Calls:
    """Numbers every call to a wrapped port; `crash_at` = (n, when) makes the
    n-th call crash before it takes effect or after it (the effect
    happened, the caller never heard)."""

    def __init__(self, crash_at: tuple[int, str] | None = None) -> None:
        self.count = 0
        self.names: list[str] = []
        self.crash_at = crash_at


class Crashing:
    """Wraps a port: every async method call goes through `calls`."""

    def __init__(self, port: Any, name: str, calls: Calls) -> None:
        self._port, self._name, self._calls = port, name, calls

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._port, attr)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            calls = self._calls
            calls.count += 1
            calls.names.append(f"{self._name}.{attr}")
            if calls.crash_at == (calls.count, "before"):
                raise Crash(f"before {self._name}.{attr}")
            result = await method(*args, **kwargs)
            if calls.crash_at == (calls.count, "after"):
                raise Crash(f"after {self._name}.{attr}")
            return result

        return call
