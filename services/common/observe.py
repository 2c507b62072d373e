"""The server interceptor that counts, times and traces every RPC. It sits
outside the error mapping, so it sees the status each call ended with."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from services.common import tracing
from services.common.metrics import Metrics
from services.common.status import rewrap


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code(exc: BaseException | None, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if exc is None:
        return context.code() or grpc.StatusCode.OK  # type: ignore[return-value]
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED  # the client went away
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[return-value]
    return grpc.StatusCode.UNKNOWN


# Probes and reflection: counted, but not worth a trace each.
UNTRACED = ("/grpc.health.", "/grpc.reflection.")


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, tracer: Tracer | None) -> None:
        self.metrics, self.tracer = metrics, tracer

    @contextlib.contextmanager
    def _observed(self, method: str, kind: str, context: grpc.aio.ServicerContext) -> Iterator[None]:
        service, name = tracing.split_method(method)
        labels = (service, name, kind)
        self.metrics.started.labels(*labels).inc()
        span = None
        if self.tracer is not None and not method.startswith(UNTRACED):
            span = self.tracer.start_span(
                method.lstrip("/"),
                context=tracing.incoming_context(context.invocation_metadata()),
                kind=SpanKind.SERVER,
                attributes=tracing.rpc_attributes(method),
            )
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            if span is None:
                yield
            else:
                # Current for the servicer: its outgoing calls and logs join the trace.
                with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                    yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            code = _code(failure, context)
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
            self.metrics.handled.labels(*labels, code.name).inc()
            if span is not None:
                tracing.set_code(span, code)
                span.end()

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method, kind = handler_call_details.method, _kind(handler)

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with self._observed(method, kind, context):
                    return await behavior(request, context)

            return wrapper

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with self._observed(method, kind, context):
                    async for response in behavior(request, context):
                        yield response

            return wrapper

        return rewrap(handler, unary, streaming)
