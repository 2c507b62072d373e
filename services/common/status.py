"""The one error mapping: domain exceptions to gRPC status codes for
servers (an interceptor), and status codes back to domain exceptions for
clients, so an error raised three services deep reaches the user intact."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common import deadlines, errors
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


def code_for(exc: errors.ServiceError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def from_rpc_error(exc: grpc.RpcError, service: str) -> errors.ServiceError:
    """The domain exception for a failed call to `service`."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    # Bounded: the message is passed on, in this service's own trailer.
    details = bounded((exc.details() if hasattr(exc, "details") else None) or str(code))
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):  # CANCELLED: the peer stopped (drain)
        return errors.Unavailable(f"{service} service unavailable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceeded(f"{service} service did not answer in time")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(details)
    return EXCEPTIONS.get(code, errors.Internal)(details)


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
        await context.abort(code, bounded(exc.message))
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
