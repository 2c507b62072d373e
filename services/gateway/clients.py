"""Adapters that implement the gateway's ports over gRPC (messages mapped
by `convert`), with deadlines and error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import grpc
from audiosearch.catalog.v1 import catalog_pb2 as cat
from audiosearch.catalog.v1 import catalog_pb2_grpc as cat_grpc
from audiosearch.embedder.v1 import embedder_pb2 as emb
from audiosearch.embedder.v1 import embedder_pb2_grpc as emb_grpc
from audiosearch.search.v1 import search_pb2 as srch
from audiosearch.search.v1 import search_pb2_grpc as srch_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import deadlines
from services.common.chunks import async_byte_messages
from services.common.status import call
from services.common.vectors import Vector
from services.gateway import convert
from services.gateway.ports import (
    CollectionStats,
    Embedded,
    Hit,
    Item,
    ItemState,
    Library,
    LibraryCounts,
    ModelChange,
    ModelStatus,
    Window,
)

# Best windows per item and query window. More would help voting with
# items that repeat themselves, but Milvus Lite 3.2.2 returns only the
# first group when a group holds more than one hit.
HITS_PER_ITEM = 1


class _Client:
    service = ""

    def __init__(self, stub: Any, timeout: float) -> None:
        self.stub, self.timeout = stub, timeout

    async def _call(self, method: str, request: Any) -> Any:
        return await call(self.service, getattr(self.stub, method)(request, timeout=deadlines.timeout(self.timeout)))


class EmbedderClient(_Client):
    service = "embedder"

    def __init__(self, channel: Any, timeout: float) -> None:
        super().__init__(emb_grpc.EmbedderServiceStub(channel), timeout)

    async def models(self) -> tuple[list[ModelStatus], str]:
        response = await self._call("ListModels", emb.ListModelsRequest())
        return [convert.model_status(m) for m in response.models], response.default_model

    async def embed(
        self,
        data: bytes,
        model: str,
        top_tags: int,
        window: float,
        hop: float,
        query: bool = False,
        single_framing: bool = False,
    ) -> Embedded:
        options = emb.EmbedOptions(
            model=model,
            top_tags=top_tags,
            window_seconds=window,
            hop_seconds=hop,
            query=query,
            single_framing=single_framing,
        )
        stream = async_byte_messages(options, data, lambda o, c: emb.EmbedRequest(options=o, chunk=c))
        return convert.embedded(await self._call("Embed", stream))


class VectorClient(_Client):
    service = "search"

    def __init__(self, channel: Any, timeout: float) -> None:
        super().__init__(srch_grpc.SearchServiceStub(channel), timeout)

    async def create(self, library: str, model: str, dim: int, sparse: bool) -> None:
        binding = srch.ModelBinding(name=model, dim=dim, sparse=sparse)
        await self._call("CreateCollection", srch.CreateCollectionRequest(library=library, model=binding))

    async def drop(self, library: str) -> None:
        await self._call("DropCollection", srch.DropCollectionRequest(library=library))

    async def upsert(self, library: str, model: str, dim: int, item_id: int, windows: Sequence[Window]) -> None:
        vectors = [convert.window_vector(item_id, w) for w in windows]
        binding = srch.ModelBinding(name=model, dim=dim)
        await self._call("UpsertVectors", srch.UpsertVectorsRequest(library=library, model=binding, vectors=vectors))

    async def get(self, library: str, item_id: int, windows: Sequence[int] = ()) -> list[Window]:
        r = await self._call("GetVectors", srch.GetVectorsRequest(library=library, item_id=item_id, windows=windows))
        return [convert.stored_window(v) for v in r.vectors]

    async def get_many(self, library: str, windows: dict[int, Sequence[int]]) -> dict[int, list[Window]]:
        items = [srch.ItemWindows(item_id=i, windows=w) for i, w in windows.items() if w]
        r = await self._call("BatchGetVectors", srch.BatchGetVectorsRequest(library=library, items=items))
        out: dict[int, list[Window]] = {i: [] for i in windows}
        for v in r.vectors:
            out[v.item_id].append(convert.stored_window(v))
        return out

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
        request = srch.SearchRequest(
            library=library,
            model=srch.ModelBinding(name=model, dim=dim),
            queries=[convert.query_vector(q) for q in queries],
            top_k=top_k,
            item_ids=item_ids,
            exclude_item_ids=exclude,
            hits_per_item=HITS_PER_ITEM if distinct_items else 0,
        )
        r = await self._call("Search", request)
        return [[convert.hit(h) for h in q.hits] for q in r.results]

    async def delete(self, library: str, item_ids: Sequence[int]) -> None:
        await self._call("DeleteVectors", srch.DeleteVectorsRequest(library=library, item_ids=item_ids))

    async def stats(self) -> list[CollectionStats]:
        r = await self._call("CollectionStats", srch.CollectionStatsRequest())
        return [convert.collection_stats(c) for c in r.collections]

    async def item_ids(self, library: str) -> set[int]:
        return set((await self._call("ListItemIds", srch.ListItemIdsRequest(library=library))).item_ids)


class CatalogClient(_Client):
    service = "catalog"

    def __init__(self, channel: Any, timeout: float) -> None:
        super().__init__(cat_grpc.CatalogServiceStub(channel), timeout)

    async def create_library(
        self, name: str, model: str, dim: int, description: str, window: float, hop: float
    ) -> Library:
        request = cat.CreateLibraryRequest(
            name=name, model_name=model, model_dim=dim, description=description, window_seconds=window, hop_seconds=hop
        )
        return convert.library((await self._call("CreateLibrary", request)).library)

    async def get_library(self, name: str) -> Library:
        return convert.library((await self._call("GetLibrary", cat.GetLibraryRequest(name=name))).library)

    async def list_libraries(self) -> list[Library]:
        r = await self._call("ListLibraries", cat.ListLibrariesRequest())
        return [convert.library(lib) for lib in r.libraries]

    async def delete_library(self, name: str) -> int:
        return (await self._call("DeleteLibrary", cat.DeleteLibraryRequest(name=name))).deleted_items

    async def reserve_item(
        self, library: str, sha256: str, name: str, source_uri: str, tags: Sequence[str], idempotency_key: str = ""
    ) -> tuple[Item, bool]:
        request = cat.ReserveItemRequest(
            library=library,
            sha256=sha256,
            name=name,
            source_uri=source_uri,
            user_tags=tags,
            idempotency_key=idempotency_key,
        )
        r = await self._call("ReserveItem", request)
        return convert.item(r.item), r.created

    async def mark_ready(self, item_id: int, embedded: Embedded) -> Item:
        return convert.item((await self._call("MarkItemReady", convert.ready_request(item_id, embedded))).item)

    async def mark_deleting(self, item_id: int, pending_before: datetime | None = None) -> bool:
        request = cat.MarkItemDeletingRequest(id=item_id)
        if pending_before is not None:
            request.only_if_pending_before.FromDatetime(pending_before)
        return (await self._call("MarkItemDeleting", request)).marked

    async def get_item(self, item_id: int) -> Item:
        return convert.item((await self._call("GetItem", cat.GetItemRequest(id=item_id))).item)

    async def update_item(
        self, item_id: int, name: str | None, add_tags: Sequence[str], remove_tags: Sequence[str]
    ) -> Item:
        request = cat.UpdateItemRequest(id=item_id, name=name, add_tags=add_tags, remove_tags=remove_tags)
        return convert.item((await self._call("UpdateItem", request)).item)

    async def get_ready_items(self, ids: Sequence[int]) -> list[Item]:
        r = await self._call("BatchGetItems", cat.BatchGetItemsRequest(ids=ids, state=cat.ITEM_STATE_READY))
        return [convert.item(i) for i in r.items]

    async def list_items(self, library: str, page_size: int, page_token: str, tag: str) -> tuple[list[Item], str]:
        request = cat.ListItemsRequest(library=library, page_size=page_size, page_token=page_token, tag=tag)
        r = await self._call("ListItems", request)
        return [convert.item(i) for i in r.items], r.next_page_token

    async def find_item_ids(self, library: str, tags: Sequence[str]) -> list[int]:
        return list((await self._call("FindItemIds", cat.FindItemIdsRequest(library=library, tags=tags))).ids)

    async def delete_item(self, item_id: int, only_if_state: str = "") -> bool:
        request = cat.DeleteItemRequest(id=item_id, only_if_state=convert.STATE_CODES.get(only_if_state, 0))
        return (await self._call("DeleteItem", request)).deleted

    async def stats(self) -> list[LibraryCounts]:
        r = await self._call("CatalogStats", cat.CatalogStatsRequest())
        return [convert.library_counts(c) for c in r.libraries]

    async def item_states(self, library: str) -> list[ItemState]:
        r = await self._call("ListItemStates", cat.ListItemStatesRequest(library=library))
        return [convert.item_state(i) for i in r.items]

    async def mark_pending(self, item_id: int) -> None:
        await self._call("MarkItemPending", cat.MarkItemPendingRequest(id=item_id))

    async def start_model_change(self, name: str, change: ModelChange) -> tuple[bool, ModelChange | None]:
        message = convert.model_change_pb(change)
        r = await self._call("StartModelChange", cat.StartModelChangeRequest(name=name, change=message))
        return r.resumed, convert.model_change(r.replaced) if r.HasField("replaced") else None

    async def finish_model_change(self, name: str, model: str) -> Library:
        r = await self._call("FinishModelChange", cat.FinishModelChangeRequest(name=name, model_name=model))
        return convert.library(r.library)

    async def cancel_model_change(self, name: str) -> ModelChange | None:
        r = await self._call("CancelModelChange", cat.CancelModelChangeRequest(name=name))
        return convert.model_change(r.cancelled) if r.HasField("cancelled") else None


async def comebacks(channel: grpc.aio.Channel, retry_seconds: float = 1.0) -> AsyncIterator[None]:
    """Yields each time the service behind `channel` is SERVING again after
    it was away: its health said NOT_SERVING, or it could not be reached.
    A stream that merely ends (the server rotating a connection, see
    `max_connection_age`) and is answered SERVING at once is not a comeback.
    Never ends; follows the health stream, so it costs no polling."""
    stub = health_pb2_grpc.HealthStub(channel)
    away = False
    while True:
        answered = False
        call = stub.Watch(health_pb2.HealthCheckRequest())
        try:
            async for response in call:
                answered = True
                if response.status != health_pb2.HealthCheckResponse.SERVING:
                    # Draining or starting: let go of the stream (an open one
                    # would hold a draining server for its whole grace period)
                    # and watch again shortly.
                    away = True
                    break
                if away:
                    away = False
                    yield
        except grpc.aio.AioRpcError:
            if not answered:
                away = True  # refused or timed out: down, or not up yet
        finally:
            call.cancel()
        if away or not answered:
            await asyncio.sleep(retry_seconds)
