"""The /v1 routes: each turns a request into the gateway's protobuf
request, calls the gateway over gRPC, and answers the proto3 JSON of its
response (the same fields as the gRPC API). Routes serve only what the
gateway returns: never a path from the request. The gateway's internal
operations (Repair, ReindexLibrary, InsertAudioFromPath) have no route:
they are for operators, through the CLI.

No `from __future__ import annotations` here: the parameter annotations use
the config (top_k's range), which FastAPI could not resolve from strings."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc
from fastapi import FastAPI, File, Form, Query, Request, UploadFile, WebSocket
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf import json_format
from google.protobuf.message import Message

from services.common import reasons
from services.common.chunks import reader_messages
from services.common.jsonview import message_dict
from services.web import monitor, schema
from services.web.config import WebConfig
from services.web.errors import HttpError
from services.web.limits import SETTING, auth, check_upload
from services.web.openapi import errors, responses

# Item ids are int64 in the protos: larger numbers are a 400, not a crash.
ItemId = Annotated[int, FastApiPath(ge=-(2**63), le=2**63 - 1, description="the item's id (int64)")]
LibraryName = Annotated[str, FastApiPath(description="the library's name")]
Call = Callable[[Request, Any, Any], Awaitable[Any]]

MIN_SCORE = (
    "Results scoring below this are dropped. 0 (the default) applies the model's calibrated threshold: "
    "with a fingerprint model a clip whose source is not in the library gets no results. "
    "A negative value keeps every result."
)
UPDATE_BODY = schema.body(pb.UpdateAudioRequest.DESCRIPTOR, "id")
TAGS = "Only items carrying any of these tags, user or automatic (repeat the field); none: every item."


async def parsed(request: Request, message: Message, what: str) -> Any:
    """`message` filled from the request's JSON body (empty: `{}`); 400 when
    it is not `what`."""
    try:
        return json_format.Parse(await request.body() or b"{}", message)
    except (json_format.ParseError, ValueError) as exc:  # ValueError: not UTF-8
        raise HttpError(400, "INVALID_ARGUMENT", f"body is not {what}: {exc}", reason=reasons.INVALID_FIELD) from None


def add_routes(app: FastAPI, gateway: pb_grpc.GatewayServiceStub, config: WebConfig, call: Call) -> None:
    top_k_doc = f"Number of results, 1..{config.max_top_k} (AUDIOSEARCH_MAX_TOP_K, the gateway's setting); default 10."

    async def json(request: Request, rpc: Any, message: Any) -> JSONResponse:
        return JSONResponse(message_dict(await call(request, rpc, message)))

    # Libraries

    @app.get("/v1/libraries", responses=responses(pb.ListLibrariesResponse), tags=["libraries"])
    async def list_libraries(request: Request) -> JSONResponse:
        """Every library, with its model."""
        return await json(request, gateway.ListLibraries, pb.ListLibrariesRequest())

    @app.post("/v1/libraries", responses=responses(pb.CreateLibraryResponse, 409), tags=["libraries"])
    async def create_library(request: Request) -> JSONResponse:
        """Body: a JSON `CreateLibraryRequest` (`name`, and optionally `model`,
        `description`, `window_seconds`, `hop_seconds`). `GET /v1/stats` lists
        the models this server offers."""
        message = await parsed(request, pb.CreateLibraryRequest(), "a CreateLibraryRequest")
        return await json(request, gateway.CreateLibrary, message)

    @app.delete("/v1/libraries/{name}", responses=responses(pb.DeleteLibraryResponse, 404, 409), tags=["libraries"])
    async def delete_library(request: Request, name: LibraryName) -> JSONResponse:
        """Deletes the library with all its items, their audio and vectors."""
        return await json(request, gateway.DeleteLibrary, pb.DeleteLibraryRequest(name=name))

    @app.get("/v1/stats", responses=responses(pb.StatsResponse), tags=["libraries"])
    async def stats(request: Request) -> JSONResponse:
        """Counts per library, and the models this server offers (with why one is unavailable)."""
        return await json(request, gateway.Stats, pb.StatsRequest())

    # Items

    @app.post(
        "/v1/libraries/{library}/items", responses=responses(pb.InsertAudioResponse, 404, 409, 413), tags=["items"]
    )
    async def insert(
        request: Request,
        library: LibraryName,
        file: Annotated[UploadFile, File(description=f"an audio file: WAV, FLAC, OGG or MP3, up to {SETTING}")],
        tags: Annotated[list[str], Form(description="user tags (repeat the field); default none")] = [],  # noqa: B006 - FastAPI's form default
    ) -> JSONResponse:
        """Adds a recording, answered once it is indexed (searchable). The same
        content twice in a library answers the existing item (`created` false)."""
        check_upload(file, config.max_upload_bytes)
        name = Path(file.filename or "upload").name  # a label only: never a path to read
        meta = pb.InsertAudioMetadata(library=library, name=name, source_uri=f"upload:{name}", tags=tags)
        messages = reader_messages(file.read, meta, lambda m, c: pb.InsertAudioRequest(metadata=m, chunk=c))
        return await json(request, gateway.InsertAudio, messages)

    @app.get("/v1/libraries/{library}/items", responses=responses(pb.ListAudioResponse, 404), tags=["items"])
    async def list_items(
        request: Request,
        library: LibraryName,
        page_size: Annotated[
            int, Query(ge=0, le=1000, description="items per page, 1..1000; 0 means 100; default 100")
        ] = 100,
        page_token: Annotated[
            str, Query(description="the `next_page_token` of the previous page; empty (the default): the first page")
        ] = "",
        tag: Annotated[str, Query(description="only items carrying this tag; empty (the default): every item")] = "",
    ) -> JSONResponse:
        """The library's items, a page at a time: `next_page_token` is empty on the last page."""
        message = pb.ListAudioRequest(library=library, page_size=page_size, page_token=page_token, tag=tag)
        return await json(request, gateway.ListAudio, message)

    @app.get("/v1/items/{item_id}", responses=responses(pb.GetAudioResponse, 404), tags=["items"])
    async def get_item(request: Request, item_id: ItemId) -> JSONResponse:
        return await json(request, gateway.GetAudio, pb.GetAudioRequest(id=item_id))

    @app.patch(
        "/v1/items/{item_id}",
        responses=responses(pb.UpdateAudioResponse, 404),
        tags=["items"],
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": UPDATE_BODY}}}},
    )
    async def update_item(request: Request, item_id: ItemId) -> JSONResponse:
        """Renames the item and/or adds and removes user tags. Body: JSON with
        any of `name` (the new name; absent keeps it), `add_tags` and
        `remove_tags` (lists; automatic tags stay). Answers the item as it
        is afterwards; 400 for an empty or too long name, a bad tag, a tag
        both added and removed, or more than 64 user tags."""
        message = await parsed(request, pb.UpdateAudioRequest(), "an item update")
        if message.id not in (0, item_id):
            raise HttpError(
                400,
                "INVALID_ARGUMENT",
                "the body's id differs from the path's: leave it out",
                reason=reasons.CONFLICTING_FIELDS,
                violations=[("id", "differs from the path's id")],
            )
        message.id = item_id
        return await json(request, gateway.UpdateAudio, message)

    @app.delete("/v1/items/{item_id}", responses=responses(pb.DeleteAudioResponse, 404), tags=["items"])
    async def delete_item(request: Request, item_id: ItemId) -> JSONResponse:
        return await json(request, gateway.DeleteAudio, pb.DeleteAudioRequest(id=item_id))

    @app.get(
        "/v1/items/{item_id}/audio",
        tags=["items"],
        response_class=StreamingResponse,
        responses={200: {"content": {"audio/wav": {}}, "description": "the stretch, as WAV"}, **errors(404)},
    )
    async def audio(
        request: Request,
        item_id: ItemId,
        start: Annotated[float, Query(ge=0, description="seconds from the item's start; default 0")] = 0.0,
        end: Annotated[float, Query(ge=0, description="seconds; 0 (the default): the end of the item")] = 0.0,
    ) -> StreamingResponse:
        """The item's audio from `start` to `end` (at most 600 s), for an audio element."""
        stream = gateway.GetAudioSegment(
            pb.GetAudioSegmentRequest(id=item_id, start_seconds=start, end_seconds=end),
            timeout=config.rpc_timeout_seconds,
            metadata=auth(request),
        )
        try:
            first = await stream.read()  # errors become JSON before any audio is sent
        except grpc.aio.AioRpcError as exc:
            raise HttpError.from_rpc(exc) from None
        if first is grpc.aio.EOF:
            raise HttpError(500, "INTERNAL", "the gateway sent no audio")

        async def body() -> AsyncIterator[bytes]:
            yield first.chunk
            while (message := await stream.read()) is not grpc.aio.EOF:
                yield message.chunk

        headers = {
            # A length lets the audio element know the duration before the last byte.
            "Content-Length": str(first.total_bytes),
            "X-Segment-Start": f"{first.start_seconds:.6f}",
            "X-Segment-End": f"{first.end_seconds:.6f}",
        }
        return StreamingResponse(body(), media_type=first.content_type or "audio/wav", headers=headers)

    # Search

    @app.post("/v1/libraries/{library}/search", responses=responses(pb.SearchAudioResponse, 404, 413), tags=["search"])
    async def search(
        request: Request,
        library: LibraryName,
        file: Annotated[UploadFile, File(description="the query clip")],
        top_k: Annotated[int, Form(ge=1, le=config.max_top_k, description=top_k_doc)] = 10,
        min_score: Annotated[float, Form(description=MIN_SCORE)] = 0.0,
        tags: Annotated[list[str], Form(description=TAGS)] = [],  # noqa: B006
    ) -> JSONResponse:
        """The library's items most similar to the clip, best first, each with the
        matching stretch of the item and of the clip."""
        check_upload(file, config.max_upload_bytes)
        params = pb.SearchParams(library=library, top_k=top_k, min_score=min_score, tags=tags)
        messages = reader_messages(file.read, params, lambda p, c: pb.SearchAudioRequest(params=p, chunk=c))
        return await json(request, gateway.SearchAudio, messages)

    @app.get("/v1/items/{item_id}/similar", responses=responses(pb.SearchAudioResponse, 404), tags=["search"])
    async def similar(
        request: Request,
        item_id: ItemId,
        top_k: Annotated[int, Query(ge=1, le=config.max_top_k, description=top_k_doc)] = 10,
        min_score: Annotated[float, Query(description=MIN_SCORE)] = 0.0,
        tags: Annotated[list[str], Query(description=TAGS)] = [],  # noqa: B006
    ) -> JSONResponse:
        """More like this: the items of the item's library most similar to it
        (the item itself left out), as a search with the item as the clip."""
        params = pb.SearchParams(item_id=item_id, top_k=top_k, min_score=min_score, tags=tags)

        async def messages() -> AsyncIterator[pb.SearchAudioRequest]:
            yield pb.SearchAudioRequest(params=params)

        return await json(request, gateway.SearchAudio, messages())

    # Monitoring (services/web/monitor.py, docs/monitoring.md)

    ndjson = {"application/x-ndjson": {"schema": {"type": "string"}}}

    @app.post(
        "/v1/libraries/{library}/monitor",
        tags=["monitor"],
        response_class=StreamingResponse,
        responses={200: {"content": ndjson, "description": monitor.NDJSON_DOC}, **errors(404, 413)},
    )
    async def monitor_file(
        request: Request,
        library: LibraryName,
        file: Annotated[UploadFile, File(description=f"a recording: WAV, FLAC, OGG or MP3, up to {SETTING}")],
        min_score: Annotated[float, Form(description="the confidence a match needs; 0: the library's own")] = 0.0,
    ) -> StreamingResponse:
        """Every occurrence of the library's items in the recording (a library
        of a landmark fingerprint model, fingerprint-v2), as NDJSON: one JSON
        object per event as the gateway finds it, the summary last. An error
        before the first event is an error answer; one after it, a last line
        `{"error": ...}`. Live audio: the WebSocket `/v1/libraries/{library}/monitor/live`
        (docs/web.md)."""
        check_upload(file, config.max_upload_bytes)
        name = Path(file.filename or "upload").name
        rate, channels, kind, blocks = monitor.decoder(file.file, name)
        start = pb.MonitorStart(
            library=library, sample_rate=rate, channels=channels, sample_type=kind, min_score=min_score
        )
        call = gateway.Monitor(metadata=auth(request))
        writer = asyncio.create_task(monitor.send_file(call, start, blocks))
        return StreamingResponse(await monitor.ndjson(call, writer), media_type="application/x-ndjson")

    @app.websocket("/v1/libraries/{library}/monitor/live")
    async def monitor_live(websocket: WebSocket, library: str) -> None:
        await monitor.live(websocket, gateway, library)
