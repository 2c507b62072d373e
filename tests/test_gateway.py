"""The public API end to end through real in-process services."""

from __future__ import annotations

import os

import grpc
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import LOCAL_SUBCHANNELS
from services.embedder.models.table import MODELS
from tests.sounds import encode, excerpt, sound

CHUNK = 64 * 1024  # small chunks so uploads really stream in several messages


def insert_stream(library: str, name: str, data: bytes, tags: list[str] | None = None):
    meta = pb.InsertAudioMetadata(library=library, name=name, source_uri=f"test://{name}", tags=tags or [])
    yield pb.InsertAudioRequest(metadata=meta, chunk=data[:CHUNK])
    for start in range(CHUNK, len(data), CHUNK):
        yield pb.InsertAudioRequest(chunk=data[start : start + CHUNK])


def search_stream(params: pb.SearchParams, data: bytes = b""):
    yield pb.SearchAudioRequest(params=params, chunk=data[:CHUNK])
    for start in range(CHUNK, len(data), CHUNK):
        yield pb.SearchAudioRequest(chunk=data[start : start + CHUNK])


async def expect_code(call, code: grpc.StatusCode, contains: str = "") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert contains.lower() in (info.value.details() or "").lower()
    return info.value.details() or ""


async def populate(stack, n: int = 8, library: str = "sfx") -> dict[int, int]:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name=library, model="spectral-v1"))
    ids = {}
    for seed in range(n):
        data = encode(sound(seed, seconds=3.0 + seed % 3), fmt=["WAV", "FLAC", "OGG"][seed % 3], channels=1 + seed % 2)
        response = await stack.gateway.InsertAudio(
            insert_stream(library, f"sound{seed}.wav", data, tags=[f"group{seed % 2}"])
        )
        assert response.created
        ids[seed] = response.item.id
    return ids


async def test_health_and_reflection_for_every_service(stack) -> None:  # type: ignore[no-untyped-def]
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    expected = {
        "gateway": "audiosearch.gateway.v1.GatewayService",
        "embedder": "audiosearch.embedder.v1.EmbedderService",
        "search": "audiosearch.search.v1.SearchService",
        "catalog": "audiosearch.catalog.v1.CatalogService",
    }
    for name, service in expected.items():
        async with grpc.aio.insecure_channel(stack.address(name), options=[LOCAL_SUBCHANNELS]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for svc in ("", service):
                status = await health.Check(health_pb2.HealthCheckRequest(service=svc))
                assert status.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            responses = [r async for r in reflection.ServerReflectionInfo(iter([request]))]
            names = {s.name for s in responses[0].list_services_response.service}
            assert service in names and "grpc.health.v1.Health" in names


async def test_insert_search_delete_round_trip(stack) -> None:  # type: ignore[no-untyped-def]
    ids = await populate(stack)
    source = sound(5, seconds=5.0)
    clip = encode(excerpt(source, 1.0, 3.5), rate=44100, fmt="WAV")
    response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=3), clip))
    assert response.results[0].item.id == ids[5]
    assert response.results[0].score > response.results[1].score
    assert response.results[0].item.name == "sound5.wav"
    assert response.results[0].item.duration_seconds == pytest.approx(5.0, abs=0.01)
    assert response.results[0].item_range.start_seconds == pytest.approx(1.0, abs=0.5)  # the excerpt started at 1 s
    assert response.model == "spectral-v1"

    stats = await stack.gateway.Stats(pb.StatsRequest())
    (lib,) = stats.libraries
    assert (lib.items, lib.indexed_items, lib.pending_items) == (8, 8, 0)
    # What each model finds and what its score means: the embedder's words, passed through.
    models = {m.name: m for m in stats.models}
    assert models["spectral-v1"].purpose == MODELS["spectral-v1"].info.purpose
    assert models["spectral-v1"].score_meaning == MODELS["spectral-v1"].info.score_meaning
    vectors_before = lib.vectors

    await stack.gateway.DeleteAudio(pb.DeleteAudioRequest(id=ids[5]))
    response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=8), clip))
    assert ids[5] not in [r.item.id for r in response.results]
    await expect_code(stack.gateway.GetAudio(pb.GetAudioRequest(id=ids[5])), grpc.StatusCode.NOT_FOUND, str(ids[5]))
    (lib,) = (await stack.gateway.Stats(pb.StatsRequest())).libraries
    assert (lib.items, lib.indexed_items) == (7, 7)
    assert lib.vectors < vectors_before


