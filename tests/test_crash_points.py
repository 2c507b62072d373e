"""Every crash point of insert and delete, in seconds: the gateway's use
cases run over in-memory ports (tests/fakes.py) wrapped so that the n-th
call to any of them stops the process, before its effect or after it (the
effect happened, the gateway never heard). After each crash, Repair runs
and the invariants must hold:

- every catalog row is READY, with its vectors and its kept upload;
- no vectors and no kept upload belong to an item the catalog lacks;
- a retry of the interrupted call then succeeds, and leaves one item
  (insert) or none (delete).

The slow tier (tests/test_faults.py) kills real services; this one shows
that the order of writes makes every interruption repairable."""

from __future__ import annotations

import hashlib

import pytest

from services.common.errors import NotFound
from services.gateway.facade import Gateway, Settings
from services.gateway.ports import READY, Backends
from services.gateway.repair import Repair
from services.gateway.server_paths import ServerPaths
from tests.fakes import MODEL, Calls, Crash, Crashing, FakeEmbedder, MemoryAudio, MemoryCatalog, MemoryVectors

LIBRARY = "lib"
DATA = bytes(range(64)) * 4
SETTINGS = Settings(max_upload_bytes=1 << 20, max_top_k=10, auto_tags=0, allowed_roots=())


class World:
    """One set of in-memory backends, and the same seen through `Crashing`."""

    def __init__(self) -> None:
        self.catalog, self.vectors, self.audio = MemoryCatalog(), MemoryVectors(), MemoryAudio()
        self.embedder = FakeEmbedder()

    def backends(self, calls: Calls | None = None) -> Backends:
        ports = {"embedder": self.embedder, "vectors": self.vectors, "catalog": self.catalog, "audio": self.audio}
        if calls is not None:
            ports = {name: Crashing(port, name, calls) for name, port in ports.items()}
        return Backends(**ports)

    def gateway(self, calls: Calls | None = None) -> Gateway:
        return Gateway(self.backends(calls), SETTINGS)

    async def repair(self) -> None:
        await Repair(self.backends(), ServerPaths((), 1 << 20), stale_after=0.0, dry_run=False).run()

    async def check(self) -> None:
        rows = {i.id: i for i in self.catalog.items.values()}
        assert all(item.state == READY for item in rows.values()), rows
        with_vectors = await self.vectors.item_ids(LIBRARY)
        kept = {item_id for _, item_id in self.audio.files}
        assert with_vectors == set(rows) and kept == set(rows), (rows, with_vectors, kept)


async def fresh() -> World:
    world = World()
    await world.gateway().create_library(LIBRARY, MODEL.name)
    return world


async def insert(gateway: Gateway) -> None:
    await gateway.insert(LIBRARY, DATA, "clip.wav")


async def calls_made(action, world: World) -> int:  # type: ignore[no-untyped-def]
    calls = Calls()
    await action(world.gateway(calls))
    return calls.count


def points(n: int) -> list[tuple[int, str]]:
    return [(k, when) for k in range(1, n + 1) for when in ("before", "after")]


async def test_every_crash_point_of_an_insert_is_repaired() -> None:
    n = await calls_made(insert, await fresh())
    assert n >= 5  # reserve, embed, kept upload, vectors, ready (at least)
    for point in points(n):
        world = await fresh()
        calls = Calls(point)
        with pytest.raises(Crash):
            await insert(world.gateway(calls))
        await world.repair()
        await world.check()
        item, _ = await world.gateway().insert(LIBRARY, DATA, "clip.wav")  # the client retries
        await world.check()
        assert [i.id for i in world.catalog.items.values()] == [item.id], point
        assert item.sha256 == hashlib.sha256(DATA).hexdigest()


async def test_every_crash_point_of_a_delete_is_repaired() -> None:
    async def setup() -> tuple[World, int]:
        world = await fresh()
        item, _ = await world.gateway().insert(LIBRARY, DATA, "clip.wav")
        return world, item.id

    world, item_id = await setup()
    n = await calls_made(lambda g: g.delete(item_id), world)
    assert n >= 4  # look up, mark deleting, vectors, kept upload, row
    for point in points(n):
        world, item_id = await setup()
        with pytest.raises(Crash):
            await world.gateway(Calls(point)).delete(item_id)
        await world.repair()
        await world.check()
        try:
            await world.gateway().delete(item_id)  # the client retries
        except NotFound:
            pass  # repair finished it
        await world.check()
        assert world.catalog.items == {}, point
