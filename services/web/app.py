"""The HTTP/JSON API: each route turns a request into the gateway's
protobuf request, calls the gateway over gRPC, and answers the proto3 JSON
of its response (the same fields as the gRPC API). Errors are JSON, with
the HTTP status of the gRPC code (services/web/errors.py). Routes serve
only what the gateway returns: never a path from the request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import grpc
import swagger_ui_bundle
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.chunks import reader_messages
from services.common.jsonview import message_dict
from services.common.text import bounded, quoted
from services.web import schema
from services.web.config import WebConfig
from services.web.errors import HTTP_CODE_NAMES, HttpError

STATIC = Path(__file__).with_name("static")
# Item ids are int64 in the protos: larger numbers are a 400, not a crash.
ItemId = Annotated[int, FastApiPath(ge=-(2**63), le=2**63 - 1)]
# gRPC metadata is printable ASCII within 8 KiB in all: a longer or odd
# header would fail the call (INTERNAL, RESOURCE_EXHAUSTED) instead of saying why.
MAX_AUTHORIZATION = 4096

log = logging.getLogger(__name__)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"description": "error", "content": {"application/json": {"schema": schema.ERROR_REF}}},
    "5XX": {"description": "error", "content": {"application/json": {"schema": schema.ERROR_REF}}},
}


def _responses(message: type[Message]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answer of a route: the proto message's schema, and the error body."""
    return {200: {"content": {"application/json": {"schema": schema.ref(message.DESCRIPTOR)}}}, **ERROR_RESPONSES}


def _check_upload(upload: UploadFile, limit: int) -> None:
    """An empty or oversized file part is refused before the gateway is called."""
    what = quoted(upload.filename) if upload.filename else "the upload"
    if upload.size is not None and upload.size > limit:
        raise HttpError(413, "RESOURCE_EXHAUSTED", f"{what} is larger than the {limit}-byte upload limit")
    if upload.size == 0:
        raise HttpError(400, "INVALID_ARGUMENT", f"{what} is empty")


def _auth(request: Request) -> tuple[tuple[str, str], ...] | None:
    """The caller's bearer token, passed on to the gateway."""
    token = request.headers.get("authorization")
    if not token:
        return None
    if len(token) > MAX_AUTHORIZATION or not (token.isascii() and token.isprintable()):
        raise HttpError(
            401,
            "UNAUTHENTICATED",
            f"the authorization header must be at most {MAX_AUTHORIZATION} printable ASCII characters",
        )
    return (("authorization", token),)


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413, from its
    Content-Length at once, else while it arrives: the multipart parser
    would otherwise spool any size to disk before a route could look."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self.refuse(scope, receive, send)
            return
        seen, exceeded, answered = 0, False, False

        async def counted() -> Any:
            # Past the limit the app is told the client left, so it stops reading.
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                exceeded = True
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: Any) -> None:
            # Whatever the app answers to the cut-off body is replaced by the 413.
            nonlocal answered
            if not exceeded:
                await send(message)
            elif not answered:
                answered = True
                await self.refuse(scope, receive, send)

        await self.app(scope, counted, guarded)
        if exceeded and not answered:
            await self.refuse(scope, receive, send)

    async def refuse(self, scope: Any, receive: Any, send: Any) -> None:
        error = HttpError(413, "RESOURCE_EXHAUSTED", f"the request is larger than the {self.limit}-byte upload limit")
        await JSONResponse(error.body(), status_code=413)(scope, receive, send)


