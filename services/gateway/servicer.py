"""The public gRPC surface: protobuf in, facade calls, protobuf out (the
mappings are in `convert`)."""

from __future__ import annotations

import contextlib

from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc

from services.common import uploads
from services.common.chunks import byte_messages
from services.gateway import convert
from services.gateway.facade import Gateway

# Smaller than an upload's chunks: the web front passes each message on
# to an audio element as it comes, so the first bytes play sooner.
SEGMENT_CHUNK_BYTES = 256 * 1024
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def CreateLibrary(self, request, context):  # type: ignore[no-untyped-def]
        lib = await self.gateway.create_library(
            request.name, request.model, request.description, request.window_seconds, request.hop_seconds
        )
        return pb.CreateLibraryResponse(library=convert.library_pb(lib))

    async def ListLibraries(self, request, context):  # type: ignore[no-untyped-def]
        libs = await self.gateway.list_libraries()
        return pb.ListLibrariesResponse(libraries=[convert.library_pb(lib) for lib in libs])

    async def DeleteLibrary(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DeleteLibraryResponse(deleted_items=await self.gateway.delete_library(request.name))

    async def InsertAudio(self, request_iterator, context):  # type: ignore[no-untyped-def]
        meta, data = await uploads.collect(request_iterator, "metadata", self.gateway.settings.max_upload_bytes)
        item, created = await self.gateway.insert(
            meta.library, data, meta.name, meta.source_uri, list(meta.tags), meta.idempotency_key
        )
        return pb.InsertAudioResponse(item=convert.item_pb(item), created=created)

    async def InsertAudioFromPath(self, request, context):  # type: ignore[no-untyped-def]
        item, created = await self.gateway.insert_path(
            request.library, request.path, request.name, list(request.tags), request.idempotency_key
        )
        return pb.InsertAudioFromPathResponse(item=convert.item_pb(item), created=created)

    async def SearchAudio(self, request_iterator, context):  # type: ignore[no-untyped-def]
        params, data = await uploads.collect(request_iterator, "params", self.gateway.settings.max_upload_bytes)
        ranking = await self.gateway.search(
            params.library, params.top_k, data, params.item_id, list(params.tags), params.min_score
        )
        return convert.search_response(ranking)

    async def Monitor(self, request_iterator, context):  # type: ignore[no-untyped-def]
        start, audio = await convert.monitor_request(request_iterator)
        events = self.gateway.monitor(start, audio)
        async with contextlib.aclosing(events):  # closed at once when the caller goes away
            async for event in events:
                yield convert.monitor_event(event)

    async def GetAudio(self, request, context):  # type: ignore[no-untyped-def]
        return pb.GetAudioResponse(item=convert.item_pb(await self.gateway.get(request.id)))

    async def GetAudioSegment(self, request, context):  # type: ignore[no-untyped-def]
        _, segment = await self.gateway.segment(request.id, request.start_seconds, request.end_seconds)
        for message in byte_messages(segment, segment.wav, convert.segment_message, size=SEGMENT_CHUNK_BYTES):
            yield message

    async def ListAudio(self, request, context):  # type: ignore[no-untyped-def]
        items, token = await self.gateway.list_items(
            request.library, request.page_size, request.page_token, request.tag
        )
        return pb.ListAudioResponse(items=[convert.item_pb(i) for i in items], next_page_token=token)

    async def DeleteAudio(self, request, context):  # type: ignore[no-untyped-def]
        await self.gateway.delete(request.id)
        return pb.DeleteAudioResponse()

    async def UpdateAudio(self, request, context):  # type: ignore[no-untyped-def]
        item = await self.gateway.update(*convert.item_update(request))
        return pb.UpdateAudioResponse(item=convert.item_pb(item))

    async def Stats(self, request, context):  # type: ignore[no-untyped-def]
        return convert.stats_response(await self.gateway.stats())

    async def Repair(self, request, context):  # type: ignore[no-untyped-def]
        actions = await self.gateway.repair(request.stale_after_seconds, request.dry_run)
        return convert.repair_response(actions, request.dry_run)

    async def ReindexLibrary(self, request, context):  # type: ignore[no-untyped-def]
        progress = self.gateway.reindex(request.library, request.model, request.window_seconds, request.hop_seconds)
        async with contextlib.aclosing(progress):  # closed at once when the caller goes away
            async for p in progress:
                yield convert.reindex_response(p)
