"""gRPC surface of the catalog: converts (services/catalog/convert.py), calls
the repository and converts back. SQL calls block, so each runs on a worker
thread."""

from __future__ import annotations

import asyncio

from audiosearch.catalog.v1 import catalog_pb2 as pb
from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc

from services.catalog import convert
from services.catalog.repository import Catalog

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CatalogService"].full_name


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
        return pb.CreateLibraryResponse(library=convert.library_pb(lib))

    async def GetLibrary(self, request, context):  # type: ignore[no-untyped-def]
        lib = await self._run(self.catalog.get_library, request.name)
        return pb.GetLibraryResponse(library=convert.library_pb(lib))

    async def ListLibraries(self, request, context):  # type: ignore[no-untyped-def]
        libs = await self._run(self.catalog.list_libraries)
        return pb.ListLibrariesResponse(libraries=[convert.library_pb(lib) for lib in libs])

    async def DeleteLibrary(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DeleteLibraryResponse(deleted_items=await self._run(self.catalog.delete_library, request.name))

    async def ReserveItem(self, request, context):  # type: ignore[no-untyped-def]
        item, created = await self._run(self.catalog.reserve_item, convert.new_item(request))
        return pb.ReserveItemResponse(item=convert.item_pb(item), created=created)

    async def MarkItemReady(self, request, context):  # type: ignore[no-untyped-def]
        item = await self._run(
            self.catalog.mark_ready,
            request.id,
            convert.auto_tags(request.auto_tags),
            request.duration_seconds,
            request.sample_rate,
            request.channels,
        )
        return pb.MarkItemReadyResponse(item=convert.item_pb(item))

    async def MarkItemDeleting(self, request, context):  # type: ignore[no-untyped-def]
        before = (
            convert.pending_before(request.only_if_pending_before)
            if request.HasField("only_if_pending_before")
            else None
        )
        item = await self._run(self.catalog.mark_deleting, request.id, before)
        if item is None:
            return pb.MarkItemDeletingResponse(marked=False)
        return pb.MarkItemDeletingResponse(item=convert.item_pb(item), marked=True)

    async def GetItem(self, request, context):  # type: ignore[no-untyped-def]
        return pb.GetItemResponse(item=convert.item_pb(await self._run(self.catalog.get_item, request.id)))

    async def BatchGetItems(self, request, context):  # type: ignore[no-untyped-def]
        items = await self._run(self.catalog.get_items, list(request.ids), convert.state_name(request.state))
        return pb.BatchGetItemsResponse(items=[convert.item_pb(i) for i in items])

    async def ListItems(self, request, context):  # type: ignore[no-untyped-def]
        items, token = await self._run(
            self.catalog.list_items, request.library, request.page_size, request.page_token, request.tag
        )
        return pb.ListItemsResponse(items=[convert.item_pb(i) for i in items], next_page_token=token)

    async def FindItemIds(self, request, context):  # type: ignore[no-untyped-def]
        return pb.FindItemIdsResponse(
            ids=await self._run(self.catalog.find_item_ids, request.library, list(request.tags))
        )

    async def DeleteItem(self, request, context):  # type: ignore[no-untyped-def]
        deleted = await self._run(self.catalog.delete_item, request.id, convert.state_name(request.only_if_state))
        return pb.DeleteItemResponse(deleted=deleted)

    async def CatalogStats(self, request, context):  # type: ignore[no-untyped-def]
        counts = await self._run(self.catalog.stats)
        return pb.CatalogStatsResponse(libraries=[convert.counts_pb(c) for c in counts])

    async def ListItemStates(self, request, context):  # type: ignore[no-untyped-def]
        states = await self._run(self.catalog.item_states, request.library)
        return pb.ListItemStatesResponse(items=[convert.state_pb(s) for s in states])

    async def MarkItemPending(self, request, context):  # type: ignore[no-untyped-def]
        return pb.MarkItemPendingResponse(item=convert.item_pb(await self._run(self.catalog.mark_pending, request.id)))

    async def StartModelChange(self, request, context):  # type: ignore[no-untyped-def]
        change = convert.model_change(request.change)
        resumed, replaced = await self._run(self.catalog.start_model_change, request.name, change)
        response = pb.StartModelChangeResponse(resumed=resumed)
        if replaced is not None:
            response.replaced.CopyFrom(convert.change_pb(replaced))
        return response

    async def FinishModelChange(self, request, context):  # type: ignore[no-untyped-def]
        lib = await self._run(self.catalog.finish_model_change, request.name, request.model_name)
        return pb.FinishModelChangeResponse(library=convert.library_pb(lib))

    async def CancelModelChange(self, request, context):  # type: ignore[no-untyped-def]
        cancelled = await self._run(self.catalog.cancel_model_change, request.name)
        return pb.CancelModelChangeResponse(cancelled=convert.change_pb(cancelled) if cancelled is not None else None)

    async def UpdateItem(self, request, context):  # type: ignore[no-untyped-def]
        item = await self._run(self.catalog.update_item, *convert.item_update(request))
        return pb.UpdateItemResponse(item=convert.item_pb(item))
