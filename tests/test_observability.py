"""Metrics, traces and logs of the real in-process services: every service's
/metrics page has the RPC and store series, one search is one trace from
the gateway through embedder, search and catalog, and log lines are JSON
with the trace id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import grpc
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.common import config as cfg
from services.common import logs, server, tracing
from services.common.channels import LOCAL_SUBCHANNELS
from services.common.config import ConfigError, ServerConfig
from services.common.metrics import Metrics
from tests.conftest import start_stack, stop_stack
from tests.metrics_page import scrape, total
from tests.sounds import encode, excerpt, sound
from tests.test_gateway import expect_code, insert_stream, search_stream

GATEWAY = "audiosearch.gateway.v1.GatewayService"
METRICS = {"metrics_listen": "127.0.0.1:0"}


async def index_two(stack) -> bytes:  # type: ignore[no-untyped-def]
    """A spectral-v1 library (windowed, so batched) of two sounds; returns a query clip."""
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="obs", model="spectral-v1"))
    for seed in range(2):
        data = encode(sound(seed, seconds=4.0), fmt="WAV")
        assert (await stack.gateway.InsertAudio(insert_stream("obs", f"s{seed}.wav", data))).created
    return encode(excerpt(sound(1, seconds=4.0), 1.0, 3.0), fmt="WAV")


async def test_every_service_serves_its_series(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path, base_overrides=METRICS)
    try:
        clip = await index_two(stack)
        response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="obs", top_k=2), clip))
        assert response.results[0].item.name == "s1.wav"
        await expect_code(
            stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="obs", top_k=-1), clip)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        pages = {name: await asyncio.to_thread(scrape, running.metrics_port) for name, running in stack.servers.items()}
    finally:
        await stop_stack(stack)

    for name, page in pages.items():
        service = f"audiosearch.{name}.v1.{name.capitalize()}Service"
        assert total(page["grpc_server_started_total"], grpc_service=service) > 0, name
        assert total(page["grpc_server_handled_total"], grpc_service=service, grpc_code="OK") > 0, name
        assert total(page["grpc_server_handling_seconds_count"], grpc_service=service) > 0, name
        assert total(page["process_resident_memory_bytes"]) > 0

    gateway = pages["gateway"]
    handled = gateway["grpc_server_handled_total"]
    assert total(handled, grpc_method="SearchAudio", grpc_code="OK", grpc_type="client_stream") == 1
    assert total(handled, grpc_method="SearchAudio", grpc_code="InvalidArgument") == 1
    assert total(handled, grpc_method="InsertAudio", grpc_code="OK") == 2
    latency = gateway["grpc_server_handling_seconds_bucket"]
    assert total(latency, grpc_method="SearchAudio", le="+Inf") == 2  # a histogram per RPC, both calls in it

    embedder = pages["embedder"]
    batches = total(embedder["audiosearch_embedder_batch_size_count"], model="spectral-v1")
    windows = total(embedder["audiosearch_embedder_batch_size_sum"], model="spectral-v1")
    assert batches >= 3 and windows >= batches  # two inserts and a search, each at least one model call
    assert total(embedder["audiosearch_embedder_queue_depth"], model="spectral-v1") == 0  # all done
    assert total(embedder["audiosearch_embedder_requests_admitted"]) == 0
    assert total(embedder["audiosearch_embedder_model_load_seconds"], model="spectral-v1") > 0
    assert total(embedder["audiosearch_embedder_model_ready"], model="spectral-v1", state="ready") == 1
    # Cnn14 has no weights in tests: it is there, not ready, and has no load time.
    assert total(embedder["audiosearch_embedder_model_ready"], model="panns-cnn14", state="unavailable") == 0
    assert total(embedder["audiosearch_embedder_model_load_seconds"], model="panns-cnn14") == 0

    assert total(pages["search"]["audiosearch_search_items"], library="obs") == 2
    assert total(pages["search"]["audiosearch_search_vectors"], library="obs", model="spectral-v1") > 2
    catalog = pages["catalog"]
    assert total(catalog["audiosearch_catalog_items"], library="obs", state="ready") == 2
    assert total(catalog["audiosearch_catalog_items"], library="obs", state="pending") == 0
    assert total(catalog["audiosearch_catalog_audio_seconds"], library="obs") == pytest.approx(8.0, abs=0.1)


@pytest.fixture
def spans():  # type: ignore[no-untyped-def]
    """Tracing on, into memory, for the servers and channels made in the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()


