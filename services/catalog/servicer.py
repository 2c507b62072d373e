"""gRPC surface of the catalog. SQL calls block, so each runs on a worker thread."""

from __future__ import annotations

import asyncio
from datetime import datetime

from audiosearch.catalog.v1 import catalog_pb2 as pb
from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.catalog.repository import Catalog, ItemRecord, LibraryRecord, ModelChange, NewItem
from services.catalog.tables import DELETING, PENDING, READY
from services.common.convert import timestamp
from services.common.errors import InvalidArgument

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CatalogService"].full_name
STATES = {PENDING: pb.ITEM_STATE_PENDING, READY: pb.ITEM_STATE_READY, DELETING: pb.ITEM_STATE_DELETING}
STATE_NAMES = {v: k for k, v in STATES.items()}


def library_pb(lib: LibraryRecord) -> pb.Library:
    return pb.Library(
        id=lib.id,
        name=lib.name,
        model_name=lib.model_name,
        model_dim=lib.model_dim,
        description=lib.description,
        create_time=timestamp(lib.created_at),
        window_seconds=lib.window_seconds,
        hop_seconds=lib.hop_seconds,
    )


def item_pb(item: ItemRecord) -> pb.Item:
    return pb.Item(
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
        state=STATES[item.state],
    )


def change_pb(change: ModelChange) -> pb.ModelChange:
    return pb.ModelChange(
        model_name=change.model_name,
        model_dim=change.model_dim,
        window_seconds=change.window_seconds,
        hop_seconds=change.hop_seconds,
    )


def _datetime(value: Timestamp) -> datetime:
    try:
        return value.ToDatetime()
    except ValueError as exc:  # outside years 1-9999
        raise InvalidArgument(f"only_if_pending_before: {exc}") from None


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.to_thread(fn, *args)

    async def CreateLibrary(self, request, context):  # type: ignore[no-untyped-def]
        lib = await self._run(
            self.catalog.create_library,
            request.name,
            request.model_name,
            request.model_dim,
            request.description,
            request.window_seconds,
            request.hop_seconds,
        )
        return pb.CreateLibraryResponse(library=library_pb(lib))

    async def GetLibrary(self, request, context):  # type: ignore[no-untyped-def]
        return pb.GetLibraryResponse(library=library_pb(await self._run(self.catalog.get_library, request.name)))

    async def ListLibraries(self, request, context):  # type: ignore[no-untyped-def]
        libs = await self._run(self.catalog.list_libraries)
        return pb.ListLibrariesResponse(libraries=[library_pb(lib) for lib in libs])

    async def DeleteLibrary(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DeleteLibraryResponse(deleted_items=await self._run(self.catalog.delete_library, request.name))

    async def ReserveItem(self, request, context):  # type: ignore[no-untyped-def]
        new = NewItem(
            library=request.library,
            sha256=request.sha256,
            name=request.name,
            source_uri=request.source_uri,
            user_tags=list(request.user_tags),
            idempotency_key=request.idempotency_key,
        )
        item, created = await self._run(self.catalog.reserve_item, new)
        return pb.ReserveItemResponse(item=item_pb(item), created=created)

    async def MarkItemReady(self, request, context):  # type: ignore[no-untyped-def]
        tags = [(t.label, t.score) for t in request.auto_tags]
        item = await self._run(
            self.catalog.mark_ready, request.id, tags, request.duration_seconds, request.sample_rate, request.channels
        )
        return pb.MarkItemReadyResponse(item=item_pb(item))

    async def MarkItemDeleting(self, request, context):  # type: ignore[no-untyped-def]
        before = _datetime(request.only_if_pending_before) if request.HasField("only_if_pending_before") else None
        item = await self._run(self.catalog.mark_deleting, request.id, before)
        if item is None:
            return pb.MarkItemDeletingResponse(marked=False)
        return pb.MarkItemDeletingResponse(item=item_pb(item), marked=True)

    async def GetItem(self, request, context):  # type: ignore[no-untyped-def]
        return pb.GetItemResponse(item=item_pb(await self._run(self.catalog.get_item, request.id)))

    async def BatchGetItems(self, request, context):  # type: ignore[no-untyped-def]
        items = await self._run(self.catalog.get_items, list(request.ids), STATE_NAMES.get(request.state, ""))
        return pb.BatchGetItemsResponse(items=[item_pb(i) for i in items])

    async def ListItems(self, request, context):  # type: ignore[no-untyped-def]
        items, token = await self._run(
            self.catalog.list_items, request.library, request.page_size, request.page_token, request.tag
        )
        return pb.ListItemsResponse(items=[item_pb(i) for i in items], next_page_token=token)

    async def FindItemIds(self, request, context):  # type: ignore[no-untyped-def]
        return pb.FindItemIdsResponse(
            ids=await self._run(self.catalog.find_item_ids, request.library, list(request.tags))
        )

    async def DeleteItem(self, request, context):  # type: ignore[no-untyped-def]
        deleted = await self._run(self.catalog.delete_item, request.id, STATE_NAMES.get(request.only_if_state, ""))
        return pb.DeleteItemResponse(deleted=deleted)

    async def CatalogStats(self, request, context):  # type: ignore[no-untyped-def]
        counts = await self._run(self.catalog.stats)
        return pb.CatalogStatsResponse(
            libraries=[
                pb.LibraryCounts(
                    library=c.library,
                    ready_items=c.ready,
                    pending_items=c.pending,
                    total_duration_seconds=c.duration_seconds,
                )
                for c in counts
            ]
        )

    async def ListItemStates(self, request, context):  # type: ignore[no-untyped-def]
        states = await self._run(self.catalog.item_states, request.library)
        return pb.ListItemStatesResponse(
            items=[
                pb.ItemStateEntry(
                    id=s.id,
                    state=STATES[s.state],
                    update_time=timestamp(s.updated_at),
                    source_uri=s.source_uri,
                    sha256=s.sha256,
                )
                for s in states
            ]
        )

    async def MarkItemPending(self, request, context):  # type: ignore[no-untyped-def]
        return pb.MarkItemPendingResponse(item=item_pb(await self._run(self.catalog.mark_pending, request.id)))

    async def StartModelChange(self, request, context):  # type: ignore[no-untyped-def]
        c = request.change
        change = ModelChange(c.model_name, c.model_dim, c.window_seconds, c.hop_seconds)
        resumed, replaced = await self._run(self.catalog.start_model_change, request.name, change)
        response = pb.StartModelChangeResponse(resumed=resumed)
        if replaced is not None:
            response.replaced.CopyFrom(change_pb(replaced))
        return response

    async def FinishModelChange(self, request, context):  # type: ignore[no-untyped-def]
        lib = await self._run(self.catalog.finish_model_change, request.name, request.model_name)
        return pb.FinishModelChangeResponse(library=library_pb(lib))

    async def CancelModelChange(self, request, context):  # type: ignore[no-untyped-def]
        cancelled = await self._run(self.catalog.cancel_model_change, request.name)
        return pb.CancelModelChangeResponse(cancelled=change_pb(cancelled) if cancelled is not None else None)
