"""The one server bootstrap: every service is started through here, so all
of them get the same health, reflection, error mapping, message limits,
load shedding and SIGTERM drain."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from services.common import lifeline, logs, reflection, tracing
from services.common.channels import is_loopback
from services.common.config import ServerConfig
from services.common.interceptors import ConcurrencyLimit, ObservingInterceptor
from services.common.metrics import Metrics
from services.common.status import ErrorInterceptor

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServiceSpec:
    """What a service hands the bootstrap."""

    # Full proto service names, e.g. "audiosearch.search.v1.SearchService".
    service_names: Sequence[str]
    # Adds the servicers to the server.
    register: Callable[[grpc.aio.Server], None]
    # Runs after the port is bound and before health says SERVING.
    startup: Callable[[], Awaitable[None]] | None = None
    # Runs after the server stopped (close files, connections).
    shutdown: Callable[[], Awaitable[None]] | None = None
    # Interceptors inside the error mapping (the gateway's authentication):
    # a domain exception they raise becomes its status like any other.
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    # Adds the service's own series (batch sizes, store sizes) to its metrics.
    register_metrics: Callable[[Metrics], None] | None = None
    # Raises when the service cannot serve now (its store is stuck or gone):
    # run every PROBE_INTERVAL s once SERVING, it turns health NOT_SERVING
    # (so a supervisor or Kubernetes restarts it) and back when it passes.
    probe: Callable[[], Awaitable[None]] | None = None


PROBE_INTERVAL, PROBE_TIMEOUT = 5.0, 20.0


async def _probe_loop(
    probe: Callable[[], Awaitable[None]], health: health_aio.HealthServicer, names: Sequence[str]
) -> None:
    """Health follows the probe: a probe that fails or takes longer than
    PROBE_TIMEOUT s means NOT_SERVING until one passes again."""
    serving = True
    while True:
        await asyncio.sleep(PROBE_INTERVAL)
        try:
            await asyncio.wait_for(probe(), PROBE_TIMEOUT)
            ok, why = True, ""
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot serve"
            ok, why = False, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        if ok != serving:
            serving = ok
            if ok:
                log.info("health probe passes again: SERVING")
            else:
                log.error("health probe failed, NOT_SERVING: %s", why)
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            await _set_all(health, names, status)


@dataclasses.dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    spec: ServiceSpec
    grace: float
    metrics: Metrics
    # Where /metrics is served (None: AUDIOSEARCH_METRICS_LISTEN is empty).
    metrics_port: int | None = None
    prober: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Drains: health goes NOT_SERVING, in-flight calls get `grace` s."""
        if self.prober:
            self.prober.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace)
        self.metrics.close()
        if self.spec.shutdown:
            await self.spec.shutdown()


async def _set_all(health: health_aio.HealthServicer, names: Sequence[str], status: int) -> None:
    for name in ("", *names):
        await health.set(name, status)


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS for the server when it has a certificate and key (None:
    plaintext); with a CA file, client certificates signed by it are
    required (mTLS) unless `tls_require_client_cert` is off."""
    if not config.has_identity:
        return None
    ca = config.read("tls_ca_file")
    return grpc.ssl_server_credentials(
        [(config.read("tls_key_file"), config.read("tls_cert_file"))],
        root_certificates=ca,
        require_client_auth=ca is not None and config.tls_require_client_cert,
    )


# Calls still running on a connection past its age get this long: more than
# any RPC may take (the gateway's default deadline downstream is 300 s).
CONNECTION_AGE_GRACE_MS = 900_000


def connection_age(seconds: float) -> list[tuple[str, int]]:
    if seconds <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_MS),
    ]


async def start(spec: ServiceSpec, config: ServerConfig) -> RunningServer:
    """Starts a server on `config.listen` (port 0 picks a free port)."""
    credentials = server_credentials(config)  # bad TLS files fail before anything starts
    metrics = Metrics()
    if spec.register_metrics:
        spec.register_metrics(metrics)
    server = grpc.aio.server(
        # Outermost first: observing sees the status the error mapping chose.
        interceptors=[
            ObservingInterceptor(metrics, tracing.tracer()),
            ErrorInterceptor(),
            ConcurrencyLimit(config.max_concurrent_rpcs),
            *spec.interceptors,
        ],
        options=[
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
            *connection_age(config.max_connection_age_seconds),
        ],
    )
    spec.register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = list(spec.service_names)
    # v1 and v1alpha (services/common/reflection.py).
    reflection.enable([*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)
    await _set_all(health, names, health_pb2.HealthCheckResponse.NOT_SERVING)
    if credentials is None:
        port = server.add_insecure_port(config.listen)
        if not is_loopback(config.listen):
            log.warning(
                "listening on %s without TLS: anyone who can reach it can call it "
                "(set AUDIOSEARCH_TLS_CERT_FILE, _KEY_FILE and _CA_FILE for mTLS, or listen on 127.0.0.1)",
                config.listen,
            )
    else:
        port = server.add_secure_port(config.listen, credentials)
    if port == 0:
        raise RuntimeError(f"could not bind {config.listen}")
    await server.start()
    try:
        metrics_port = metrics.serve(config.metrics_listen) if config.metrics_listen else None
        if spec.startup:
            await spec.startup()
    except BaseException:
        await server.stop(0)
        metrics.close()
        raise
    await _set_all(health, names, health_pb2.HealthCheckResponse.SERVING)
    prober = asyncio.create_task(_probe_loop(spec.probe, health, names)) if spec.probe else None
    mtls = config.tls_ca_file and config.tls_require_client_cert
    security = "plaintext" if credentials is None else ("mTLS" if mtls else "TLS")
    where = "" if metrics_port is None else f", metrics on port {metrics_port}"
    log.info("%s serving on port %d (%s)%s", ", ".join(names), port, security, where)
    return RunningServer(server, port, health, spec, config.shutdown_grace_seconds, metrics, metrics_port, prober)


def run(service: str, build: Callable[[], Awaitable[ServiceSpec]], config: ServerConfig) -> None:
    """Process entry point: serve until SIGTERM or SIGINT, then drain.
    Logging and tracing are set up first: `build` may open traced channels."""
    lifeline.bind_to_parent()  # under `audiosearch serve`: stop when it dies
    logs.setup(config.log_level, config.log_format, service)
    tracing.configure(config, service)
    try:
        asyncio.run(_serve(build, config))
    finally:
        tracing.shutdown()  # flushes buffered spans, also after a failed start


async def _serve(build: Callable[[], Awaitable[ServiceSpec]], config: ServerConfig) -> None:
    spec = await build()
    running = await start(spec, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Printed for supervisors (audiosearch serve) that wait for readiness.
    print(f"READY {running.port}", flush=True)
    await stop.wait()
    log.info("draining (grace %.1fs)", config.shutdown_grace_seconds)
    await running.stop()