async def test_one_search_is_one_trace_across_the_services(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    stack = await start_stack(tmp_path)
    try:
        clip = await index_two(stack)
        await asyncio.sleep(0.2)  # client spans end on a task once the call's status is in
        spans.clear()
        await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="obs", top_k=2), clip))
        await asyncio.sleep(0.2)
    finally:
        await stop_stack(stack)

    finished = [s for s in spans.get_finished_spans() if not s.name.startswith("grpc.")]
    (root,) = [s for s in finished if s.name == f"{GATEWAY}/SearchAudio"]
    assert root.kind == SpanKind.SERVER and root.parent is None
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}, [
        (s.name, s.parent) for s in finished if s.context.trace_id != root.context.trace_id
    ]
    by_id = {s.context.span_id: s for s in finished}
    servers = [s for s in finished if s.kind == SpanKind.SERVER and s is not root]
    reached = {s.attributes["rpc.service"] for s in servers}
    assert reached == {
        "audiosearch.embedder.v1.EmbedderService",
        "audiosearch.search.v1.SearchService",
        "audiosearch.catalog.v1.CatalogService",
    }
    for span in servers:
        # Each hop: the downstream SERVER span's parent is the gateway's CLIENT span of that call ...
        client = by_id[span.parent.span_id]
        assert client.kind == SpanKind.CLIENT and client.name == span.name
        assert client.parent.span_id == root.context.span_id  # ... made while serving the search
        assert client.attributes["rpc.grpc.status_code"] == 0
        assert client.start_time <= span.start_time and span.end_time <= client.end_time
    assert root.attributes["rpc.grpc.status_code"] == 0 and root.status.is_ok


async def test_a_failed_call_is_an_error_span(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    stack = await start_stack(tmp_path)
    try:
        await expect_code(
            stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="nolib", top_k=2), b"x")),
            grpc.StatusCode.NOT_FOUND,
        )
    finally:
        await stop_stack(stack)
    (root,) = [s for s in spans.get_finished_spans() if s.name == f"{GATEWAY}/SearchAudio"]
    assert root.status.status_code == StatusCode.ERROR and root.status.description == "NOT_FOUND"
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_tracing_is_off_unless_configured() -> None:
    off = cfg.load(ServerConfig, environ={})
    assert off.tracing == "off"
    assert tracing.configure(off, "test") is None
    assert tracing.tracer() is None and tracing.client_interceptors("embedder:50052") == []
    console = cfg.load(ServerConfig, environ={"AUDIOSEARCH_TRACING": "console"})
    provider = tracing.configure(console, "test")
    try:
        assert provider is not None and len(tracing.client_interceptors("embedder:50052")) == 4
        assert provider.resource.attributes["service.name"] == "audiosearch-test"
    finally:
        tracing.install(None)
        provider.shutdown()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AUDIOSEARCH_TRACING", "zipkin", "use off, otlp or console"),
        ("AUDIOSEARCH_LOG_FORMAT", "xml", "use json or text"),
        ("AUDIOSEARCH_TRACE_SAMPLE_RATIO", "1.5", "from 0 to 1"),
        ("AUDIOSEARCH_OTLP_ENDPOINT", "otel-collector:4317", "start it with http://"),
    ],
)
def test_bad_observability_settings_are_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        cfg.load(ServerConfig, environ={"AUDIOSEARCH_TRACING": "otlp", variable: value})
    assert variable in str(info.value)


