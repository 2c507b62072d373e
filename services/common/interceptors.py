"""The interceptors every server has around its servicers: one counts,
times and traces every RPC, outside the error mapping so it sees the status
each call ended with; one sheds load beyond AUDIOSEARCH_MAX_CONCURRENT_RPCS,
inside the mapping so a refusal is a counted RESOURCE_EXHAUSTED. Health
checks and reflection are never refused: a busy server must still answer
its probes, or Kubernetes restarts it and drops every call in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from services.common import tracing
from services.common.errors import ResourceExhausted
from services.common.metrics import Metrics
from services.common.status import rewrap

# Probes and reflection: counted, never refused, not worth a trace each.
INFRASTRUCTURE = ("/grpc.health.", "/grpc.reflection.")

# The code names go-grpc-prometheus exports (Go's codes.Code.String()), so
# its dashboards and alerts match these series.
GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code(exc: BaseException | None, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if exc is None:
        return context.code() or grpc.StatusCode.OK  # type: ignore[return-value]
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the call ended under us
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[return-value]
    return grpc.StatusCode.UNKNOWN


@contextlib.contextmanager
def _attached(ctx: otel_context.Context | None) -> Iterator[None]:
    token = None if ctx is None else otel_context.attach(ctx)
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


def _wrappers(
    observed: Callable[[grpc.aio.ServicerContext], contextlib.AbstractContextManager[otel_context.Context | None]],
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Wrappers running `observed` around a call. The span's context is
    made current around each step of the servicer, never across a `yield`:
    a stream may be closed later, from another context."""

    def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with observed(context) as ctx, _attached(ctx):
                return await behavior(request, context)

        return wrapper

    def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with observed(context) as ctx:
                responses = behavior(request, context)
                try:
                    while True:
                        with _attached(ctx):
                            try:
                                response = await responses.__anext__()
                            except StopAsyncIteration:
                                return
                        yield response
                finally:
                    await responses.aclose()

        return wrapper

    return unary, streaming


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, tracer: Tracer | None) -> None:
        self.metrics, self.tracer = metrics, tracer

    @contextlib.contextmanager
    def _observed(
        self, method: str, kind: str, context: grpc.aio.ServicerContext
    ) -> Iterator[otel_context.Context | None]:
        service, name = tracing.split_method(method)
        labels = (service, name, kind)
        self.metrics.started.labels(*labels).inc()
        span = None
        if self.tracer is not None and not method.startswith(INFRASTRUCTURE):
            span = self.tracer.start_span(
                method.lstrip("/"),
                context=tracing.incoming_context(context.invocation_metadata()),
                kind=SpanKind.SERVER,
                attributes=tracing.rpc_attributes(method),
            )
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield None if span is None else trace.set_span_in_context(span)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            code = _code(failure, context)
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
            self.metrics.handled.labels(*labels, GO_CODE_NAMES.get(code, code.name)).inc()
            if span is not None:
                tracing.set_code(span, code)
                span.end()

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method, kind = handler_call_details.method, _kind(handler)
        unary, streaming = _wrappers(lambda context: self._observed(method, kind, context))
        return rewrap(handler, unary, streaming)


class ConcurrencyLimit(grpc.aio.ServerInterceptor):
    """At most `limit` application RPCs at once; the rest are refused at
    once with RESOURCE_EXHAUSTED, so a caller backs off instead of queueing
    into a timeout. (grpc's own `maximum_concurrent_rpcs` would count the
    health probes too, and refuse before any interceptor could count it.)"""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0

    @contextlib.contextmanager
    def _slot(self, context: grpc.aio.ServicerContext) -> Iterator[None]:
        if self.active >= self.limit:
            raise ResourceExhausted(
                f"server busy: {self.active} calls in progress (AUDIOSEARCH_MAX_CONCURRENT_RPCS={self.limit}); "
                "retry with backoff"
            )
        self.active += 1
        try:
            yield None
        finally:
            self.active -= 1

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(INFRASTRUCTURE):
            return handler
        unary, streaming = _wrappers(self._slot)
        return rewrap(handler, unary, streaming)
