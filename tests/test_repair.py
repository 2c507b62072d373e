"""Crash leftovers and their repair, through the real services: each
leftover is produced the way a crash leaves it (the catalog or vector
store reached directly, as the gateway would have left them half-way),
then the gateway's Repair RPC must find and fix it, and report nothing the
second time. Also: client idempotency keys."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from audiosearch.catalog.v1 import catalog_pb2 as cat
from audiosearch.catalog.v1 import catalog_pb2_grpc as cat_grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.search.v1 import search_pb2 as srch
from audiosearch.search.v1 import search_pb2_grpc as srch_grpc

from services.common import config as cfg
from services.common import server
from services.common.channels import LOCAL_SUBCHANNELS
from services.search import __main__ as search_main
from services.search.config import SearchConfig
from tests.sounds import encode, sound
from tests.test_gateway import expect_code, insert_stream, search_stream

KIND = pb.RepairKind


class Direct:
    """The internal services, reached the way the gateway reaches them."""

    def __init__(self, stack) -> None:  # type: ignore[no-untyped-def]
        self.channels = [
            grpc.aio.insecure_channel(stack.address(n), options=[LOCAL_SUBCHANNELS]) for n in ("catalog", "search")
        ]
        self.catalog = cat_grpc.CatalogServiceStub(self.channels[0])
        self.search = srch_grpc.SearchServiceStub(self.channels[1])

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def vector_items(self, library: str) -> set[int]:
        return set((await self.search.ListItemIds(srch.ListItemIdsRequest(library=library))).item_ids)

    async def state(self, item_id: int) -> int:
        return (await self.catalog.GetItem(cat.GetItemRequest(id=item_id))).item.state


@pytest.fixture
async def direct(stack):  # type: ignore[no-untyped-def]
    d = Direct(stack)
    yield d
    await d.close()


async def insert(stack, seed: int, library: str = "lib", key: str = "") -> pb.AudioItem:  # type: ignore[no-untyped-def]
    data = encode(sound(seed, seconds=3.0))
    stream = insert_stream(library, f"s{seed}.wav", data)
    if key:
        first = next(stream)
        first.metadata.idempotency_key = key
        stream = iter([first, *stream])
    return (await stack.gateway.InsertAudio(stream)).item


async def repair(stack, dry_run: bool = False, stale: float = 0.0) -> list[tuple[int, str, int]]:  # type: ignore[no-untyped-def]
    response = await stack.gateway.Repair(pb.RepairRequest(dry_run=dry_run, stale_after_seconds=stale))
    assert response.dry_run == dry_run
    return sorted((a.kind, a.library, a.item_id) for a in response.actions)


async def test_a_consistent_store_needs_no_repair(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    await insert(stack, 1)
    assert await repair(stack) == []


async def test_orphan_vectors_and_unfinished_deletes(stack, direct) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    a, b, c = [await insert(stack, seed) for seed in (1, 2, 3)]
    # a: the catalog row went, the vectors stayed (a crash inside a delete
    # before the order was fixed, or a restored catalog backup).
    await direct.catalog.DeleteItem(cat.DeleteItemRequest(id=a.id))
    # b: a delete that crashed after marking the item DELETING.
    await direct.catalog.MarkItemDeleting(cat.MarkItemDeletingRequest(id=b.id))
    # A deleting item is never served, even before repair.
    clip = encode(sound(2, seconds=3.0))
    found = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="lib", top_k=5, min_score=-1), clip))
    assert b.id not in [r.item.id for r in found.results]

    assert await repair(stack, dry_run=True) == [
        (KIND.REPAIR_KIND_ORPHAN_VECTORS, "lib", 0),
        (KIND.REPAIR_KIND_UNFINISHED_DELETE, "lib", b.id),
    ]
    assert await direct.vector_items("lib") == {a.id, b.id, c.id}  # the dry run changed nothing
    assert len(await repair(stack)) == 2
    assert await direct.vector_items("lib") == {c.id}
    await expect_code(stack.gateway.GetAudio(pb.GetAudioRequest(id=b.id)), grpc.StatusCode.NOT_FOUND)
    assert await repair(stack) == []


async def test_stale_pending_inserts_are_removed_fresh_ones_kept(stack, direct) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    # An insert that crashed after writing its vectors, before READY.
    reserved = await direct.catalog.ReserveItem(
        cat.ReserveItemRequest(library="lib", sha256="ab" * 32, name="crashed.wav")
    )
    pending = reserved.item.id
    vector = srch.WindowVector(item_id=pending, window_index=0, offset_seconds=0.0, vector=np.ones(192) / 8)
    await direct.search.UpsertVectors(
        srch.UpsertVectorsRequest(library="lib", model=srch.ModelBinding(name="spectral-v1", dim=192), vectors=[vector])
    )
    # Within the default 15 minutes it may still be an insert in progress.
    assert await repair(stack) == []
    assert await repair(stack, stale=0.001) == [(KIND.REPAIR_KIND_STALE_PENDING, "lib", pending)]
    assert await direct.vector_items("lib") == set()
    await expect_code(direct.catalog.GetItem(cat.GetItemRequest(id=pending)), grpc.StatusCode.NOT_FOUND)


async def test_ready_items_without_vectors_are_reindexed_or_hidden(stack, direct) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    path = stack.roots / "on-server.wav"
    path.write_bytes(encode(sound(4, seconds=3.0)))
    on_disk = (
        await stack.gateway.InsertAudioFromPath(pb.InsertAudioFromPathRequest(library="lib", path=str(path)))
    ).item
    uploaded = await insert(stack, 5)
    await direct.search.DeleteVectors(srch.DeleteVectorsRequest(library="lib", item_ids=[on_disk.id, uploaded.id]))
    # Its kept upload is gone too (kept audio is re-embedded: tests/test_playback.py).
    (stack.data_dir / "audio" / b"lib".hex() / str(uploaded.id)).unlink()

    assert await repair(stack) == [
        (KIND.REPAIR_KIND_REINDEXED, "lib", on_disk.id),
        (KIND.REPAIR_KIND_MISSING_VECTORS, "lib", uploaded.id),
    ]
    assert await direct.vector_items("lib") == {on_disk.id}
    assert await direct.state(uploaded.id) == cat.ITEM_STATE_PENDING  # hidden until inserted again
    await expect_code(stack.gateway.GetAudio(pb.GetAudioRequest(id=uploaded.id)), grpc.StatusCode.NOT_FOUND)
    again = await insert(stack, 5)
    assert again.id == uploaded.id
    assert await direct.vector_items("lib") == {on_disk.id, uploaded.id}
    assert await repair(stack) == []


async def test_collections_without_libraries_and_libraries_without_collections(stack, direct) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    await direct.search.CreateCollection(
        srch.CreateCollectionRequest(library="ghost", model=srch.ModelBinding(name="spectral-v1", dim=192))
    )
    await direct.search.DropCollection(srch.DropCollectionRequest(library="lib"))
    assert await repair(stack) == [
        (KIND.REPAIR_KIND_MISSING_COLLECTION, "lib", 0),
        (KIND.REPAIR_KIND_ORPHAN_COLLECTION, "ghost", 0),
    ]
    stats = await direct.search.CollectionStats(srch.CollectionStatsRequest())
    assert [c.library for c in stats.collections] == ["lib"]
    await insert(stack, 1)  # the library works again
    assert await repair(stack) == []


async def test_a_library_deleted_half_way_is_cleaned_up(stack, direct) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    await insert(stack, 1)
    # The gateway deletes the catalog side first; a crash then leaves the collection.
    await direct.catalog.DeleteLibrary(cat.DeleteLibraryRequest(name="lib"))
    # Creating the name again starts from an empty collection, not the leftovers.
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    assert await direct.vector_items("lib") == set()
    assert await repair(stack) == []


async def test_client_idempotency_keys(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    first = await insert(stack, 1, key="upload-0001")
    again = await insert(stack, 1, key="upload-0001")
    assert again.id == first.id
    await expect_code(insert(stack, 2, key="upload-0001"), grpc.StatusCode.INVALID_ARGUMENT, "different content")
    await expect_code(insert(stack, 2, key="has space"), grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key")
    # The same content under another key is still the same item.
    assert (await insert(stack, 1, key="upload-0002")).id == first.id


async def test_reinserting_content_whose_delete_crashed_converges(stack, direct) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    old = await insert(stack, 1)
    await direct.catalog.MarkItemDeleting(cat.MarkItemDeletingRequest(id=old.id))  # a delete that crashed here
    new = await insert(stack, 1)  # finishes that delete, then inserts afresh
    assert new.id != old.id
    assert await direct.vector_items("lib") == {new.id}
    await expect_code(direct.catalog.GetItem(cat.GetItemRequest(id=old.id)), grpc.StatusCode.NOT_FOUND)
    assert await repair(stack) == []


async def test_the_gateway_repairs_on_start(stack, direct, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from services.common import config as cfg
    from services.common import server
    from services.gateway import __main__ as gateway_main
    from services.gateway.config import GatewayConfig

    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    item = await insert(stack, 1)
    await direct.catalog.MarkItemDeleting(cat.MarkItemDeletingRequest(id=item.id))
    config = cfg.load(
        GatewayConfig,
        environ={},
        listen="127.0.0.1:0",
        data_dir=tmp_path,
        embedder_addr=stack.address("embedder"),
        search_addr=stack.address("search"),
        catalog_addr=stack.address("catalog"),
    )
    second = await server.start(await gateway_main.build(config), config)  # a gateway (re)starting
    try:
        for _ in range(600):  # the start-up repair runs in the background
            try:
                await direct.catalog.GetItem(cat.GetItemRequest(id=item.id))
            except grpc.aio.AioRpcError:
                break
            await asyncio.sleep(0.05)
        assert await direct.vector_items("lib") == set()
        await expect_code(direct.catalog.GetItem(cat.GetItemRequest(id=item.id)), grpc.StatusCode.NOT_FOUND)
    finally:
        await second.stop()


async def test_a_search_restart_is_followed_by_a_repair(stack, direct) -> None:  # type: ignore[no-untyped-def]
    """Whatever a restarted search service lost is put back without a
    manual repair or a gateway restart: the gateway follows the search
    service's health and repairs when it comes back."""
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
    item = await insert(stack, 6)
    # The vectors are lost (as a store that crashed before they were durable would lose them) ...
    await direct.search.DeleteVectors(srch.DeleteVectorsRequest(library="lib", item_ids=[item.id]))
    # ... and the search service restarts on the same address.
    old = stack.servers["search"]
    address = old.address
    await old.stop()
    config = cfg.load(SearchConfig, environ={}, data_dir=stack.data_dir, listen=address, shutdown_grace_seconds=1.0)
    stack.servers["search"] = await server.start(await search_main.build(config), config)
    for _ in range(600):  # the post-restart repair re-embeds it from the kept upload
        if item.id in await direct.vector_items("lib"):
            break
        await asyncio.sleep(0.1)
    assert item.id in await direct.vector_items("lib")
    assert await repair(stack) == []
