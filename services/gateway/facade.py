"""The gateway's use cases behind one object, the one the servicer calls:
each method hands its request to the module that holds that use case,
with the backends and the settings it needs."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

import numpy as np

from services.gateway import insert, items, libraries, repair, search, stats
from services.gateway import monitor as monitoring
from services.gateway.ports import Backends, Item, Library, Segment
from services.gateway.ranking import Ranking
from services.gateway.reindex import Reindex
from services.gateway.reindex_progress import Progress
from services.gateway.repair import Action
from services.gateway.server_paths import ServerPaths
from services.gateway.stats import Stats


@dataclasses.dataclass(frozen=True)
class Settings:
    max_upload_bytes: int
    max_top_k: int
    auto_tags: int
    allowed_roots: tuple[str, ...]
    repair_stale_seconds: float = 900.0


class Gateway:
    def __init__(self, backends: Backends, settings: Settings) -> None:
        self.backends, self.settings = backends, settings
        self.paths = ServerPaths(allowed_roots=settings.allowed_roots, max_bytes=settings.max_upload_bytes)

    # Libraries

    async def create_library(
        self, name: str, model: str = "", description: str = "", window: float = 0.0, hop: float = 0.0
    ) -> Library:
        return await libraries.create_library(self.backends, name, model, description, window, hop)

    async def list_libraries(self) -> list[Library]:
        return await libraries.list_libraries(self.backends)

    async def list_items(self, library: str, page_size: int, page_token: str, tag: str) -> tuple[list[Item], str]:
        return await libraries.list_items(self.backends, library, page_size, page_token, tag)

    async def delete_library(self, name: str) -> int:
        return await libraries.delete_library(self.backends, name)

    # Items

    async def insert(
        self,
        library: str,
        data: bytes,
        name: str,
        source_uri: str = "",
        tags: Sequence[str] = (),
        idempotency_key: str = "",
    ) -> tuple[Item, bool]:
        auto_tags = self.settings.auto_tags
        return await insert.insert(self.backends, auto_tags, library, data, name, source_uri, tags, idempotency_key)

    async def insert_path(
        self, library: str, path: str, name: str = "", tags: Sequence[str] = (), idempotency_key: str = ""
    ) -> tuple[Item, bool]:
        auto_tags = self.settings.auto_tags
        return await insert.insert_path(
            self.backends, self.paths, auto_tags, library, path, name, tags, idempotency_key
        )

    async def get(self, item_id: int) -> Item:
        return await items.get(self.backends, item_id)

    async def delete(self, item_id: int) -> None:
        await items.delete(self.backends, item_id)

    async def update(
        self, item_id: int, name: str | None = None, add_tags: Sequence[str] = (), remove_tags: Sequence[str] = ()
    ) -> Item:
        return await items.update(self.backends, item_id, name, add_tags, remove_tags)

    async def segment(self, item_id: int, start: float, end: float) -> tuple[Item, Segment]:
        return await items.segment(self.backends, item_id, start, end)

    # Search

    async def search(
        self,
        library: str,
        top_k: int,
        data: bytes = b"",
        item_id: int = 0,
        tags: Sequence[str] = (),
        min_score: float = 0.0,
    ) -> Ranking:
        max_top_k = self.settings.max_top_k
        return await search.search(self.backends, max_top_k, library, top_k, data, item_id, tags, min_score)

    def monitor(self, start: monitoring.Start, audio: AsyncIterator[np.ndarray]) -> AsyncIterator[monitoring.Event]:
        """Every occurrence of the library's items in a stream of mono
        samples, as events (services/gateway/monitor.py)."""
        return monitoring.monitor(self.backends, self.settings.max_top_k, start, audio)

    # Upkeep

    async def repair(self, stale_after: float = 0.0, dry_run: bool = False) -> list[Action]:
        stale_after = stale_after or self.settings.repair_stale_seconds
        return await repair.repair(self.backends, self.paths, stale_after, dry_run)

    def reindex(self, library: str, model: str, window: float = 0.0, hop: float = 0.0) -> AsyncIterator[Progress]:
        """Re-embeds a library with another model and switches it over, as
        a stream of progress (services/gateway/reindex.py)."""
        return Reindex(self.backends, self.paths, library, model, window, hop).run()

    async def stats(self) -> Stats:
        return await stats.stats(self.backends)