async def test_same_content_twice_returns_existing_item(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="dups", model="spectral-v1"))
    data = encode(sound(1))
    first = await stack.gateway.InsertAudio(insert_stream("dups", "a.wav", data))
    second = await stack.gateway.InsertAudio(insert_stream("dups", "b.wav", data))
    assert first.created and not second.created
    assert second.item.id == first.item.id and second.item.name == "a.wav"
    (lib,) = (await stack.gateway.Stats(pb.StatsRequest())).libraries
    assert lib.items == 1 and lib.indexed_items == 1


async def test_more_like_this_and_tag_filter(stack) -> None:  # type: ignore[no-untyped-def]
    ids = await populate(stack)
    response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(item_id=ids[2], top_k=5)))
    found = [r.item.id for r in response.results]
    assert ids[2] not in found and len(found) == 5
    tagged = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(item_id=ids[2], top_k=10, tags=["group1"])))
    assert {r.item.id for r in tagged.results} == {ids[s] for s in (1, 3, 5, 7)}
    listed = await stack.gateway.ListAudio(pb.ListAudioRequest(library="sfx", tag="GROUP0", page_size=2))
    assert len(listed.items) == 2 and listed.next_page_token
    rest = await stack.gateway.ListAudio(
        pb.ListAudioRequest(library="sfx", tag="group0", page_token=listed.next_page_token)
    )
    assert {i.id for i in listed.items} | {i.id for i in rest.items} == {ids[s] for s in (0, 2, 4, 6)}
    assert not rest.next_page_token


async def test_item_metadata(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="meta", model="spectral-v1"))
    data = encode(sound(3, seconds=2.5, rate=22050), rate=22050, fmt="FLAC", channels=2)
    item = (await stack.gateway.InsertAudio(insert_stream("meta", "stereo.flac", data, ["Rain", "rain "]))).item
    got = (await stack.gateway.GetAudio(pb.GetAudioRequest(id=item.id))).item
    assert (got.sample_rate, got.channels, got.library, got.source_uri) == (22050, 2, "meta", "test://stereo.flac")
    assert got.duration_seconds == pytest.approx(2.5, abs=0.01)
    assert list(got.user_tags) == ["rain"]
    assert len(got.sha256) == 64 and got.create_time.seconds > 0


async def test_libraries_are_bound_to_a_model(stack) -> None:  # type: ignore[no-untyped-def]
    lib = (await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib1"))).library
    assert (lib.model, lib.dim) == ("fingerprint-v1", 1 << 28)  # the default without Cnn14 weights (sparse)
    assert (lib.window_seconds, lib.hop_seconds) == (2.0, 0.5)  # the model's defaults
    details = await expect_code(
        stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib2", model="panns-cnn14")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "weights",
    )
    assert "AUDIOSEARCH_CNN14_CHECKPOINT" in details
    await expect_code(stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib1")), grpc.StatusCode.ALREADY_EXISTS)
    await expect_code(
        stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="Bad Name!")), grpc.StatusCode.INVALID_ARGUMENT, "name"
    )
    await expect_code(
        stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="x", model="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "nope",
    )
    names = [lib.name for lib in (await stack.gateway.ListLibraries(pb.ListLibrariesRequest())).libraries]
    assert names == ["lib1"]  # failed creations left nothing behind


