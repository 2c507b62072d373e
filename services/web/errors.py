"""The one mapping of gRPC status codes to HTTP statuses (the table Google's
API design guide and grpc-gateway use), and the JSON body of every error:
the code, message and HTTP status, and what the gateway's rich status adds
(its ErrorInfo `reason`, its BadRequest `field_violations`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from services.common.status import details_of

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Statuses this service raises itself, before the gateway is called.
HTTP_CODE_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}


class HttpError(Exception):
    """An error answered as `status` with a JSON body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        reason: str | None = None,
        violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.reason, self.violations = reason, tuple(violations)

    @classmethod
    def from_rpc(cls, exc: grpc.aio.AioRpcError) -> HttpError:
        code = exc.code()
        details = details_of(exc)
        return cls(
            HTTP_STATUS.get(code, 500),
            code.name,
            exc.details() or code.name,
            reason=details.reason,
            violations=details.violations,
        )

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "http_status": self.status}
        if self.reason:
            error["reason"] = self.reason
        if self.violations:
            error["field_violations"] = [{"field": f, "description": d} for f, d in self.violations]
        return {"error": error}
