"""The public gRPC surface: protobuf in, orchestrator calls, protobuf out."""

from __future__ import annotations

import contextlib

from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc

from services.common import uploads
from services.common.convert import timestamp
from services.gateway.domain import Item, Library
from services.gateway.orchestrator import Gateway
from services.gateway.reindex import OUTCOMES, Progress
from services.gateway.repair import KINDS

# Messages of a streamed segment: well under the 4 MB a default client accepts.
SEGMENT_CHUNK = 256 * 1024
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name


def library_pb(lib: Library) -> pb.Library:
    return pb.Library(
        name=lib.name,
        model=lib.model,
        dim=lib.dim,
        description=lib.description,
        create_time=timestamp(lib.created_at),
        window_seconds=lib.window,
        hop_seconds=lib.hop,
    )


def item_pb(item: Item) -> pb.AudioItem:
    return pb.AudioItem(
        id=item.id,
        library=item.library,
        name=item.name,
        source_uri=item.source_uri,
        sha256=item.sha256,
        duration_seconds=item.duration_seconds,
        sample_rate=item.sample_rate,
        channels=item.channels,
        user_tags=item.user_tags,
        auto_tags=[pb.Tag(label=label, score=score) for label, score in item.auto_tags],
        create_time=timestamp(item.created_at),
    )


def reindex_pb(p: Progress) -> pb.ReindexLibraryResponse:
    response = pb.ReindexLibraryResponse(
        total_items=p.total,
        reindexed_items=p.reindexed,
        skipped_items=p.skipped,
        failed_items=p.failed,
        elapsed_seconds=p.elapsed,
        outcome=REINDEX_OUTCOMES.get(p.outcome, pb.REINDEX_OUTCOME_UNSPECIFIED),
        previous_model=p.previous_model,
        detail=p.detail,
    )
    if p.failure is not None:
        f = p.failure
        response.failure.CopyFrom(pb.ReindexFailure(item_id=f.item_id, name=f.name, reason=f.reason))
    if p.library is not None:
        response.library.CopyFrom(library_pb(p.library))
    return response


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def CreateLibrary(self, request, context):  # type: ignore[no-untyped-def]
        lib = await self.gateway.create_library(
            request.name, request.model, request.description, request.window_seconds, request.hop_seconds
        )
        return pb.CreateLibraryResponse(library=library_pb(lib))

    async def ListLibraries(self, request, context):  # type: ignore[no-untyped-def]
        libs = await self.gateway.list_libraries()
        return pb.ListLibrariesResponse(libraries=[library_pb(lib) for lib in libs])

    async def DeleteLibrary(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DeleteLibraryResponse(deleted_items=await self.gateway.delete_library(request.name))

    async def InsertAudio(self, request_iterator, context):  # type: ignore[no-untyped-def]
        meta, data = await uploads.collect(request_iterator, "metadata", self.gateway.settings.max_upload_bytes)
        item, created = await self.gateway.insert(
            meta.library, data, meta.name, meta.source_uri, list(meta.tags), meta.idempotency_key
        )
        return pb.InsertAudioResponse(item=item_pb(item), created=created)

    async def InsertAudioFromPath(self, request, context):  # type: ignore[no-untyped-def]
        item, created = await self.gateway.insert_path(
            request.library, request.path, request.name, list(request.tags), request.idempotency_key
        )
        return pb.InsertAudioFromPathResponse(item=item_pb(item), created=created)

    async def SearchAudio(self, request_iterator, context):  # type: ignore[no-untyped-def]
        params, data = await uploads.collect(request_iterator, "params", self.gateway.settings.max_upload_bytes)
        ranking = await self.gateway.search(
            params.library, params.top_k, data, params.item_id, list(params.tags), params.min_score
        )
        return pb.SearchAudioResponse(
            results=[
                pb.SearchResult(
                    item=item_pb(r.item),
                    score=r.score,
                    item_range=pb.TimeRange(start_seconds=r.item_start, end_seconds=r.item_end),
                    query_range=pb.TimeRange(start_seconds=r.query_start, end_seconds=r.query_end),
                    evidence=r.evidence,
                    speed=r.speed,
                    pitch=r.pitch,
                )
                for r in ranking.results
            ],
            model=ranking.model,
            min_evidence=ranking.min_evidence,
            min_score=ranking.min_score,
        )

    async def GetAudio(self, request, context):  # type: ignore[no-untyped-def]
        return pb.GetAudioResponse(item=item_pb(await self.gateway.get(request.id)))

    async def GetAudioSegment(self, request, context):  # type: ignore[no-untyped-def]
        _, segment = await self.gateway.segment(request.id, request.start_seconds, request.end_seconds)
        for start in range(0, max(1, len(segment.wav)), SEGMENT_CHUNK):
            chunk = segment.wav[start : start + SEGMENT_CHUNK]
            if start == 0:
                yield pb.GetAudioSegmentResponse(
                    chunk=chunk,
                    content_type="audio/wav",
                    start_seconds=segment.start,
                    end_seconds=segment.end,
                    total_bytes=len(segment.wav),
                )
            else:
                yield pb.GetAudioSegmentResponse(chunk=chunk)

    async def ListAudio(self, request, context):  # type: ignore[no-untyped-def]
        items, token = await self.gateway.list_items(
            request.library, request.page_size, request.page_token, request.tag
        )
        return pb.ListAudioResponse(items=[item_pb(i) for i in items], next_page_token=token)

    async def DeleteAudio(self, request, context):  # type: ignore[no-untyped-def]
        await self.gateway.delete(request.id)
        return pb.DeleteAudioResponse()

    async def Stats(self, request, context):  # type: ignore[no-untyped-def]
        stats = await self.gateway.stats()
        return pb.StatsResponse(
            libraries=[
                pb.LibraryStats(
                    name=s.library.name,
                    model=s.library.model,
                    items=s.ready,
                    pending_items=s.pending,
                    total_duration_seconds=s.duration_seconds,
                    indexed_items=s.indexed_items,
                    vectors=s.vectors,
                )
                for s in stats.libraries
            ],
            models=[
                pb.ModelStatus(
                    name=m.name, version=m.version, dim=m.dim, available=m.available, unavailable_reason=m.reason
                )
                for m in stats.models
            ],
            default_model=stats.default_model,
        )

    async def Repair(self, request, context):  # type: ignore[no-untyped-def]
        actions = await self.gateway.repair(request.stale_after_seconds, request.dry_run)
        return pb.RepairResponse(
            actions=[
                pb.RepairAction(kind=REPAIR_KINDS[a.kind], library=a.library, item_id=a.item_id, detail=a.detail)
                for a in actions
            ],
            dry_run=request.dry_run,
        )

    async def ReindexLibrary(self, request, context):  # type: ignore[no-untyped-def]
        progress = self.gateway.reindex(request.library, request.model, request.window_seconds, request.hop_seconds)
        async with contextlib.aclosing(progress):  # closed at once when the caller goes away
            async for p in progress:
                yield reindex_pb(p)


REPAIR_KINDS = {kind: pb.RepairKind.Value("REPAIR_KIND_" + kind.upper()) for kind in KINDS}
REINDEX_OUTCOMES = {kind: pb.ReindexOutcome.Value("REINDEX_OUTCOME_" + kind.upper()) for kind in OUTCOMES}
