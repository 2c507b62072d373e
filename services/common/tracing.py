"""OpenTelemetry traces across the services, switched on by config
(AUDIOSEARCH_TRACING). The context travels in gRPC metadata as a W3C
`traceparent` header: client interceptors on the gateway's channels inject
it, and the server interceptor (services.common.interceptors) continues it, so
one search is one trace: gateway, then embedder, search and catalog.

Off, nothing is installed: no interceptors, no spans, no cost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.config import ServerConfig

log = logging.getLogger(__name__)

INSTRUMENTATION = "audiosearch"
PROPAGATOR = TraceContextTextMapPropagator()

# The provider of this process, None while tracing is off.
_provider: TracerProvider | None = None


def configure(config: ServerConfig, service: str) -> TracerProvider | None:
    """Sets up this process's tracing from `config` (called once, before
    the service is built, because the gateway's channels need it)."""
    if config.tracing == "off":
        install(None)
        return None
    exporter: SpanExporter
    if config.tracing == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = config.otlp_endpoint
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"audiosearch-{service}", "service.namespace": "audiosearch"}),
        sampler=ParentBased(TraceIdRatioBased(config.trace_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info("tracing on: %s", config.otlp_endpoint if config.tracing == "otlp" else "console")
    return provider


def install(provider: TracerProvider | None) -> None:
    """Makes `provider` this process's (tests pass one with an in-memory
    exporter; None switches tracing off). Servers and channels made later
    use it."""
    global _provider
    _provider = provider


def shutdown() -> None:
    """Flushes spans still buffered (on SIGTERM)."""
    if _provider is not None:
        _provider.shutdown()


def tracer() -> Tracer | None:
    return None if _provider is None else _provider.get_tracer(INSTRUMENTATION)


class _MetadataGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()


def incoming_context(metadata: Any) -> Context:
    """The caller's trace context from a call's invocation metadata."""
    carrier = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    return PROPAGATOR.extract(carrier, getter=_GETTER)


def split_method(full: str) -> tuple[str, str]:
    """ "/pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service, method


def rpc_attributes(full_method: str) -> dict[str, str]:
    service, method = split_method(full_method)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def set_code(span: trace.Span, code: grpc.StatusCode) -> None:
    """Records the call's status on its span, as the gRPC conventions say."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


class _ClientSpans:
    """A CLIENT span per outgoing call, its context injected as
    `traceparent`; the span ends when the call does."""

    def __init__(self, tracer: Tracer, peer: str) -> None:
        self._tracer, self._peer = tracer, peer
        self._ending: set[asyncio.Task[None]] = set()

    async def _call(self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        span = self._tracer.start_span(
            method.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={**rpc_attributes(method), "server.address": self._peer.rpartition("/")[2]},
        )
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
        new = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        try:
            call = await continuation(new, request)
        except BaseException:
            span.set_status(Status(StatusCode.ERROR, "call not started"))
            span.end()
            raise
        # code() of an aio call is awaited, so the span is ended by a task.
        task = asyncio.create_task(self._end(call, span))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return call

    @staticmethod
    async def _end(call: Any, span: trace.Span) -> None:
        try:
            set_code(span, await call.code())
        finally:
            span.end()


# grpc.aio files an interceptor under the first kind it implements only,
# so each kind is a class of its own.
class _UnaryUnary(_ClientSpans, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._call(continuation, client_call_details, request)


class _UnaryStream(_ClientSpans, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._call(continuation, client_call_details, request)


class _StreamUnary(_ClientSpans, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await self._call(continuation, client_call_details, request_iterator)


class _StreamStream(_ClientSpans, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await self._call(continuation, client_call_details, request_iterator)


def client_interceptors(peer: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a channel to `peer`: none while tracing is off."""
    current = tracer()
    if current is None:
        return []
    return [kind(current, peer) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
