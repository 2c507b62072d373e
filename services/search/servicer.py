"""gRPC surface of the search service over the store contract. Store calls
are blocking, so each runs on a worker thread."""

from __future__ import annotations

import asyncio

from audiosearch.search.v1 import search_pb2 as pb
from audiosearch.search.v1 import search_pb2_grpc as pb_grpc

from services.common import reasons
from services.common.convert import vector_fields, vector_from_message
from services.common.errors import InvalidArgument
from services.search.contract import Store, WindowVector

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SearchService"].full_name


def _library(name: str) -> str:
    if not name:
        raise InvalidArgument("library must be set", reason=reasons.MISSING_FIELD, field="library")
    return name


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, store: Store, max_top_k: int) -> None:
        self.store, self.max_top_k = store, max_top_k

    async def CreateCollection(self, request, context):  # type: ignore[no-untyped-def]
        created = await asyncio.to_thread(
            self.store.create, _library(request.library), request.model.name, request.model.dim, request.model.sparse
        )
        return pb.CreateCollectionResponse(created=created)

    async def DropCollection(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DropCollectionResponse(dropped=await asyncio.to_thread(self.store.drop, _library(request.library)))

    async def UpsertVectors(self, request, context):  # type: ignore[no-untyped-def]
        vectors = [
            WindowVector(v.item_id, v.window_index, v.offset_seconds, vector_from_message(v)) for v in request.vectors
        ]
        n = await asyncio.to_thread(
            self.store.upsert, _library(request.library), request.model.name, request.model.dim, vectors
        )
        return pb.UpsertVectorsResponse(upserted=n)

    async def GetVectors(self, request, context):  # type: ignore[no-untyped-def]
        vectors = await asyncio.to_thread(
            self.store.get, _library(request.library), request.item_id, list(request.windows)
        )
        return pb.GetVectorsResponse(vectors=[_window_message(v) for v in vectors])

    async def BatchGetVectors(self, request, context):  # type: ignore[no-untyped-def]
        wanted = [(i.item_id, list(i.windows)) for i in request.items]
        if any(not windows for _, windows in wanted):
            raise InvalidArgument("every item in BatchGetVectors needs at least one window index")
        vectors = await asyncio.to_thread(self.store.get_many, _library(request.library), wanted)
        return pb.BatchGetVectorsResponse(vectors=[_window_message(v) for v in vectors])

    async def Search(self, request, context):  # type: ignore[no-untyped-def]
        if not 1 <= request.top_k <= self.max_top_k:
            raise InvalidArgument(
                f"top_k must be between 1 and {self.max_top_k}, got {request.top_k}",
                reason=reasons.TOP_K_OUT_OF_RANGE,
                field="top_k",
            )
        if request.hits_per_item not in (0, 1):
            # Milvus Lite 3.2.2 returns only the first group for group sizes above 1.
            raise InvalidArgument(f"hits_per_item must be 0 or 1, got {request.hits_per_item}")
        queries = [vector_from_message(q) for q in request.queries]
        results = await asyncio.to_thread(
            self.store.search,
            _library(request.library),
            request.model.name,
            request.model.dim,
            queries,
            request.top_k,
            list(request.item_ids),
            list(request.exclude_item_ids),
            request.hits_per_item,
        )
        return pb.SearchResponse(
            results=[
                pb.QueryHits(
                    hits=[
                        pb.Hit(item_id=h.item_id, window_index=h.window, offset_seconds=h.offset, score=h.score)
                        for h in hits
                    ]
                )
                for hits in results
            ]
        )

    async def DeleteVectors(self, request, context):  # type: ignore[no-untyped-def]
        n = await asyncio.to_thread(self.store.delete, _library(request.library), list(request.item_ids))
        return pb.DeleteVectorsResponse(deleted=n)

    async def CollectionStats(self, request, context):  # type: ignore[no-untyped-def]
        stats = await asyncio.to_thread(self.store.stats, request.library)
        return pb.CollectionStatsResponse(
            collections=[
                pb.CollectionStats(
                    library=s.library, model=pb.ModelBinding(name=s.model, dim=s.dim), vectors=s.vectors, items=s.items
                )
                for s in stats
            ]
        )

    async def ListItemIds(self, request, context):  # type: ignore[no-untyped-def]
        ids = await asyncio.to_thread(self.store.item_ids, _library(request.library))
        return pb.ListItemIdsResponse(item_ids=ids)


def _window_message(v: WindowVector) -> pb.WindowVector:
    return pb.WindowVector(
        item_id=v.item_id, window_index=v.window, offset_seconds=v.offset, **vector_fields(v.vector, pb.SparseVector)
    )