def create_app(config: WebConfig, channel: grpc.aio.Channel) -> FastAPI:
    app = FastAPI(
        title="audiosearch",
        version="1",
        summary="Find the recordings most similar to a sound: the HTTP/JSON face of audiosearch.gateway.v1.",
        docs_url=None,
        redoc_url=None,
    )
    gateway = pb_grpc.GatewayServiceStub(channel)

    async def call(request: Request, rpc: Any, message: Any) -> Any:
        try:
            return await rpc(message, timeout=config.rpc_timeout_seconds, metadata=_auth(request))
        except grpc.aio.AioRpcError as exc:
            raise HttpError.from_rpc(exc) from None

    @app.exception_handler(HttpError)
    async def http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse(HttpError(400, "INVALID_ARGUMENT", problems).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, unparsable multipart bodies: the same JSON as every error.
        message = f"no route {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        code = HTTP_CODE_NAMES.get(exc.status_code, "INVALID_ARGUMENT" if exc.status_code < 500 else "INTERNAL")
        return JSONResponse(HttpError(exc.status_code, code, message).body(), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        body = HttpError(500, "INTERNAL", bounded(f"internal error: {type(exc).__name__}: {exc}")).body()
        return JSONResponse(body, status_code=500)

    # Libraries

    @app.get("/v1/libraries", responses=_responses(pb.ListLibrariesResponse), tags=["libraries"])
    async def list_libraries(request: Request) -> JSONResponse:
        return JSONResponse(message_dict(await call(request, gateway.ListLibraries, pb.ListLibrariesRequest())))

    @app.post("/v1/libraries", responses=_responses(pb.CreateLibraryResponse), tags=["libraries"])
    async def create_library(request: Request) -> JSONResponse:
        """Body: a JSON `CreateLibraryRequest` (`name`, and optionally `model`,
        `description`, `window_seconds`, `hop_seconds`)."""
        try:
            message = json_format.Parse(await request.body() or b"{}", pb.CreateLibraryRequest())
        except (json_format.ParseError, ValueError) as exc:  # ValueError: not UTF-8
            raise HttpError(400, "INVALID_ARGUMENT", f"body is not a CreateLibraryRequest: {exc}") from None
        return JSONResponse(message_dict(await call(request, gateway.CreateLibrary, message)))

    @app.delete("/v1/libraries/{name}", responses=_responses(pb.DeleteLibraryResponse), tags=["libraries"])
    async def delete_library(request: Request, name: str) -> JSONResponse:
        response = await call(request, gateway.DeleteLibrary, pb.DeleteLibraryRequest(name=name))
        return JSONResponse(message_dict(response))

    # Items

    @app.post("/v1/libraries/{library}/items", responses=_responses(pb.InsertAudioResponse), tags=["items"])
    async def insert(
        request: Request,
        library: str,
        file: Annotated[UploadFile, File(description="an audio file: WAV, FLAC, OGG or MP3")],
        tags: Annotated[list[str], Form(description="user tags (repeat the field)")] = [],  # noqa: B006 - FastAPI's form default
    ) -> JSONResponse:
        _check_upload(file, config.max_upload_bytes)
        name = Path(file.filename or "upload").name  # a label only: never a path to read
        meta = pb.InsertAudioMetadata(library=library, name=name, source_uri=f"upload:{name}", tags=tags)
        messages = reader_messages(file.read, meta, lambda m, c: pb.InsertAudioRequest(metadata=m, chunk=c))
        return JSONResponse(message_dict(await call(request, gateway.InsertAudio, messages)))

    @app.get("/v1/libraries/{library}/items", responses=_responses(pb.ListAudioResponse), tags=["items"])
    async def list_items(
        request: Request,
        library: str,
        page_size: Annotated[int, Query(ge=0, le=1000)] = 100,
        page_token: str = "",
        tag: str = "",
    ) -> JSONResponse:
        message = pb.ListAudioRequest(library=library, page_size=page_size, page_token=page_token, tag=tag)
        return JSONResponse(message_dict(await call(request, gateway.ListAudio, message)))

    @app.get("/v1/items/{item_id}", responses=_responses(pb.GetAudioResponse), tags=["items"])
    async def get_item(request: Request, item_id: ItemId) -> JSONResponse:
        return JSONResponse(message_dict(await call(request, gateway.GetAudio, pb.GetAudioRequest(id=item_id))))

    @app.delete("/v1/items/{item_id}", responses=_responses(pb.DeleteAudioResponse), tags=["items"])
    async def delete_item(request: Request, item_id: ItemId) -> JSONResponse:
        return JSONResponse(message_dict(await call(request, gateway.DeleteAudio, pb.DeleteAudioRequest(id=item_id))))

    @app.get(
        "/v1/items/{item_id}/audio",
        tags=["items"],
        response_class=StreamingResponse,
        responses={200: {"content": {"audio/wav": {}}, "description": "the stretch, as WAV"}, **ERROR_RESPONSES},
    )
    async def audio(
        request: Request,
        item_id: ItemId,
        start: Annotated[float, Query(ge=0, description="seconds from the item's start")] = 0.0,
        end: Annotated[float, Query(ge=0, description="seconds; 0: the end of the item")] = 0.0,
    ) -> StreamingResponse:
        """The item's audio from `start` to `end`, for an audio element."""
        stream = gateway.GetAudioSegment(
            pb.GetAudioSegmentRequest(id=item_id, start_seconds=start, end_seconds=end),
            timeout=config.rpc_timeout_seconds,
            metadata=_auth(request),
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

    @app.post("/v1/libraries/{library}/search", responses=_responses(pb.SearchAudioResponse), tags=["search"])
    async def search(
        request: Request,
        library: str,
        file: Annotated[UploadFile, File(description="the query clip")],
        top_k: Annotated[int, Form(ge=-(2**31), le=2**31 - 1)] = 10,
        min_score: Annotated[float, Form()] = 0.0,
        tags: Annotated[list[str], Form(description="only items with one of these tags")] = [],  # noqa: B006
    ) -> JSONResponse:
        _check_upload(file, config.max_upload_bytes)
        params = pb.SearchParams(library=library, top_k=top_k, min_score=min_score, tags=tags)
        messages = reader_messages(file.read, params, lambda p, c: pb.SearchAudioRequest(params=p, chunk=c))
        return JSONResponse(message_dict(await call(request, gateway.SearchAudio, messages)))

    @app.get("/v1/stats", responses=_responses(pb.StatsResponse), tags=["libraries"])
    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(message_dict(await call(request, gateway.Stats, pb.StatsRequest())))

    # Docs, the page, health

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="docs-assets")
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="audiosearch API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            # 3.0.3: what the bundled Swagger UI (4.x) renders.
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes, openapi_version="3.0.3"
            )
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for message in pb.DESCRIPTOR.message_types_by_name.values():
                schema.add(message, components)
            components["Error"] = schema.ERROR
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes + (1 << 20))  # + the form's other fields
    return app
