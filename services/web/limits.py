"""What the HTTP service refuses before the gateway is called: bodies over
AUDIOSEARCH_MAX_UPLOAD_BYTES (413), empty uploads, unusable Authorization
headers."""

from __future__ import annotations

from typing import Any

from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse

from services.common import reasons
from services.common.config import env_name
from services.common.text import quoted
from services.web.errors import HttpError

# gRPC metadata is printable ASCII within 8 KiB in all: a longer or odd
# header would fail the call (INTERNAL, RESOURCE_EXHAUSTED) instead of saying why.
MAX_AUTHORIZATION = 4096
# What a multipart body may carry beside its file: the form's other fields and boundaries.
FORM_ALLOWANCE = 1 << 20
SETTING = env_name("max_upload_bytes")


def check_upload(upload: UploadFile, limit: int) -> None:
    """An empty or oversized file part is refused before the gateway is called."""
    what = quoted(upload.filename) if upload.filename else "the upload"
    if upload.size is not None and upload.size > limit:
        message = f"{what} is larger than {SETTING}={limit} bytes"
        raise HttpError(413, "RESOURCE_EXHAUSTED", message, reason=reasons.UPLOAD_TOO_LARGE)
    if upload.size == 0:
        raise HttpError(400, "INVALID_ARGUMENT", f"{what} is empty", reason=reasons.EMPTY_UPLOAD)


def auth(request: Request) -> tuple[tuple[str, str], ...] | None:
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
    """Refuses a request body over the upload limit (plus FORM_ALLOWANCE)
    with 413, from its Content-Length at once, else while it arrives: the
    multipart parser would otherwise spool any size to disk before a route
    could look."""

    def __init__(self, app: Any, upload_limit: int) -> None:
        self.app, self.upload_limit = app, upload_limit
        self.limit = upload_limit + FORM_ALLOWANCE

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
        message = (
            f"the request is larger than {SETTING}={self.upload_limit} bytes"
            f" (plus {FORM_ALLOWANCE} bytes for the form's other fields)"
        )
        error = HttpError(413, "RESOURCE_EXHAUSTED", message, reason=reasons.UPLOAD_TOO_LARGE)
        await JSONResponse(error.body(), status_code=413)(scope, receive, send)
