"""What the per-RPC interceptors cost: unary calls per second to a real
catalog server (port 0, SQLite): the same servicer on a bare grpc.aio
server (no interceptors), through the bootstrap as shipped (metrics,
error mapping, load shedding; tracing off), and with tracing on (spans
batched to an exporter that drops them). Same process, rounds interleaved
so machine noise hits all three.

    .venv/bin/python bench/observability.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from audiosearch.catalog.v1 import catalog_pb2 as pb
from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from services.catalog import __main__ as catalog_main
from services.catalog.config import CatalogConfig
from services.common import config as cfg
from services.common import server, tracing
from services.common.channels import open_channel


class Discard(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def bare(spec: server.ServiceSpec) -> tuple[grpc.aio.Server, int]:
    """The same servicer on a server with no interceptors at all."""
    plain = grpc.aio.server()
    spec.register(plain)
    port = plain.add_insecure_port("127.0.0.1:0")
    await plain.start()
    return plain, port


async def calls_per_second(data: Path, mode: str, calls: int) -> float:
    """mode: "bare" (no interceptors), "off" (the bootstrap, tracing off), "on"."""
    provider = None
    if mode == "on":
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracing.install(provider)
    config = cfg.load(CatalogConfig, environ={}, listen="127.0.0.1:0", data_dir=data)
    spec = await catalog_main.build(config)
    if mode == "bare":
        await spec.startup()  # type: ignore[misc]
        plain, port = await bare(spec)
        address, stop = f"127.0.0.1:{port}", lambda: plain.stop(0)
    else:
        running = await server.start(spec, config)
        address, stop = running.address, running.stop
    channel = open_channel(address)  # traced client side too, as the gateway's
    stub = pb_grpc.CatalogServiceStub(channel)
    try:
        for _ in range(50):  # warm-up
            await stub.ListLibraries(pb.ListLibrariesRequest())
        start = time.perf_counter()
        for _ in range(calls):
            await stub.ListLibraries(pb.ListLibrariesRequest())
        return calls / (time.perf_counter() - start)
    finally:
        await channel.close()
        await stop()
        tracing.install(None)
        if provider is not None:
            provider.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"bare": [], "off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode, values in rates.items():
                values.append(await calls_per_second(Path(tmp), mode, args.calls))
    median = {mode: statistics.median(values) for mode, values in rates.items()}
    result = {
        "figure": "unary CatalogService.ListLibraries calls/s, median of rounds",
        "bare_server": round(median["bare"], 1),
        "bootstrap_tracing_off": round(median["off"], 1),
        "bootstrap_tracing_on": round(median["on"], 1),
        "ratio_off_to_bare": round(median["off"] / median["bare"], 3),
        "ratio_on_to_off": round(median["on"] / median["off"], 3),
        "rounds": args.rounds,
        "calls_per_round": args.calls,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    grpc.aio.init_grpc_aio()
    asyncio.run(main())
