"""Every `audiosearch ... --json` prints the same fields as the HTTP API
(both go through services/common/jsonview.py), default-valued fields
included: checked against a real stack and the real web service. The one
difference, on purpose: the HTTP API keeps proto3's JSON mapping (int64
ids and counts as strings), the CLI prints them as numbers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.cli import main as cli
from tests.sounds import encode, sound
from tests.web_server import web_server

Cli = Callable[..., Awaitable[Any]]  # audiosearch(*args): the --json document it printed


def same(cli_doc: Any, http_doc: Any) -> bool:
    """Equal, but where the HTTP API has an int64 as a numeric string the
    CLI has that integer as a number (and only there)."""
    if isinstance(http_doc, dict):
        return (
            isinstance(cli_doc, dict)
            and cli_doc.keys() == http_doc.keys()
            and all(same(cli_doc[k], http_doc[k]) for k in http_doc)
        )
    if isinstance(http_doc, list):
        return isinstance(cli_doc, list) and len(cli_doc) == len(http_doc) and all(map(same, cli_doc, http_doc))
    if isinstance(http_doc, str) and http_doc.lstrip("-").isdigit() and not isinstance(cli_doc, str):
        return type(cli_doc) is int and cli_doc == int(http_doc)
    return type(cli_doc) is type(http_doc) and cli_doc == http_doc


@pytest.fixture
async def web(stack):  # type: ignore[no-untyped-def]
    async with web_server(stack.address("gateway")) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        yield client


@pytest.fixture
def audiosearch(stack, monkeypatch, capsys) -> Cli:  # type: ignore[no-untyped-def]
    """Runs the CLI against the stack; returns what it printed, parsed."""
    monkeypatch.setenv("AUDIOSEARCH_GATEWAY", stack.address("gateway"))
    monkeypatch.delenv("AUDIOSEARCH_TOKEN", raising=False)

    async def run(*args: str) -> Any:
        capsys.readouterr()
        # The CLI is synchronous: run it beside the event loop serving the stack.
        assert await asyncio.to_thread(cli.main, [*args, "--json"]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    return run


async def test_libraries_json_is_what_the_http_api_answers(web: httpx.AsyncClient, audiosearch: Cli) -> None:
    # One library with every optional field at its default (no description,
    # the model's own window and hop), one with them all set.
    plain = await web.post("/v1/libraries", json={"name": "plain", "model": "spectral-v1"})
    assert plain.status_code == 200, plain.text
    full = {"name": "full", "model": "spectral-v1", "description": "set", "window_seconds": 2.0, "hop_seconds": 1.0}
    assert (await web.post("/v1/libraries", json=full)).status_code == 200

    served = (await web.get("/v1/libraries")).json()["libraries"]
    assert [lib["name"] for lib in served] == ["full", "plain"]
    assert served[1]["description"] == ""  # a default-valued field, present in the HTTP API's JSON
    assert same(await audiosearch("libraries"), served)


async def test_item_and_stats_json_are_what_the_http_api_answers(web: httpx.AsyncClient, audiosearch: Cli) -> None:
    assert (await web.post("/v1/libraries", json={"name": "lib", "model": "spectral-v1"})).status_code == 200
    upload = await web.post("/v1/libraries/lib/items", files={"file": ("a.flac", encode(sound(1, 3.0), fmt="FLAC"))})
    assert upload.status_code == 200, upload.text
    item_id = upload.json()["item"]["id"]

    assert isinstance(item_id, str)  # the HTTP API: proto3's JSON mapping
    item = await audiosearch("get", item_id)
    assert item["id"] == int(item_id)  # the CLI: a number
    assert same(item, (await web.get(f"/v1/items/{item_id}")).json()["item"])
    assert same(await audiosearch("ls", "--library", "lib"), (await web.get("/v1/libraries/lib/items")).json()["items"])
    stats = await audiosearch("stats")
    assert stats["libraries"][0]["items"] == 1
    assert same(stats, (await web.get("/v1/stats")).json())
