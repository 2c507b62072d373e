"""Kept uploads and GetAudioSegment: a match plays back from its offset,
the audio goes with its item, and repair can re-embed from it."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.common.channels import LOCAL_SUBCHANNELS
from services.common.errors import InvalidArgument
from services.gateway.audio_store import AudioStore
from tests.conftest import start_stack, stop_stack
from tests.sounds import encode, sound
from tests.test_gateway import expect_code, insert_stream


async def segment(stack, item_id: int, start: float, end: float) -> tuple[pb.GetAudioSegmentResponse, bytes]:  # type: ignore[no-untyped-def]
    messages = [
        m
        async for m in stack.gateway.GetAudioSegment(
            pb.GetAudioSegmentRequest(id=item_id, start_seconds=start, end_seconds=end)
        )
    ]
    return messages[0], b"".join(m.chunk for m in messages)


async def test_a_segment_is_the_same_samples_as_the_upload(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="play", model="spectral-v1"))
    source = sound(7, seconds=30.0)  # long enough to stream in several messages
    data = encode(source, rate=44100, fmt="FLAC", channels=2)
    item = (await stack.gateway.InsertAudio(insert_stream("play", "long.flac", data))).item
    first, wav = await segment(stack, item.id, 2.5, 20.0)
    assert first.content_type == "audio/wav"
    assert (first.start_seconds, first.end_seconds) == pytest.approx((2.5, 20.0), abs=1e-4)
    got, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    assert rate == 44100 and got.shape == (int(17.5 * 44100), 2)
    original, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    expected = original[int(2.5 * 44100) : int(20.0 * 44100)]
    assert np.abs(got - expected).max() < 1e-3  # 16-bit PCM of the same samples

    # End 0: to the end of the item; an end past the end is clipped.
    first, _ = await segment(stack, item.id, 25.0, 0.0)
    assert first.end_seconds == pytest.approx(30.0, abs=1e-3)
    first, _ = await segment(stack, item.id, 25.0, 99.0)
    assert first.end_seconds == pytest.approx(30.0, abs=1e-3)

    for start, end, words in [
        (40.0, 0.0, "past the end"),
        (5.0, 4.0, "must be after"),
        (-1.0, 2.0, "from 0"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await segment(stack, item.id, start, end)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details()
    first, _ = await segment(stack, item.id, 0.0, 700.0)  # past the end: clipped to the item, like 25-99 s
    assert first.end_seconds == pytest.approx(30.0, abs=1e-3)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await segment(stack, 987654, 0.0, 1.0)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # Deleting the item deletes its audio; deleting the library, all of it.
    kept = stack.data_dir / "audio"
    assert len(list(kept.rglob("*"))) == 2  # the library's folder and the file
    await stack.gateway.DeleteAudio(pb.DeleteAudioRequest(id=item.id))
    assert [p for p in kept.rglob("*") if p.is_file()] == []
    item = (await stack.gateway.InsertAudio(insert_stream("play", "again.flac", data))).item
    await stack.gateway.DeleteLibrary(pb.DeleteLibraryRequest(name="play"))
    assert list(kept.iterdir()) == []


async def test_without_kept_audio_playback_is_a_clear_error(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path, keep_audio=False)
    try:
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="bare", model="spectral-v1"))
        item = (await stack.gateway.InsertAudio(insert_stream("bare", "a.wav", encode(sound(1, seconds=3.0))))).item
        await expect_code(
            segment(stack, item.id, 0.0, 1.0), grpc.StatusCode.FAILED_PRECONDITION, "AUDIOSEARCH_KEEP_AUDIO=false"
        )
        assert not (stack.data_dir / "audio").exists()
    finally:
        await stop_stack(stack)


async def test_repair_re_embeds_an_upload_from_its_kept_audio(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="heal", model="spectral-v1"))
    item = (await stack.gateway.InsertAudio(insert_stream("heal", "up.wav", encode(sound(3, seconds=4.0))))).item
    # The vectors are lost (a Milvus volume restored from an old backup, say).
    from audiosearch.search.v1 import search_pb2, search_pb2_grpc

    async with grpc.aio.insecure_channel(stack.address("search"), options=[LOCAL_SUBCHANNELS]) as channel:
        await search_pb2_grpc.SearchServiceStub(channel).DeleteVectors(
            search_pb2.DeleteVectorsRequest(library="heal", item_ids=[item.id])
        )
    report = await stack.gateway.Repair(pb.RepairRequest())
    assert [(a.kind, a.item_id) for a in report.actions] == [(pb.REPAIR_KIND_REINDEXED, item.id)]
    assert "kept upload" in report.actions[0].detail
    results = (await stack.gateway.GetAudio(pb.GetAudioRequest(id=item.id))).item
    assert results.id == item.id


async def test_a_segment_is_at_most_ten_minutes(tmp_path: Path) -> None:
    store = AudioStore(tmp_path)
    with pytest.raises(InvalidArgument, match="at most 600"):
        await store.segment("lib", 1, 3600.0, 100.0, 800.0)  # of an hour-long item


async def test_repair_drops_the_kept_audio_of_a_library_the_catalog_lost(stack) -> None:  # type: ignore[no-untyped-def]
    from audiosearch.catalog.v1 import catalog_pb2, catalog_pb2_grpc

    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lost", model="spectral-v1"))
    await stack.gateway.InsertAudio(insert_stream("lost", "a.wav", encode(sound(2, seconds=3.0))))
    folder = stack.data_dir / "audio" / b"lost".hex()
    assert any(folder.iterdir())
    # A library delete that crashed after the catalog step: the collection and the files remain.
    async with grpc.aio.insecure_channel(stack.address("catalog"), options=[LOCAL_SUBCHANNELS]) as channel:
        await catalog_pb2_grpc.CatalogServiceStub(channel).DeleteLibrary(catalog_pb2.DeleteLibraryRequest(name="lost"))
    report = await stack.gateway.Repair(pb.RepairRequest())
    assert [a.kind for a in report.actions] == [pb.REPAIR_KIND_ORPHAN_COLLECTION]
    assert not folder.exists()
