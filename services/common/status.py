"""The one error mapping: domain exceptions to gRPC status codes for
servers (an interceptor), and status codes back to domain exceptions for
clients, so an error raised three services deep reaches the user intact.

A status also carries the rich details of google.rpc (AIP-193) in the
`grpc-status-details-bin` trailer: a google.rpc.Status holding an ErrorInfo
(the exception's `reason`, domain `reasons.DOMAIN`) and, where a request
field is at fault, a BadRequest field violation. Every INVALID_ARGUMENT and
FAILED_PRECONDITION has a reason (the code's name where the raise site gave
none). `from_rpc_error` reads them back, so the reason the embedder gave a
non-audio upload (NOT_AUDIO) is the one the gateway's client gets."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import deadlines, errors, reasons
from services.common.text import bounded

log = logging.getLogger(__name__)

CODES: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}
EXCEPTIONS: dict[grpc.StatusCode, type[errors.ServiceError]] = {v: k for k, v in CODES.items()}

DETAILS_KEY = "grpc-status-details-bin"
# Codes whose status always names a reason (the code's name at the least).
REASON_REQUIRED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
# UTF-8 bytes of a field violation's description. The rich status repeats
# the message: with it, the trailer stays far below gRPC's 8 KiB metadata limit.
VIOLATION_LIMIT = 256


@dataclasses.dataclass(frozen=True)
class Details:
    """What a status says beyond its code and message: the ErrorInfo reason
    (None: the status has none) and the BadRequest field violations."""

    reason: str | None = None
    violations: tuple[tuple[str, str], ...] = ()  # (field, description)

    @property
    def field(self) -> str | None:
        return self.violations[0][0] if self.violations else None


def code_for(exc: errors.ServiceError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def rich_status(exc: errors.ServiceError, code: grpc.StatusCode, message: str) -> status_pb2.Status | None:
    """The google.rpc.Status of `exc` answered as `code` with `message`
    (both as sent: from_call insists they match), or None when it has
    nothing to add to them."""
    reason = exc.reason or (code.name if code in REASON_REQUIRED else None)
    if reason is None and exc.field is None:
        return None
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason:
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=reasons.DOMAIN))
    if exc.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=bounded(message, VIOLATION_LIMIT)
        )
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status


def details_of(exc: grpc.RpcError) -> Details:
    """The reason and field violations of a failed call (sync or aio), from
    its `grpc-status-details-bin` trailer; empty when there is none, or
    it is unreadable, or it contradicts the call's own code."""
    trailer = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    code = exc.code() if hasattr(exc, "code") else None
    for key, value in trailer or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return Details()
        if code is not None and status.code != code.value[0]:
            return Details()
        return _parse(status)
    return Details()


def _parse(status: status_pb2.Status) -> Details:
    reason: str | None = None
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and reason is None:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or None
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return Details(reason, tuple(violations))


def from_rpc_error(exc: grpc.RpcError, service: str) -> errors.ServiceError:
    """The domain exception for a failed call to `service`, with the reason
    and field the status's details name."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    # Bounded: the message is passed on, in this service's own trailer.
    details = bounded((exc.details() if hasattr(exc, "details") else None) or str(code))
    rich = details_of(exc)
    keep = {"reason": rich.reason, "field": rich.field}
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):  # CANCELLED: the peer stopped (drain)
        return errors.Unavailable(f"{service} service unavailable: {details}", **keep)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceeded(f"{service} service did not answer in time", **keep)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(details, **keep)
    return EXCEPTIONS.get(code, errors.Internal)(details, **keep)


async def call(service: str, awaitable: Awaitable[Any]) -> Any:
    """Awaits a client call, turning a gRPC failure into a domain exception."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc, service) from None


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    # Every message is bounded: it travels in the status trailer, and gRPC
    # refuses metadata past 8 KiB (at random up to its hard limit), so the
    # client would get RESOURCE_EXHAUSTED "Stream removed", not this code.
    if isinstance(exc, errors.ServiceError):
        code = code_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("internal error: %s", exc.message, exc_info=exc)
        message = bounded(exc.message)
        rich = rich_status(exc, code, message)
        if rich is not None:
            await context.abort_with_status(rpc_status.to_status(rich))
        await context.abort(code, message)
    log.exception("unexpected error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, bounded(f"internal error: {type(exc).__name__}: {exc}"))


def _wrap_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        deadlines.set_time_remaining(context.time_remaining())
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status just below
            await _abort(context, exc)

    return wrapper


def _wrap_streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        deadlines.set_time_remaining(context.time_remaining())
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc)

    return wrapper


Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def rewrap(handler: grpc.RpcMethodHandler, unary: Wrap, streaming: Wrap) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped: by `unary` where the method
    answers with one message, by `streaming` where it streams answers.

    The wrappers run inside the call's own task, so a context variable they
    set (the deadline, the principal) reaches the servicer; one set in
    `intercept_service` would not, with grpc.aio."""
    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **common)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **common)
    # A streaming method is an async generator, or a coroutine that writes
    # with context.write() (the health service's Watch): that one is awaited.
    if handler.unary_stream:
        behavior = handler.unary_stream
        wrap = streaming if inspect.isasyncgenfunction(behavior) else unary
        return grpc.unary_stream_rpc_method_handler(wrap(behavior), **common)
    behavior = handler.stream_stream
    wrap = streaming if inspect.isasyncgenfunction(behavior) else unary
    return grpc.stream_stream_rpc_method_handler(wrap(behavior), **common)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions escaping any servicer method to a precise status.
    It is the outermost interceptor, so what inner ones raise (a domain
    exception such as `Unauthenticated`) is mapped the same way."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return rewrap(handler, _wrap_unary, _wrap_streaming)