async def test_bad_input_gets_precise_status_and_service_keeps_serving(stack) -> None:  # type: ignore[no-untyped-def]
    ids = await populate(stack, n=2)
    g = stack.gateway
    clip = encode(sound(0))
    await expect_code(
        g.InsertAudio(insert_stream("sfx", "notes.txt", b"this is not audio" * 100)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "decode",
    )
    await expect_code(g.InsertAudio(insert_stream("sfx", "empty.wav", b"")), grpc.StatusCode.INVALID_ARGUMENT, "empty")
    await expect_code(g.InsertAudio(insert_stream("nolib", "a.wav", clip)), grpc.StatusCode.NOT_FOUND, "nolib")
    await expect_code(
        g.InsertAudio(iter([pb.InsertAudioRequest(chunk=clip)])), grpc.StatusCode.INVALID_ARGUMENT, "metadata"
    )
    await expect_code(g.GetAudio(pb.GetAudioRequest(id=999999)), grpc.StatusCode.NOT_FOUND, "999999")
    await expect_code(g.DeleteAudio(pb.DeleteAudioRequest(id=999999)), grpc.StatusCode.NOT_FOUND)
    await expect_code(g.DeleteLibrary(pb.DeleteLibraryRequest(name="nolib")), grpc.StatusCode.NOT_FOUND)
    for top_k in (-1, 10**6):  # 0: the default (tests/test_error_details.py)
        await expect_code(
            g.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=top_k), clip)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "top_k",
        )
    await expect_code(
        g.SearchAudio(search_stream(pb.SearchParams(library="nolib", top_k=3), clip)), grpc.StatusCode.NOT_FOUND
    )
    await expect_code(g.SearchAudio(search_stream(pb.SearchParams(item_id=424242, top_k=3))), grpc.StatusCode.NOT_FOUND)
    await expect_code(
        g.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=3), b"garbage")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_code(
        g.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=3))), grpc.StatusCode.INVALID_ARGUMENT, "empty"
    )
    # Nothing half-written: no pending rows, the library intact, search still answers.
    (lib,) = (await g.Stats(pb.StatsRequest())).libraries
    assert (lib.items, lib.pending_items, lib.indexed_items) == (2, 0, 2)
    response = await g.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=1), clip))
    assert response.results[0].item.id == ids[0]


