"""Prometheus metrics: one registry per server, served as text at /metrics.

The RPC series follow the names operators know from go-grpc-prometheus
(`grpc_server_handled_total`, `grpc_server_handling_seconds`), so existing
dashboards and alerts apply. Service-specific series (batch sizes, queue
depth, store sizes) are added by each service through `ServiceSpec.register_metrics`,
most of them read at scrape time from the domain objects' own state."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# No `_created` series per counter and histogram: go-grpc-prometheus has none.
disable_created_metrics()

# Seconds: from a cached catalog lookup (~1 ms) to embedding an hour of audio.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")

T = TypeVar("T")

# (label values, value) pairs for one gauge family.
Samples = Iterable[tuple[Sequence[str], float]]


class _ScrapeGauge(Collector):
    """A gauge family computed when scraped. A failing read (the database
    is down) drops the family from that scrape and is logged; the other
    series are still served."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Samples]) -> None:
        self.name, self.documentation, self.labels, self.read = name, documentation, list(labels), read

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        try:
            for values, value in self.read():
                family.add_metric(list(values), value)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail as a whole
            log.warning("metric %s not read: %s: %s", self.name, type(exc).__name__, exc)
            return []
        return [family]


def cached(read: Callable[[], T], seconds: float = 5.0) -> Callable[[], T]:
    """`read` called at most once every `seconds`: several families of one
    scrape (and scrapes by several Prometheus replicas) share one store read."""
    lock = threading.Lock()
    last: tuple[float, T] | None = None

    def wrapper() -> T:
        nonlocal last
        with lock:
            if last is None or time.monotonic() - last[0] > seconds:
                last = (time.monotonic(), read())
            return last[1]

    return wrapper


class Metrics:
    """The series every server has, in a registry of its own (several
    servers in one process, as in tests, do not mix their counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU seconds, resident memory, open fds
        self.started = Counter("grpc_server_started", "RPCs started on the server.", RPC_LABELS, registry=self.registry)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*RPC_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, in seconds.",
            RPC_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._http: WSGIServer | None = None

    def gauge(self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Samples]) -> None:
        """Registers a gauge family whose samples `read` returns at scrape
        time. `read` runs on the HTTP server's thread: it may only touch
        state that is safe to read from another thread."""
        self.registry.register(_ScrapeGauge(name, documentation, labels, read))

    def histogram(self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def serve(self, listen: str) -> int:
        """Serves /metrics on `listen` (host:port, port 0 picks one)."""
        host, _, port = listen.rpartition(":")
        try:
            self._http, _ = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot serve metrics on {listen!r} (AUDIOSEARCH_METRICS_LISTEN): {exc}") from None
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
