"""A full disk under the data dir, for real: the four services on a small
tmpfs, filled with a ballast file while items are inserted. Inserts fail
with RESOURCE_EXHAUSTED (or UNAVAILABLE), never INTERNAL or UNKNOWN;
searches keep working; every item listed READY is searchable; and once the
ballast is gone, inserting the same files again plus a repair converge to
exactly one searchable item per file."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb

from tests.conftest import start_stack, stop_stack
from tests.disk import fill
from tests.sounds import encode, excerpt, sound
from tests.test_gateway import insert_stream, search_stream

RETRYABLE = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
SEEDS = range(40)


async def insert(stack, seed: int) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    data = encode(sound(seed, seconds=4.0))
    try:
        await stack.gateway.InsertAudio(insert_stream("lib", f"s{seed}.wav", data), timeout=120)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in RETRYABLE, (exc.code(), exc.details())
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert "disk" in (exc.details() or "") or "full" in (exc.details() or ""), exc.details()
        return exc.code()
    return grpc.StatusCode.OK


async def top(stack, seed: int) -> str:  # type: ignore[no-untyped-def]
    clip = encode(excerpt(sound(seed, seconds=4.0), 0.5, 3.5))
    response = await stack.gateway.SearchAudio(
        search_stream(pb.SearchParams(library="lib", top_k=1), clip), timeout=120
    )
    return response.results[0].item.name if response.results else ""


async def ready_names(stack) -> set[str]:  # type: ignore[no-untyped-def]
    page = await stack.gateway.ListAudio(pb.ListAudioRequest(library="lib", page_size=1000))
    return {i.name for i in page.items}


@pytest.mark.timeout(600)
async def test_a_full_disk_refuses_inserts_keeps_searching_and_converges(tmp_path: Path, small_disk: Path) -> None:
    stack = await start_stack(tmp_path, base_overrides={"data_dir": small_disk / "data"})
    ballast = None
    try:
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
        codes = [await insert(stack, seed) for seed in SEEDS[:5]]
        assert codes == [grpc.StatusCode.OK] * 5
        ballast = fill(small_disk)
        codes += [await insert(stack, seed) for seed in SEEDS[5:]]
        refused = [c for c in codes if c != grpc.StatusCode.OK]
        assert refused, "the full disk refused nothing"
        assert await top(stack, 0) == "s0.wav"  # searches still work on a full disk
        for name in await ready_names(stack):  # nothing READY that is not searchable
            assert await top(stack, int(name[1:-4])) == name

        ballast.unlink()
        ballast = None
        codes = [await insert(stack, seed) for seed in SEEDS]
        assert set(codes) == {grpc.StatusCode.OK}, codes
        await stack.gateway.Repair(pb.RepairRequest())
        assert list((await stack.gateway.Repair(pb.RepairRequest())).actions) == []
        assert await ready_names(stack) == {f"s{seed}.wav" for seed in SEEDS}
        stats = {s.name: s for s in (await stack.gateway.Stats(pb.StatsRequest())).libraries}["lib"]
        assert (stats.items, stats.pending_items, stats.indexed_items) == (len(SEEDS), 0, len(SEEDS))
        for seed in SEEDS[::7]:
            assert await top(stack, seed) == f"s{seed}.wav"
    finally:
        if ballast is not None:
            ballast.unlink(missing_ok=True)
        await stop_stack(stack)
