"""Changing an item after insert, on the real stack: GatewayService.UpdateAudio
(rename, add and remove user tags), `audiosearch tag` / `rename` /
`delete-library`, and PATCH /v1/items/{id}."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli import main as cli
from tests import test_auth
from tests.sounds import encode, sound
from tests.test_auth import bearer, create_libraries
from tests.test_gateway import expect_code, insert_stream, search_stream
from tests.web_server import web_server

# The auth tests' fixtures: a real tokens file, and the stack that reads it.
tokens_file, auth_stack = test_auth.tokens_file, test_auth.auth_stack


async def add(stack, library: str, name: str, seed: int, tags: list[str] | None = None, metadata=()):  # type: ignore[no-untyped-def]
    data = encode(sound(seed, seconds=3.0))
    return (await stack.gateway.InsertAudio(insert_stream(library, name, data, tags), metadata=metadata)).item


async def test_update_audio_renames_and_retags(stack) -> None:  # type: ignore[no-untyped-def]
    g = stack.gateway
    await g.CreateLibrary(pb.CreateLibraryRequest(name="sfx", model="spectral-v1"))
    item = await add(stack, "sfx", "one.wav", 1, ["drums", "kick"])
    other = await add(stack, "sfx", "two.wav", 2)

    updated = (
        await g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, name="Kick 1", add_tags=[" Loud "], remove_tags=["KICK"]))
    ).item
    assert updated.name == "Kick 1" and list(updated.user_tags) == ["drums", "loud"]
    assert (await g.GetAudio(pb.GetAudioRequest(id=item.id))).item == updated
    # Unset name: kept. A tag it has, or lacks: nothing changes.
    same = (await g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, add_tags=["drums"], remove_tags=["absent"]))).item
    assert same.name == "Kick 1" and list(same.user_tags) == ["drums", "loud"]
    # The new tags are what listing and search filter by.
    listed = (await g.ListAudio(pb.ListAudioRequest(library="sfx", tag="loud"))).items
    assert [i.id for i in listed] == [item.id]
    found = await g.SearchAudio(
        search_stream(pb.SearchParams(library="sfx", top_k=5, tags=["kick"], min_score=-1), encode(sound(1, 3.0)))
    )
    assert list(found.results) == []
    # A duplicate upload returns the item as it is: its new name and tags are ignored.
    again = await g.InsertAudio(insert_stream("sfx", "copy.wav", encode(sound(1, seconds=3.0)), ["new"]))
    assert not again.created and again.item.name == "Kick 1" and list(again.item.user_tags) == ["drums", "loud"]

    bad = grpc.StatusCode.INVALID_ARGUMENT
    await expect_code(g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, name="")), bad, "item name")
    await expect_code(g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, name="x" * 513)), bad, "1-512")
    await expect_code(g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, add_tags=["  "])), bad, "invalid tag")
    await expect_code(g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, add_tags=["a\x00b"])), bad, "tag")
    await expect_code(g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, add_tags=["z"], remove_tags=["Z"])), bad, "both")
    await expect_code(
        g.UpdateAudio(pb.UpdateAudioRequest(id=item.id, add_tags=[f"t{i}" for i in range(63)])), bad, "at most 64"
    )
    await expect_code(
        g.UpdateAudio(pb.UpdateAudioRequest(id=987654, name="x")), grpc.StatusCode.NOT_FOUND, "does not exist"
    )
    # Nothing of a refused change was applied.
    assert (await g.GetAudio(pb.GetAudioRequest(id=item.id))).item == updated
    assert list((await g.GetAudio(pb.GetAudioRequest(id=other.id))).item.user_tags) == []


async def test_update_audio_needs_write_access(auth_stack) -> None:  # type: ignore[no-untyped-def]
    g = auth_stack.gateway
    await create_libraries(auth_stack, "lib-a", "lib-b")
    mine = await add(auth_stack, "lib-a", "a.wav", 1, metadata=bearer("alice"))
    theirs = await add(auth_stack, "lib-b", "b.wav", 2, metadata=bearer("admin"))
    tagged = await g.UpdateAudio(pb.UpdateAudioRequest(id=mine.id, add_tags=["ok"]), metadata=bearer("alice"))
    assert list(tagged.item.user_tags) == ["ok"]
    # A library alice may not read: the item does not exist for her.
    details = await expect_code(
        g.UpdateAudio(pb.UpdateAudioRequest(id=theirs.id, name="x"), metadata=bearer("alice")),
        grpc.StatusCode.NOT_FOUND,
        "does not exist",
    )
    assert "lib-b" not in details
    # Read is not write.
    await expect_code(
        g.UpdateAudio(pb.UpdateAudioRequest(id=theirs.id, name="x"), metadata=bearer("reader")),
        grpc.StatusCode.PERMISSION_DENIED,
        "write",
    )
    await expect_code(g.UpdateAudio(pb.UpdateAudioRequest(id=theirs.id, name="x")), grpc.StatusCode.UNAUTHENTICATED)
    assert (await g.GetAudio(pb.GetAudioRequest(id=theirs.id), metadata=bearer("admin"))).item.name == "b.wav"


async def test_cli_tag_rename_and_delete_library(stack, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="sfx", model="spectral-v1"))
    item = await add(stack, "sfx", "one.wav", 1, ["old"])
    await add(stack, "sfx", "two.wav", 2)
    monkeypatch.setenv("AUDIOSEARCH_GATEWAY", stack.address("gateway"))
    monkeypatch.delenv("AUDIOSEARCH_TOKEN", raising=False)

    async def run(*argv: str) -> int:
        return await asyncio.to_thread(cli.main, list(argv))

    assert await run("tag", str(item.id), "--add", "Loud", "--add", "drums", "--remove", "old", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["id"] == item.id and doc["user_tags"] == ["drums", "loud"]
    assert await run("rename", str(item.id), "Kick 1") == 0
    out = capsys.readouterr().out
    assert f"{item.id}: Kick 1 [sfx]" in out and "tags: drums, loud" in out
    assert await run("get", str(item.id), "--json") == 0
    assert json.loads(capsys.readouterr().out)["name"] == "Kick 1"

    assert await run("tag", str(item.id), "--add", " ", "--json") == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "INVALID_ARGUMENT"
    assert await run("rename", "987654", "x") == 1
    assert "NOT_FOUND" in capsys.readouterr().err

    for argv, message in [
        (["delete-library", "sfx"], "add --yes"),
        (["tag", str(item.id)], "--add TAG or --remove TAG"),
        (["rename", str(item.id)], "required"),
    ]:
        with pytest.raises(SystemExit) as usage:
            await run(*argv)
        assert usage.value.code == 2
        assert message in capsys.readouterr().err
    assert len((await stack.gateway.ListAudio(pb.ListAudioRequest(library="sfx"))).items) == 2  # still there

    assert await run("delete-library", "sfx", "--yes") == 0
    assert "deleted library sfx with its 2 items" in capsys.readouterr().out
    assert await run("delete-library", "sfx", "--yes", "--json") == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "NOT_FOUND"
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="empty", model="spectral-v1"))
    assert await run("delete-library", "empty", "--yes", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"library": "empty", "deleted_items": 0}


async def test_http_patch_item(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="sfx", model="spectral-v1"))
    item = await add(stack, "sfx", "one.wav", 1, ["old"])
    async with web_server(stack.address("gateway")) as base, httpx.AsyncClient(base_url=base, timeout=60) as web:
        url = f"/v1/items/{item.id}"
        patched = await web.patch(url, json={"name": "Kick 1", "add_tags": ["Loud"], "remove_tags": ["old"]})
        assert patched.status_code == 200, patched.text
        assert patched.json() == (await web.get(url)).json()
        body = patched.json()["item"]
        assert body["name"] == "Kick 1" and body["user_tags"] == ["loud"] and body["id"] == str(item.id)
        assert (await web.patch(url, json={"add_tags": ["x"]})).json()["item"]["name"] == "Kick 1"

        for response, status, code in [
            (await web.patch("/v1/items/987654", json={"name": "x"}), 404, "NOT_FOUND"),
            (await web.patch(url, json={"name": ""}), 400, "INVALID_ARGUMENT"),
            (await web.patch(url, json={"add_tags": [""]}), 400, "INVALID_ARGUMENT"),
            (await web.patch(url, json={"tags": ["x"]}), 400, "INVALID_ARGUMENT"),  # unknown field
            (await web.patch(url, json=["x"]), 400, "INVALID_ARGUMENT"),
            (await web.patch(url, content=b"{not json"), 400, "INVALID_ARGUMENT"),
            (await web.patch(url, json={"id": "1" if item.id != 1 else "2"}), 400, "INVALID_ARGUMENT"),
        ]:
            assert response.status_code == status, response.text
            assert response.json()["error"]["code"] == code
        assert (await web.get(url)).json()["item"]["user_tags"] == ["loud", "x"]

        spec = (await web.get("/openapi.json")).json()
        operation = spec["paths"]["/v1/items/{item_id}"]["patch"]
        assert {"200", "400", "403", "404"} <= set(operation["responses"])
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == {"name", "add_tags", "remove_tags"}


async def test_an_item_deleted_during_an_update_is_not_found() -> None:
    """Over the in-memory ports: READY when the gateway looked, DELETING when
    the catalog changes it: NOT_FOUND, as for any item that is not ready."""
    import dataclasses

    from services.common.errors import NotFound
    from services.gateway import items
    from services.gateway.ports import DELETING, Backends
    from tests.fakes import FakeEmbedder, MemoryAudio, MemoryCatalog, MemoryVectors

    catalog = MemoryCatalog()
    backends = Backends(embedder=FakeEmbedder(), vectors=MemoryVectors(), catalog=catalog, audio=MemoryAudio())
    await catalog.create_library("lib", "fake-v1", 4, "", 1.0, 1.0)
    item, _ = await catalog.reserve_item("lib", "0" * 64, "a.wav", "", ["x"])
    catalog.items[item.id] = dataclasses.replace(item, state="ready")
    assert (await items.update(backends, item.id, "b.wav", ["y"], ["x"])).user_tags == ["y"]
    get_item = catalog.get_item

    async def seen_ready_then_deleted(item_id: int):  # type: ignore[no-untyped-def]
        found = await get_item(item_id)
        catalog.items[item_id] = dataclasses.replace(found, state=DELETING)
        return found

    catalog.get_item = seen_ready_then_deleted  # type: ignore[method-assign]
    with pytest.raises(NotFound, match="not ready"):
        await items.update(backends, item.id, add_tags=["z"])