def test_log_lines_are_json_with_the_trace_id(spans: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("gateway"))
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("outside any span")
        tracer = tracing.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("work") as span:
            logger.info("inside %s", "a span", extra={"library": "sfx"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "outside any span" and first["level"] == "WARNING" and "trace_id" not in first
    assert first["service"] == "gateway" and first["logger"] == "tests.json" and first["time"].endswith("+00:00")
    assert second["message"] == "inside a span" and second["library"] == "sfx"
    assert second["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert second["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "ValueError: boom" in third["exception"]


def test_a_failing_store_read_drops_only_its_series() -> None:
    metrics = Metrics()

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise ConnectionError("database is down")

    metrics.gauge("test_broken", "Never read.", [], broken)
    metrics.gauge("test_fine", "Read.", ["x"], lambda: [(("a",), 1.0)])
    port = metrics.serve("127.0.0.1:0")
    try:
        page = scrape(port)
    finally:
        metrics.close()
    assert "test_broken" not in page and page["test_fine"] == [({"x": "a"}, 1.0)]


def test_a_metrics_address_in_use_is_a_clear_error() -> None:
    first = Metrics()
    port = first.serve("127.0.0.1:0")
    try:
        with pytest.raises(RuntimeError, match="AUDIOSEARCH_METRICS_LISTEN"):
            Metrics().serve(f"127.0.0.1:{port}")
    finally:
        first.close()


# --- the bootstrap's interceptors on a small service of the test's own ------------------------


class _Probe:
    """A service with a slow unary method and an endless server stream."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.entered.set()
        await self.release.wait()
        return b"done"

    async def ticks(self, request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        n = 0
        while True:
            n += 1
            yield str(n).encode()
            await asyncio.sleep(0.01)

    def register(self, s: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            "test.Probe",
            {
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
                "Ticks": grpc.unary_stream_rpc_method_handler(self.ticks),
            },
        )
        s.add_generic_rpc_handlers((handler,))


async def start_probe(**overrides: object) -> tuple[_Probe, server.RunningServer]:
    probe = _Probe()
    config = cfg.load(ServerConfig, environ={}, listen="127.0.0.1:0", shutdown_grace_seconds=0.5, **overrides)
    running = await server.start(server.ServiceSpec(["test.Probe"], probe.register), config)
    return probe, running


def handled_codes(running: server.RunningServer, method: str) -> dict[str, float]:
    samples = running.metrics.handled.collect()[0].samples
    return {
        s.labels["grpc_code"]: s.value
        for s in samples
        if s.labels["grpc_method"] == method and s.name.endswith("_total") and s.value
    }


async def test_a_busy_server_sheds_load_but_answers_its_probes() -> None:
    probe, running = await start_probe(max_concurrent_rpcs=1)
    try:
        async with grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS]) as channel:
            slow = channel.unary_unary("/test.Probe/Slow")
            first = asyncio.ensure_future(slow(b"", timeout=10))
            await probe.entered.wait()
            await expect_code(
                slow(b"", timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED, "AUDIOSEARCH_MAX_CONCURRENT_RPCS=1"
            )
            # The probes still answer while the one slot is taken.
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            probe.release.set()
            assert await first == b"done"
            assert await slow(b"", timeout=10) == b"done"  # the slot is free again
    finally:
        await running.stop()
    assert handled_codes(running, "Slow") == {"OK": 2, "ResourceExhausted": 1}
    assert handled_codes(running, "Check") == {"OK": 1}


async def test_health_watch_streams_serving() -> None:
    _, running = await start_probe()
    try:
        async with grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS]) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
            await asyncio.sleep(0.1)
    finally:
        await running.stop()
    assert "Internal" not in handled_codes(running, "Watch")


async def test_a_stream_the_client_cancels_is_counted_and_traced_as_cancelled(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    _, running = await start_probe()
    try:
        async with grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS]) as channel:
            call = channel.unary_stream("/test.Probe/Ticks")(b"", timeout=10)
            for _ in range(3):
                await call.read()
            call.cancel()
            await asyncio.sleep(0.3)
            ticks = channel.unary_stream("/test.Probe/Ticks")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in ticks(b"", timeout=0.2):
                    pass
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(0.3)
    finally:
        await running.stop()
    assert handled_codes(running, "Ticks") == {"Canceled": 1, "DeadlineExceeded": 1}
    statuses = sorted(s.status.description for s in spans.get_finished_spans() if s.name == "test.Probe/Ticks")
    assert statuses == ["CANCELLED", "DEADLINE_EXCEEDED"]
    assert "Failed to detach context" not in caplog.text
