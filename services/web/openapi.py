"""The OpenAPI document of the HTTP API: the proto messages as response
schemas (services/web/schema.py), the error statuses each route really
answers (never FastAPI's 422: validation errors are 400 here), and the
bearer token the gateway may ask for."""

from __future__ import annotations

from typing import Any

from audiosearch.gateway.v1 import gateway_pb2 as pb
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from google.protobuf.message import Message

from services.web import schema

# Why each status is answered (the gRPC code behind it: services/web/errors.py).
STATUS_REASONS = {
    400: "INVALID_ARGUMENT or FAILED_PRECONDITION: a bad parameter or body, not audio, a model without weights",
    401: "UNAUTHENTICATED: the gateway wants a bearer token, or the Authorization header is unusable",
    403: "PERMISSION_DENIED: the token may not do this",
    404: "NOT_FOUND: no such library or item",
    409: "ALREADY_EXISTS or ABORTED: the name is taken, or a concurrent change won",
    413: "RESOURCE_EXHAUSTED: the body is over AUDIOSEARCH_MAX_UPLOAD_BYTES",
    429: "RESOURCE_EXHAUSTED: the gateway is at capacity; retry later",
    500: "INTERNAL: a bug; the message says where",
    503: "UNAVAILABLE: a service behind the gateway is down or a model is still loading; retry",
    504: "DEADLINE_EXCEEDED: the gateway did not answer in time",
}
# Every /v1 route can meet these: the token, the gateway's capacity, its health.
COMMON = (400, 401, 403, 429, 500, 503, 504)
BEARER = "bearer"


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route: COMMON and `statuses`, each with the error body."""
    return {
        status: {"description": STATUS_REASONS[status], "content": {"application/json": {"schema": schema.ERROR_REF}}}
        for status in sorted({*COMMON, *statuses})
    }


def responses(message: type[Message], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers of a route: the proto message's schema, and its errors."""
    ok = {"description": "OK", "content": {"application/json": {"schema": schema.ref(message.DESCRIPTOR)}}}
    return {200: ok, **errors(*statuses)}


def document(app: FastAPI) -> dict[str, Any]:
    # 3.0.3: what the bundled Swagger UI (4.x) renders.
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        openapi_version="3.0.3",
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)  # FastAPI's 422 body: never answered here
    for operation in (op for path in doc.get("paths", {}).values() for op in path.values()):
        operation.get("responses", {}).pop("422", None)
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        schema.add(message, schemas)
    schemas["Error"] = schema.ERROR
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "Passed on to the gateway as is; needed only when the gateway has auth on "
            "(AUDIOSEARCH_AUTH_TOKENS_FILE). Without it such a gateway answers 401.",
        }
    }
    # Optional: with auth off the gateway takes calls without a token.
    doc["security"] = [{BEARER: []}, {}]
    return doc