async def test_upload_size_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import start_stack, stop_stack

    stack = await start_stack(tmp_path, max_upload_bytes=100_000)
    try:
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="small"))
        big = encode(sound(1, seconds=5.0))
        await expect_code(
            stack.gateway.InsertAudio(insert_stream("small", "big.wav", big)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "bytes",
        )
        small = encode(sound(1, seconds=0.5))
        assert (await stack.gateway.InsertAudio(insert_stream("small", "ok.wav", small))).created
    finally:
        await stop_stack(stack)


async def test_insert_by_server_path_only_under_allowed_roots(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="paths"))
    inside = stack.roots / "sub" / "tone.flac"
    inside.parent.mkdir()
    inside.write_bytes(encode(sound(4), fmt="FLAC"))
    response = await stack.gateway.InsertAudioFromPath(pb.InsertAudioFromPathRequest(library="paths", path=str(inside)))
    assert response.created and response.item.name == "tone.flac" and response.item.source_uri == str(inside)

    outside = tmp_path / "secret.wav"
    outside.write_bytes(encode(sound(5)))
    await expect_code(
        stack.gateway.InsertAudioFromPath(pb.InsertAudioFromPathRequest(library="paths", path=str(outside))),
        grpc.StatusCode.PERMISSION_DENIED,
        "outside",
    )
    link = stack.roots / "escape.wav"
    os.symlink(outside, link)
    await expect_code(
        stack.gateway.InsertAudioFromPath(pb.InsertAudioFromPathRequest(library="paths", path=str(link))),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    dotted = f"{stack.roots}/../secret.wav"
    await expect_code(
        stack.gateway.InsertAudioFromPath(pb.InsertAudioFromPathRequest(library="paths", path=dotted)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_code(
        stack.gateway.InsertAudioFromPath(pb.InsertAudioFromPathRequest(library="paths", path="relative.wav")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_code(
        stack.gateway.InsertAudioFromPath(
            pb.InsertAudioFromPathRequest(library="paths", path=str(stack.roots / "none.wav"))
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_delete_library_removes_items_and_vectors(stack) -> None:  # type: ignore[no-untyped-def]
    ids = await populate(stack, n=3, library="gone")
    response = await stack.gateway.DeleteLibrary(pb.DeleteLibraryRequest(name="gone"))
    assert response.deleted_items == 3
    assert not (await stack.gateway.Stats(pb.StatsRequest())).libraries
    await expect_code(stack.gateway.GetAudio(pb.GetAudioRequest(id=ids[0])), grpc.StatusCode.NOT_FOUND)
    # The name can be used again, from scratch.
    await populate(stack, n=1, library="gone")


async def test_an_expired_client_deadline_leaves_the_service_serving(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="slow"))
    long_clip = encode(sound(2, seconds=60.0))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.InsertAudio(insert_stream("slow", "long.wav", long_clip), timeout=0.001)
    # The client's own core may fail the send before it reports the deadline.
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED or "execute_batch" in info.value.debug_error_string()
    # The service is fine afterwards.
    assert (await stack.gateway.InsertAudio(insert_stream("slow", "short.wav", encode(sound(2))))).created


async def test_cnn14_library_stores_audioset_tags_and_filters_on_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import start_stack, stop_stack
    from tests.reference_models import save_checkpoint

    # Seeded weights with batch-norm statistics that are not 0/1: with the
    # default initialisation every sound embeds almost alike (cosine
    # 0.9999999), and bf16 rounding decides the order.
    checkpoint = save_checkpoint(tmp_path / "Cnn14_mAP=0.431.pth")
    stack = await start_stack(tmp_path, {"cnn14_checkpoint": checkpoint, "device": "cpu"})
    try:
        lib = (await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="tagged"))).library
        assert (lib.model, lib.dim) == ("panns-cnn14", 2048)  # the default once weights are present
        items = []
        for seed in range(3):
            response = await stack.gateway.InsertAudio(
                insert_stream("tagged", f"s{seed}.wav", encode(sound(seed, 3.0)))
            )
            items.append(response.item)
        assert all(len(item.auto_tags) == 5 for item in items)
        label = items[0].auto_tags[0].label
        assert label == label.lower() and 0 <= items[0].auto_tags[0].score <= 1
        response = await stack.gateway.SearchAudio(
            search_stream(pb.SearchParams(library="tagged", top_k=3, tags=[label]), encode(sound(0, 3.0)))
        )
        expected = {i.id for i in items if label in {t.label for t in i.auto_tags}}
        assert {r.item.id for r in response.results} == expected and response.model == "panns-cnn14"
        assert response.results[0].item.id == items[0].id
    finally:
        await stop_stack(stack)


async def test_excerpt_inside_a_long_track_found_with_its_offset(stack) -> None:  # type: ignore[no-untyped-def]
    """The default weights-free model is the fingerprint: a 5 s excerpt from
    the middle of a 3-minute track finds it first, at the right time; audio
    that is not in the library finds nothing."""
    from tests.sounds import music

    lib = (await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="tracks"))).library
    assert lib.model == "fingerprint-v1"
    tracks = {seed: music(seed, 180.0 if seed == 1 else 40.0) for seed in range(1, 5)}
    ids = {}
    for seed, track in tracks.items():
        data = encode(track, rate=22050, fmt="FLAC")  # (libsndfile can crash writing long Vorbis in one call)
        ids[seed] = (await stack.gateway.InsertAudio(insert_stream("tracks", f"track{seed}.ogg", data))).item.id
    start = 91.3
    clip = excerpt(tracks[1], start, start + 5.0, rate=22050, gain=0.3)
    response = await stack.gateway.SearchAudio(
        search_stream(pb.SearchParams(library="tracks", top_k=5), encode(clip, rate=22050, fmt="MP3"))
    )
    best = response.results[0]
    assert best.item.id == ids[1] and best.evidence >= response.min_evidence > 0
    assert best.item_range.start_seconds - best.query_range.start_seconds == pytest.approx(start, abs=0.5)
    assert best.item_range.end_seconds - best.item_range.start_seconds == pytest.approx(
        best.query_range.end_seconds - best.query_range.start_seconds
    )

    stranger = encode(music(99, 5.0), rate=22050)
    nothing = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="tracks", top_k=5), stranger))
    assert list(nothing.results) == []
    everything = await stack.gateway.SearchAudio(
        search_stream(pb.SearchParams(library="tracks", top_k=5, min_score=-1), stranger)
    )
    assert len(everything.results) >= 1  # the threshold can be lifted by the caller
