"""The gateway's orchestration with no network in between: adapters that
implement the gateway's ports by calling the embedder, vector store and
catalog domain code directly, in this process. This is the baseline the
pipeline benchmark compares the deployed services against: the same code
(decode -> embed -> Milvus insert -> SQL insert, and the same search path)
minus gRPC, protobuf and the process hops.

Only the operations that insert and search use are adapted; the gateway
reaches no other port method on those paths."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from services.catalog.database import make_engine, migrate
from services.catalog.records import ItemRecord, LibraryRecord, NewItem
from services.catalog.repository import Catalog
from services.common.vectors import Vector
from services.embedder.config import EmbedderConfig
from services.embedder.embedding import Embedder
from services.embedder.registry import Registry, build_models
from services.gateway.audio_store import AudioStore
from services.gateway.facade import Gateway, Settings
from services.gateway.ports import Backends, Embedded, Hit, Item, Library, ModelStatus, Window
from services.search.contract import WindowVector
from services.search.milvus import MilvusStore


class LocalEmbedder:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    async def models(self) -> tuple[list[ModelStatus], str]:
        statuses = [
            ModelStatus(
                name=s.info.name,
                version=s.info.version,
                dim=s.info.dim,
                available=s.available,
                reason=s.reason,
                loading=s.loading,
                window=s.info.window_seconds,
                hop=s.info.hop_seconds,
                min_evidence=s.info.min_evidence,
                sparse=s.info.sparse,
            )
            for s in self.embedder.models()
        ]
        return statuses, self.embedder.registry.default_name

    async def embed(
        self, data: bytes, model: str, top_tags: int, window: float, hop: float, query: bool = False
    ) -> Embedded:
        r = await self.embedder.embed(data, model, top_tags, window, hop, query)
        return Embedded(
            model=r.model.name,
            dim=r.model.dim,
            window=r.window,
            hop=r.hop,
            min_evidence=r.model.min_evidence,
            duration=r.duration,
            sample_rate=r.sample_rate,
            channels=r.channels,
            sha256=r.sha256,
            windows=[Window(index=w.index, offset=w.offset, vector=w.vector) for w in r.windows],
            tags=r.tags,
        )


class LocalVectors:
    def __init__(self, store: MilvusStore) -> None:
        self.store = store

    async def create(self, library: str, model: str, dim: int, sparse: bool) -> None:
        await asyncio.to_thread(self.store.create, library, model, dim, sparse)

    async def drop(self, library: str) -> None:
        await asyncio.to_thread(self.store.drop, library)

    async def upsert(self, library: str, model: str, dim: int, item_id: int, windows: Sequence[Window]) -> None:
        rows = [WindowVector(item_id=item_id, window=w.index, offset=w.offset, vector=w.vector) for w in windows]
        await asyncio.to_thread(self.store.upsert, library, model, dim, rows)

    async def search(
        self,
        library: str,
        model: str,
        dim: int,
        queries: Sequence[Vector],
        top_k: int,
        item_ids: Sequence[int],
        exclude: Sequence[int],
        distinct_items: bool = True,
    ) -> list[list[Hit]]:
        from services.gateway.clients import HITS_PER_ITEM  # the same grouping the gateway asks for

        grouping = HITS_PER_ITEM if distinct_items else 0
        results = await asyncio.to_thread(
            self.store.search, library, model, dim, queries, top_k, item_ids, exclude, grouping
        )
        return [
            [Hit(item_id=h.item_id, window=h.window, offset=h.offset, score=h.score) for h in hits] for hits in results
        ]

    async def delete(self, library: str, item_ids: Sequence[int]) -> None:
        await asyncio.to_thread(self.store.delete, library, list(item_ids))


def _library(lib: LibraryRecord) -> Library:
    return Library(
        name=lib.name,
        model=lib.model_name,
        dim=lib.model_dim,
        description=lib.description,
        created_at=lib.created_at,
        window=lib.window_seconds,
        hop=lib.hop_seconds,
    )


def _item(item: ItemRecord) -> Item:
    return Item(
        id=item.id,
        library=item.library,
        name=item.name,
        source_uri=item.source_uri,
        sha256=item.sha256,
        duration_seconds=item.duration_seconds,
        sample_rate=item.sample_rate,
        channels=item.channels,
        user_tags=list(item.user_tags),
        auto_tags=list(item.auto_tags),
        created_at=item.created_at,
        state=item.state,
    )


class LocalCatalog:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def create_library(
        self, name: str, model: str, dim: int, description: str, window: float, hop: float
    ) -> Library:
        return _library(
            await asyncio.to_thread(self.catalog.create_library, name, model, dim, description, window, hop)
        )

    async def get_library(self, name: str) -> Library:
        return _library(await asyncio.to_thread(self.catalog.get_library, name))

    async def delete_library(self, name: str) -> int:
        return await asyncio.to_thread(self.catalog.delete_library, name)

    async def reserve_item(
        self, library: str, sha256: str, name: str, source_uri: str, tags: Sequence[str], idempotency_key: str = ""
    ) -> tuple[Item, bool]:
        new = NewItem(library, sha256, name, source_uri, list(tags), idempotency_key)
        item, created = await asyncio.to_thread(self.catalog.reserve_item, new)
        return _item(item), created

    async def mark_ready(self, item_id: int, embedded: Embedded) -> Item:
        record = await asyncio.to_thread(
            self.catalog.mark_ready,
            item_id,
            embedded.tags,
            embedded.duration,
            embedded.sample_rate,
            embedded.channels,
        )
        return _item(record)

    async def get_ready_items(self, ids: Sequence[int]) -> list[Item]:
        return [_item(i) for i in await asyncio.to_thread(self.catalog.get_items, list(ids), "ready")]

    async def find_item_ids(self, library: str, tags: Sequence[str]) -> list[int]:
        return await asyncio.to_thread(self.catalog.find_item_ids, library, list(tags))

    async def delete_item(self, item_id: int, only_if_state: str = "") -> bool:
        return await asyncio.to_thread(self.catalog.delete_item, item_id, only_if_state)


@dataclasses.dataclass
class LocalStack:
    """The three services' domain objects over one data dir, and a Gateway
    wired to them in-process."""

    embedder: Embedder
    store: MilvusStore
    catalog: Catalog
    gateway: Gateway

    async def close(self) -> None:
        await self.embedder.close()
        self.store.close()
        self.catalog.engine.dispose()


async def open_local(data_dir: Path, embedder_config: EmbedderConfig, auto_tags: int = 5) -> LocalStack:
    """The same defaults as `audiosearch serve` (Milvus Lite and SQLite files
    in `data_dir`), with the gateway's default settings."""
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{(data_dir / 'catalog.db').resolve()}")
    migrate(engine)
    catalog = Catalog(engine)
    store = MilvusStore(str((data_dir / "milvus.db").resolve()))
    registry = Registry(build_models(embedder_config), embedder_config.default_model)
    await registry.load_all()
    embedder = Embedder(registry, embedder_config)
    settings = Settings(
        max_upload_bytes=embedder_config.max_upload_bytes, max_top_k=100, auto_tags=auto_tags, allowed_roots=()
    )
    backends = Backends(
        embedder=LocalEmbedder(embedder),
        vectors=LocalVectors(store),  # type: ignore[arg-type]
        catalog=LocalCatalog(catalog),  # type: ignore[arg-type]
        audio=AudioStore(None),  # uploads are not kept, as before
    )
    gateway = Gateway(backends, settings)
    return LocalStack(embedder, store, catalog, gateway)
