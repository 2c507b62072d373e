"""The HTTP/JSON API: the /v1 routes (services/web/routes.py) over the
gateway's gRPC API, /docs and /openapi.json (services/web/openapi.py), and
the web page (static/). Errors are JSON, with the HTTP status of the gRPC
code (services/web/errors.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import swagger_ui_bundle
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common import reasons
from services.common.text import bounded
from services.web import openapi
from services.web.config import WebConfig
from services.web.errors import HTTP_CODE_NAMES, HttpError
from services.web.limits import BodyLimit, auth
from services.web.routes import add_routes

STATIC = Path(__file__).with_name("static")

log = logging.getLogger(__name__)

DESCRIPTION = """Every route calls the gateway's gRPC API (`audiosearch.gateway.v1.GatewayService`)
and answers the proto3 JSON of its response: the same fields, `.proto` names, int64 ids as strings.
Errors are `{"error": {"code", "message", "http_status", "reason", "field_violations"}}`, with the HTTP
status of the gRPC code; `reason` (docs/clients.md lists them) is what to branch on, `field_violations`
name the fields at fault.
With auth on at the gateway, send `Authorization: Bearer TOKEN` (the Authorize button).
Live monitoring is a WebSocket, outside this document: `/v1/libraries/{library}/monitor/live` (docs/web.md)."""


def create_app(config: WebConfig, channel: grpc.aio.Channel) -> FastAPI:
    app = FastAPI(
        title="audiosearch",
        version="1",
        summary="Find the recordings most similar to a sound: the HTTP/JSON face of audiosearch.gateway.v1.",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    gateway = pb_grpc.GatewayServiceStub(channel)

    async def call(request: Request, rpc: Any, message: Any) -> Any:
        try:
            return await rpc(message, timeout=config.rpc_timeout_seconds, metadata=auth(request))
        except grpc.aio.AioRpcError as exc:
            raise HttpError.from_rpc(exc) from None

    @app.exception_handler(HttpError)
    async def http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc is (where, name...): ("query", "top_k"), ("body", "file").
        violations = [(".".join(map(str, e["loc"][1:] or e["loc"])), str(e["msg"])) for e in exc.errors()]
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        error = HttpError(400, "INVALID_ARGUMENT", problems, reason=reasons.INVALID_FIELD, violations=violations)
        return JSONResponse(error.body(), status_code=400)

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

    add_routes(app, gateway, config, call)

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
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.document(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, upload_limit=config.max_upload_bytes)
    return app
