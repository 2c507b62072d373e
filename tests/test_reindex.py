"""Moving a library to another model (GatewayService.ReindexLibrary and
`audiosearch reindex`), through the real services: the library keeps its
ids, names, tags and metadata, serves from its old vectors until the
switch, and an interruption (a cancelled call, a stopped gateway, an
embedder restarting) leaves it searchable on its model, with a re-run
finishing the job. Also the catalog's model change on every backend and
the vector store's staging collections on Milvus Lite."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from audiosearch.catalog.v1 import catalog_pb2 as cat
from audiosearch.embedder.v1 import embedder_pb2 as emb
from audiosearch.embedder.v1 import embedder_pb2_grpc as emb_grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from audiosearch.search.v1 import search_pb2 as srch
from sqlalchemy import text

from services.catalog.database import make_engine, migrate
from services.catalog.records import ModelChange
from services.catalog.repository import Catalog
from services.cli import main as cli
from services.common import config as cfg
from services.common import server
from services.common.channels import LOCAL_SUBCHANNELS
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.jsonview import message_dict
from services.embedder import __main__ as embedder_main
from services.embedder.config import EmbedderConfig
from services.gateway import __main__ as gateway_main
from services.gateway.config import GatewayConfig
from services.search.contract import WindowVector
from services.search.milvus import MilvusStore
from services.search.naming import collection_name, staging_name
from tests.conftest import start_stack, stop_stack
from tests.sounds import encode, excerpt, music
from tests.test_catalog import database_url  # noqa: F401 - the fixture: SQLite, PostgreSQL, MariaDB
from tests.test_gateway import expect_code, insert_stream, search_stream
from tests.test_milvus_server import milvus_server  # noqa: F401 - the fixture: a Milvus server process
from tests.test_repair import Direct

OUTCOME = pb.ReindexOutcome
RATE = 22050
FROM, TO = "fingerprint-v1", "spectral-v1"


@pytest.fixture
async def direct(stack):  # type: ignore[no-untyped-def]
    d = Direct(stack)
    yield d
    await d.close()


def track(seed: int) -> np.ndarray:
    return music(seed, 8.0 + seed % 3, rate=RATE)


async def populate(stack, n: int = 5, library: str = "lib") -> dict[int, pb.AudioItem]:  # type: ignore[no-untyped-def]
    """`n` tracks on fingerprint-v1: the last by server path, the others uploaded, each with a tag."""
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name=library, model=FROM, description="moved"))
    items = {}
    for seed in range(1, n + 1):
        data = encode(track(seed), rate=RATE, fmt="FLAC")
        if seed == n:
            path = stack.roots / f"track{seed}.flac"
            path.write_bytes(data)
            request = pb.InsertAudioFromPathRequest(library=library, path=str(path), tags=[f"seed {seed}"])
            items[seed] = (await stack.gateway.InsertAudioFromPath(request)).item
        else:
            stream = insert_stream(library, f"track{seed}.flac", data, tags=[f"seed {seed}", "uploaded"])
            items[seed] = (await stack.gateway.InsertAudio(stream)).item
    return items


def query(seed: int) -> bytes:
    return encode(excerpt(track(seed), 2.0, 6.0, rate=RATE, gain=0.4), rate=RATE, fmt="WAV")


async def top(stack, seed: int, library: str = "lib", gateway=None) -> int:  # type: ignore[no-untyped-def]
    params = pb.SearchParams(library=library, top_k=3, min_score=-1)
    response = await (gateway or stack.gateway).SearchAudio(search_stream(params, query(seed)))
    return response.results[0].item.id


async def listed(stack, library: str = "lib") -> dict[int, dict]:  # type: ignore[no-untyped-def]
    """Everything the catalog says about the items, but the model."""
    items = (await stack.gateway.ListAudio(pb.ListAudioRequest(library=library, page_size=1000))).items
    return {i.id: message_dict(i) for i in items}


async def reindex(  # type: ignore[no-untyped-def]
    gateway, library: str, model: str, stop_after: int | None = None, **settings
) -> list[pb.ReindexLibraryResponse]:
    """The messages of one call; with `stop_after`, the caller goes away
    (Ctrl-C) once that many items are re-embedded."""
    call = gateway.ReindexLibrary(pb.ReindexLibraryRequest(library=library, model=model, **settings))
    messages = []
    async for message in call:
        messages.append(message)
        if stop_after is not None and message.reindexed_items >= stop_after:
            call.cancel()
            break
    return messages


async def library(stack, name: str = "lib") -> pb.Library:  # type: ignore[no-untyped-def]
    (lib,) = [
        lib for lib in (await stack.gateway.ListLibraries(pb.ListLibrariesRequest())).libraries if lib.name == name
    ]
    return lib


async def collections(direct) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    stats = await direct.search.CollectionStats(srch.CollectionStatsRequest())
    return [(c.library, c.model.name, c.items) for c in stats.collections]


async def has_staging(direct, name: str = "lib", model: str = TO) -> bool:  # type: ignore[no-untyped-def]
    try:
        await direct.search.GetVectors(srch.GetVectorsRequest(library=f"{name}@{model}", item_id=0))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


async def repair(stack) -> list:  # type: ignore[no-untyped-def]
    return list((await stack.gateway.Repair(pb.RepairRequest())).actions)


async def test_a_library_moves_to_another_model_keeping_its_items(stack, direct) -> None:  # type: ignore[no-untyped-def]
    items = await populate(stack)
    before = await listed(stack)
    assert {await top(stack, seed) for seed in items} == {i.id for i in items.values()}  # each excerpt finds its own
    # The upload of the path-inserted item is gone: it is re-embedded from its server file.
    (stack.data_dir / "audio" / b"lib".hex() / str(items[5].id)).unlink()

    messages = await reindex(stack.gateway, "lib", TO)
    last = messages[-1]
    assert last.outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED, last
    assert (last.total_items, last.reindexed_items, last.skipped_items, last.failed_items) == (5, 5, 0, 0)
    assert last.previous_model == FROM and "moved from fingerprint-v1 to spectral-v1" in last.detail
    assert [m.outcome for m in messages[:-1]] == [OUTCOME.REINDEX_OUTCOME_UNSPECIFIED] * (len(messages) - 1)
    counts = [m.reindexed_items for m in messages]
    assert counts == sorted(counts) and set(counts) == {0, 1, 2, 3, 4, 5}  # a message per item
    lib = await library(stack)
    assert (lib.model, lib.dim, lib.window_seconds, lib.hop_seconds) == (TO, 192, 2.0, 0.5)
    assert lib.description == "moved" and last.library == lib

    assert await listed(stack) == before  # ids, names, sources, tags, durations, rates: all as they were
    for seed, item in items.items():
        assert await top(stack, seed) == item.id
    more = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(item_id=items[2].id, top_k=4)))
    assert more.model == TO and len(more.results) == 4  # "more like this" reads the new vectors
    # The old vectors are gone: one collection, of the new model, with every item; no staging one left.
    assert await collections(direct) == [("lib", TO, 5)]
    assert not await has_staging(direct)
    vectors = (await direct.search.GetVectors(srch.GetVectorsRequest(library="lib", item_id=items[1].id))).vectors
    assert vectors and len(vectors[0].vector) == 192
    (stats,) = (await stack.gateway.Stats(pb.StatsRequest())).libraries
    assert (stats.model, stats.items, stats.indexed_items, stats.pending_items) == (TO, 5, 5, 0)
    assert await repair(stack) == []

    # New uploads go in with the new model; asking for it again changes nothing.
    added = await stack.gateway.InsertAudio(insert_stream("lib", "six.flac", encode(track(6), rate=RATE, fmt="FLAC")))
    assert added.created and await top(stack, 6) == added.item.id
    (again,) = await reindex(stack.gateway, "lib", TO)
    assert again.outcome == OUTCOME.REINDEX_OUTCOME_UNCHANGED and "already uses spectral-v1" in again.detail
    assert again.library.model == TO


async def test_an_interrupted_move_keeps_the_old_model_and_a_rerun_finishes(stack, direct) -> None:  # type: ignore[no-untyped-def]
    items = await populate(stack, n=6)
    messages = await reindex(stack.gateway, "lib", TO, stop_after=2)  # Ctrl-C after two items
    assert messages[-1].outcome == OUTCOME.REINDEX_OUTCOME_UNSPECIFIED
    await asyncio.sleep(0.2)  # the cancelled call winds down on the server

    # Fully usable on the old model meanwhile: searches, inserts, deletes, repair.
    assert (await library(stack)).model == FROM
    for seed, item in items.items():
        assert await top(stack, seed) == item.id
    response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="lib", top_k=3), query(1)))
    assert response.model == FROM and response.min_evidence > 0  # fingerprint-v1's threshold
    assert await collections(direct) == [("lib", FROM, 6)]  # the staging collection is not the library's
    assert await has_staging(direct)
    assert await repair(stack) == []  # nothing about a move in progress looks like a leftover to repair
    added = (
        await stack.gateway.InsertAudio(insert_stream("lib", "late.flac", encode(track(7), rate=RATE, fmt="FLAC")))
    ).item
    await stack.gateway.DeleteAudio(pb.DeleteAudioRequest(id=items[1].id))  # its new vectors go too

    messages = await reindex(stack.gateway, "lib", TO)
    last = messages[-1]
    assert last.outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED
    assert last.total_items == 6  # 5 left of the 6, and the one added meanwhile
    assert last.skipped_items >= 1 and last.skipped_items + last.reindexed_items == 6  # the earlier work is kept
    assert (await library(stack)).model == TO
    assert await collections(direct) == [("lib", TO, 6)]
    assert await direct.vector_items("lib") == {i.id for s, i in items.items() if s != 1} | {added.id}
    for seed, item in items.items():
        if seed != 1:
            assert await top(stack, seed) == item.id
    assert await top(stack, 7) == added.id
    assert await repair(stack) == []


async def test_a_gateway_stopped_mid_move_leaves_the_old_model_and_the_next_one_finishes(
    stack, direct, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    items = await populate(stack, n=6)

    async def gateway() -> tuple[server.RunningServer, grpc.aio.Channel]:
        config = cfg.load(
            GatewayConfig,
            environ={},
            listen="127.0.0.1:0",
            data_dir=stack.data_dir,  # the same kept uploads
            embedder_addr=stack.address("embedder"),
            search_addr=stack.address("search"),
            catalog_addr=stack.address("catalog"),
            allowed_roots=(str(stack.roots),),
            shutdown_grace_seconds=0.0,  # stopping it cuts every call at once, as a crash would
        )
        running = await server.start(await gateway_main.build(config), config)
        return running, grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS])

    first, channel = await gateway()
    call = gateway_grpc.GatewayServiceStub(channel).ReindexLibrary(pb.ReindexLibraryRequest(library="lib", model=TO))
    async for message in call:
        if message.reindexed_items >= 2:
            break
    await first.stop()  # mid-move
    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    await channel.close()
    assert (await library(stack)).model == FROM
    for seed, item in items.items():
        assert await top(stack, seed) == item.id  # through the fixture's own gateway, on the old model

    second, channel = await gateway()
    try:
        last = (await reindex(gateway_grpc.GatewayServiceStub(channel), "lib", TO))[-1]
        assert last.outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED and last.skipped_items >= 2
        assert (last.skipped_items + last.reindexed_items, last.failed_items) == (6, 0)
    finally:
        await channel.close()
        await second.stop()
    assert await collections(direct) == [("lib", TO, 6)]
    for seed, item in items.items():
        assert await top(stack, seed) == item.id


async def test_an_embedder_restart_mid_move_is_waited_for(stack, direct) -> None:  # type: ignore[no-untyped-def]
    items = await populate(stack, n=6)
    call = stack.gateway.ReindexLibrary(pb.ReindexLibraryRequest(library="lib", model=TO))
    messages = []
    async for message in call:
        messages.append(message)
        if message.reindexed_items == 1 and "embedder" in stack.servers:
            old = stack.servers.pop("embedder")
            await old.stop()
            config = cfg.load(
                EmbedderConfig,
                environ={},
                data_dir=stack.data_dir,
                listen=old.address,
                shutdown_grace_seconds=1.0,
                cnn14_download=False,
                cnn14_checkpoint=stack.data_dir / "no-weights.pth",
            )
            stack.servers["embedder"] = await server.start(await embedder_main.build(config), config)
    assert messages[-1].outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED
    assert (messages[-1].reindexed_items, messages[-1].failed_items) == (6, 0)
    for seed, item in items.items():
        assert await top(stack, seed) == item.id


async def test_items_without_a_source_are_refused_and_nothing_switches(stack, direct) -> None:  # type: ignore[no-untyped-def]
    items = await populate(stack, n=4)
    # Item 1: uploaded, and its kept upload lost: nothing to re-embed it from.
    (stack.data_dir / "audio" / b"lib".hex() / str(items[1].id)).unlink()
    # Item 4: inserted by path, its upload lost too, and the file now holds other audio.
    (stack.data_dir / "audio" / b"lib".hex() / str(items[4].id)).unlink()
    (stack.roots / "track4.flac").write_bytes(encode(track(40), rate=RATE, fmt="FLAC"))

    call = stack.gateway.ReindexLibrary(pb.ReindexLibraryRequest(library="lib", model=TO))
    messages = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in call:
            messages.append(message)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details() or ""
    assert "2 of 4 items" in details and "stays on fingerprint-v1" in details
    assert f"item {items[1].id} ('track1.flac')" in details and f"item {items[4].id}" in details
    failures = {m.failure.item_id: m.failure for m in messages if m.HasField("failure")}
    assert set(failures) == {items[1].id, items[4].id}
    assert "no kept upload, and no server path" in failures[items[1].id].reason
    assert "holds other content now" in failures[items[4].id].reason
    assert messages[-1].reindexed_items == 2 and messages[-1].failed_items == 2

    assert (await library(stack)).model == FROM  # no switch: every item keeps its vectors
    assert await collections(direct) == [("lib", FROM, 4)]
    for seed in (1, 2, 3, 4):
        assert await top(stack, seed) == items[seed].id

    # Put one file back, delete the other item: the move finishes, the earlier work kept.
    (stack.roots / "track4.flac").write_bytes(encode(track(4), rate=RATE, fmt="FLAC"))
    await stack.gateway.DeleteAudio(pb.DeleteAudioRequest(id=items[1].id))
    last = (await reindex(stack.gateway, "lib", TO))[-1]
    assert last.outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED
    assert (last.total_items, last.skipped_items, last.reindexed_items, last.failed_items) == (3, 2, 1, 0)
    assert await collections(direct) == [("lib", TO, 3)]


async def test_reindexing_to_the_model_in_use_abandons_an_unfinished_move(stack, direct) -> None:  # type: ignore[no-untyped-def]
    await populate(stack, n=4)
    await reindex(stack.gateway, "lib", TO, stop_after=1)
    await asyncio.sleep(0.2)
    assert await has_staging(direct)
    (last,) = await reindex(stack.gateway, "lib", FROM)
    assert last.outcome == OUTCOME.REINDEX_OUTCOME_CANCELLED
    assert "unfinished move to spectral-v1 was abandoned" in last.detail
    assert not await has_staging(direct)
    assert (await library(stack)).model == FROM
    (last,) = await reindex(stack.gateway, "lib", FROM)
    assert last.outcome == OUTCOME.REINDEX_OUTCOME_UNCHANGED
    # Started over, the move re-embeds everything.
    last = (await reindex(stack.gateway, "lib", TO))[-1]
    assert (last.outcome, last.skipped_items, last.reindexed_items) == (OUTCOME.REINDEX_OUTCOME_SWITCHED, 0, 4)


async def test_a_switch_cut_short_is_served_from_the_new_vectors_and_finished_by_the_next_call(  # type: ignore[no-untyped-def]
    stack, direct
) -> None:
    """The state a gateway dying between the catalog's switch and the
    adoption of the new vectors leaves, made step by step as it would."""
    items = await populate(stack, n=3)
    await direct.catalog.StartModelChange(
        cat.StartModelChangeRequest(
            name="lib", change=cat.ModelChange(model_name=TO, model_dim=192, window_seconds=2.0, hop_seconds=0.5)
        )
    )
    binding = srch.ModelBinding(name=TO, dim=192)
    await direct.search.CreateCollection(srch.CreateCollectionRequest(library=f"lib@{TO}", model=binding))
    async with grpc.aio.insecure_channel(stack.address("embedder"), options=[LOCAL_SUBCHANNELS]) as channel:
        embedder = emb_grpc.EmbedderServiceStub(channel)
        for seed, item in items.items():
            data = encode(track(seed), rate=RATE, fmt="FLAC")
            options = emb.EmbedOptions(model=TO, window_seconds=2.0, hop_seconds=0.5)
            embedded = await embedder.Embed(iter([emb.EmbedRequest(options=options, chunk=data)]))
            vectors = [
                srch.WindowVector(
                    item_id=item.id, window_index=w.index, offset_seconds=w.offset_seconds, vector=w.vector
                )
                for w in embedded.windows
            ]
            await direct.search.UpsertVectors(
                srch.UpsertVectorsRequest(library=f"lib@{TO}", model=binding, vectors=vectors)
            )
    await direct.catalog.FinishModelChange(cat.FinishModelChangeRequest(name="lib", model_name=TO))
    # Here it stopped. Searches name the new model and are served from its vectors.
    assert (await library(stack)).model == TO
    assert await collections(direct) == [("lib", FROM, 3)]
    for seed, item in items.items():
        assert await top(stack, seed) == item.id

    # Any next call finishes the switch first: here one to the model the library has now.
    (last,) = await reindex(stack.gateway, "lib", TO)
    assert last.outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED and "interrupted reindex" in last.detail
    assert await collections(direct) == [("lib", TO, 3)]
    assert not await has_staging(direct)
    for seed, item in items.items():
        assert await top(stack, seed) == item.id
    assert await repair(stack) == []


async def test_bad_requests_get_clear_errors(stack) -> None:  # type: ignore[no-untyped-def]
    await populate(stack, n=1)

    async def refused(request: pb.ReindexLibraryRequest, code: grpc.StatusCode, contains: str) -> None:
        await expect_code(reindex(stack.gateway, request.library, request.model, **_settings(request)), code, contains)

    await refused(
        pb.ReindexLibraryRequest(library="nolib", model=TO), grpc.StatusCode.NOT_FOUND, "'nolib' does not exist"
    )
    await refused(
        pb.ReindexLibraryRequest(library="lib", model="no-such-model"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown model 'no-such-model'; available:",
    )
    await refused(pb.ReindexLibraryRequest(library="lib"), grpc.StatusCode.INVALID_ARGUMENT, "model must be set")
    await refused(pb.ReindexLibraryRequest(model=TO), grpc.StatusCode.INVALID_ARGUMENT, "library must be set")
    await refused(
        pb.ReindexLibraryRequest(library="lib", model=TO, window_seconds=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "window_seconds",
    )
    await refused(
        pb.ReindexLibraryRequest(library="lib", model=TO, window_seconds=1, hop_seconds=2),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most the window",
    )
    await refused(
        pb.ReindexLibraryRequest(library="lib", model=FROM, window_seconds=5),
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot change only the window or hop",
    )
    assert (await library(stack)).model == FROM
    last = (await reindex(stack.gateway, "lib", TO, window_seconds=1.5, hop_seconds=0.75))[-1]
    lib = await library(stack)
    assert last.outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED
    assert (lib.model, lib.window_seconds, lib.hop_seconds) == (TO, 1.5, 0.75)


def _settings(request: pb.ReindexLibraryRequest) -> dict[str, float]:
    return {"window_seconds": request.window_seconds, "hop_seconds": request.hop_seconds}


async def test_only_an_admin_may_reindex(tmp_path: Path) -> None:
    from tests.test_auth import TOKENS_TOML, bearer

    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS_TOML)
    stack = await start_stack(tmp_path, auth_tokens_file=str(tokens))
    try:
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="lib-a", model=FROM), metadata=bearer("admin"))
        request = pb.ReindexLibraryRequest(library="lib-a", model=TO)
        call = stack.gateway.ReindexLibrary(request, metadata=bearer("alice"))  # alice writes lib-a only
        await expect_code(_drain(call), grpc.StatusCode.PERMISSION_DENIED, "write access to every library")
        messages = [m async for m in stack.gateway.ReindexLibrary(request, metadata=bearer("admin"))]
        assert messages[-1].outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED
    finally:
        await stop_stack(stack)


async def _drain(call) -> None:  # type: ignore[no-untyped-def]
    async for _ in call:
        pass


async def test_the_cli_moves_a_library(stack, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    items = await populate(stack, n=3)
    monkeypatch.setenv("AUDIOSEARCH_GATEWAY", stack.address("gateway"))
    monkeypatch.delenv("AUDIOSEARCH_TOKEN", raising=False)

    def run(*args: str) -> tuple[int, dict]:
        code = cli.main(["reindex", *args, "--json"])
        return code, json.loads(capsys.readouterr().out)

    code, doc = await asyncio.to_thread(run, "--library", "lib", "--model", "nope")
    assert code == 1 and doc["error"]["code"] == "INVALID_ARGUMENT" and "unknown model" in doc["error"]["message"]
    code, doc = await asyncio.to_thread(run, "--library", "lib", "--model", TO)
    assert code == 0, doc
    assert (doc["outcome"], doc["previous_model"], doc["library"]["model"]) == ("switched", FROM, TO)
    assert (doc["total"], doc["reindexed"], doc["skipped"], doc["failed"]) == (3, 3, 0, [])
    code, doc = await asyncio.to_thread(run, "--library", "lib", "--model", TO)
    assert (code, doc["outcome"]) == (0, "unchanged")

    # An item that cannot be re-embedded: listed, exit status 1, no switch.
    (stack.data_dir / "audio" / b"lib".hex() / str(items[1].id)).unlink()
    code, doc = await asyncio.to_thread(run, "--library", "lib", "--model", FROM)
    assert code == 1 and doc["error"]["code"] == "FAILED_PRECONDITION"
    assert [f["id"] for f in doc["failed"]] == [items[1].id] and "no kept upload" in doc["failed"][0]["reason"]
    assert (await library(stack)).model == TO
    # Human output: the summary on stdout.
    code = await asyncio.to_thread(cli.main, ["reindex", "--library", "lib", "--model", TO])
    out = capsys.readouterr()
    assert code == 0 and "library lib already uses spectral-v1" in out.out
    with pytest.raises(SystemExit) as usage:  # --model is required: a usage error
        cli.main(["reindex", "--library", "lib"])
    assert usage.value.code == 2


# The catalog's model change, on SQLite, PostgreSQL and MariaDB.


def test_the_catalog_switches_a_library_in_one_step(database_url: str) -> None:  # noqa: F811 - the fixture
    engine = make_engine(database_url)
    migrate(engine)
    catalog = Catalog(engine)
    catalog.create_library("lib", FROM, 1 << 28, "kept", window_seconds=2.0, hop_seconds=0.5)
    change = ModelChange(TO, 192, 1.5, 0.1)
    with pytest.raises(FailedPrecondition, match="not moving to 'spectral-v1': no change is pending"):
        catalog.finish_model_change("lib", TO)
    with pytest.raises(FailedPrecondition, match="already uses fingerprint-v1"):
        catalog.start_model_change("lib", ModelChange(FROM, 1 << 28, 2.0, 0.5))
    with pytest.raises(NotFound):
        catalog.start_model_change("nolib", change)
    with pytest.raises(InvalidArgument):
        catalog.start_model_change("lib", ModelChange("", 192, 2.0, 0.5))
    assert catalog.start_model_change("lib", change) == (False, None)
    assert catalog.start_model_change("lib", change) == (True, None)  # the same again: resumed
    other = ModelChange("panns-cnn14", 2048, 10.0, 5.0)
    replaced, previous = catalog.start_model_change("lib", other)
    assert not replaced and previous is not None and previous.same(change)  # single-precision floats on MySQL
    assert catalog.get_library("lib").model_name == FROM  # nothing switches before the finish
    with pytest.raises(FailedPrecondition, match="a change to panns-cnn14 is pending"):
        catalog.finish_model_change("lib", TO)
    assert catalog.start_model_change("lib", change) == (False, other)

    lib = catalog.finish_model_change("lib", TO)
    assert (lib.model_name, lib.model_dim, lib.description) == (TO, 192, "kept")
    assert (lib.window_seconds, lib.hop_seconds) == pytest.approx((1.5, 0.1))
    assert catalog.get_library("lib") == lib
    assert catalog.finish_model_change("lib", TO) == lib  # a retry finds it done
    assert catalog.cancel_model_change("lib") is None
    catalog.start_model_change("lib", ModelChange(FROM, 1 << 28, 2.0, 0.5))
    cancelled = catalog.cancel_model_change("lib")
    assert cancelled is not None and cancelled.model_name == FROM
    assert catalog.cancel_model_change("lib") is None
    assert catalog.get_library("lib").model_name == TO
    engine.dispose()


def test_libraries_stored_before_the_change_keep_working(database_url: str) -> None:  # noqa: F811
    engine = make_engine(database_url)
    migrate(engine, "0003")
    with engine.begin() as conn:  # a library written by the 0003 schema
        conn.execute(
            text(
                "INSERT INTO library (name, model_name, model_dim, description, created_at, window_seconds, hop_seconds)"
                " VALUES ('old', 'fingerprint-v1', 268435456, '', '2026-01-01 00:00:00', 2.0, 0.5)"
            )
        )
    migrate(engine)  # what the catalog does at start-up
    catalog = Catalog(engine)
    assert catalog.cancel_model_change("old") is None  # no move in progress
    catalog.start_model_change("old", ModelChange(TO, 192, 2.0, 0.5))
    assert catalog.finish_model_change("old", TO).model_name == TO
    engine.dispose()


# The vector store's staging collections, on Milvus Lite.


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_staging_collections_in_the_vector_store(tmp_path: Path) -> None:
    store = MilvusStore(str(tmp_path / "milvus" / "m.db"))
    try:
        store.create("lib", "old", 4)
        store.upsert("lib", "old", 4, [WindowVector(i, 0, 0.0, unit(i, 4)) for i in (1, 2, 3)])
        with pytest.raises(InvalidArgument, match="is for new"):
            store.create("lib@new", "other", 8)
        assert store.create("lib@new", "new", 8)
        store.upsert("lib@new", "new", 8, [WindowVector(i, 0, 0.0, unit(i)) for i in (1, 2)])
        # The library's own collection serves; the staging one is not listed.
        assert [(s.library, s.model, s.items) for s in store.stats()] == [("lib", "old", 3)]
        assert store.item_ids("lib@new") == [1, 2] and store.item_ids("lib") == [1, 2, 3]
        assert store.delete("lib", [2]) == 1  # from both
        assert store.item_ids("lib@new") == [1] and store.item_ids("lib") == [1, 3]
        # A request naming the new model (the catalog has switched) is served from the staging collection.
        ((hit,),) = store.search("lib", "new", 8, [unit(1)], 1)
        assert hit.item_id == 1
        with pytest.raises(FailedPrecondition, match="cannot be mixed"):
            store.search("lib", "third", 8, [unit(1)], 1)
        store.upsert("lib", "new", 8, [WindowVector(3, 0, 0.0, unit(3))])
        assert store.item_ids("lib@new") == [1, 3]
        # Creating the library's collection for the new model adopts it; the old one is dropped.
        assert store.create("lib", "new", 8)
        assert not store.create("lib", "new", 8)
        assert [(s.library, s.model, s.dim, s.items) for s in store.stats()] == [("lib", "new", 8, 2)]
        assert [w.vector.shape for w in store.get("lib", 1)] == [(8,)]
        with pytest.raises(NotFound):
            store.item_ids("lib@new")

        # Stopped between dropping the old collection and renaming the staging
        # one: the next create (repair's, for a library without a collection) finishes it.
        store.create("lib@newer", "newer", 4)
        store.upsert("lib@newer", "newer", 4, [WindowVector(1, 0, 0.0, unit(1, 4))])
        store.client.drop_collection(collection_name("lib"))
        store._bindings.clear()
        assert store.stats() == []
        assert store.create("lib", "newer", 4)
        assert store.item_ids("lib") == [1] and staging_name("lib", "newer") not in store.client.list_collections()

        # Dropping a library drops its staging collections too.
        store.create("lib@again", "again", 4)
        assert store.drop("lib")
        assert [n for n in store.client.list_collections() if n.startswith(("lib_", "stage_"))] == []
    finally:
        store.close()


async def test_a_move_on_a_milvus_server_stays_in_its_database(tmp_path: Path, milvus_server) -> None:  # noqa: F811  # type: ignore[no-untyped-def]
    uri, admin = milvus_server
    settings = {"milvus_uri": uri, "milvus_token": "root:Milvus", "milvus_db_name": "audio", "index_type": "HNSW"}
    stack = await start_stack(tmp_path, search_overrides=settings)
    try:
        items = await populate(stack, n=3)
        last = (await reindex(stack.gateway, "lib", TO))[-1]
        assert last.outcome == OUTCOME.REINDEX_OUTCOME_SWITCHED and last.reindexed_items == 3
        for seed, item in items.items():
            assert await top(stack, seed) == item.id
    finally:
        await stop_stack(stack)
    admin.use_database("audio")
    assert admin.list_collections() == [collection_name("lib")]
    assert admin.describe_collection(collection_name("lib"))["properties"]["audiosearch.model"] == TO
    admin.use_database("default")
    assert collection_name("lib") not in admin.list_collections()
