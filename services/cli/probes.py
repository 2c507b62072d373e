"""Probes of a service from outside: is its port free, does its health say
SERVING (gRPC health, or the web service's /healthz)."""

from __future__ import annotations

import errno
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cli.stack_errors import StackError
from services.common.channels import open_blocking_channel, reconnect_backoff
from services.common.config import TlsConfig

HEALTH_TIMEOUT = 2.0  # one health check's deadline, seconds
# Health polls reconnect within a second to a child that just (re)started
# (open_blocking_channel also gives each channel connections of its own).
PROBE_OPTIONS = reconnect_backoff(1000)


def _poll(ready: Callable[[], bool], what: str, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    """Calls `ready` every 0.2 s until it says yes; fails early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode}")
        if ready():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def wait_serving(
    address: str, timeout: float, process: subprocess.Popen[bytes] | None = None, tls: TlsConfig | None = None
) -> None:
    """Polls gRPC health until SERVING (over TLS, with a client certificate,
    when `tls` says so), for at most `timeout` s."""
    with open_blocking_channel(address, tls, options=PROBE_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return response.status == health_pb2.HealthCheckResponse.SERVING

        _poll(serving, f"{address} did not become SERVING", timeout, process)


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port right now. The probe sets
    SO_REUSEADDR as the services do (gRPC, uvicorn, prometheus' server): then
    only a listening socket counts, not the TIME_WAIT remains of connections
    to a child just killed, which the child's own bind ignores too."""
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                raise StackError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return True


def health_verdict(check: Any) -> str:
    """What a finished health check says: "SERVING", "NOT_SERVING", a gRPC
    code name, or the HTTP check's own answer."""
    if isinstance(check, Future):
        return check.result()
    try:
        response = check.result()
    except grpc.RpcError as exc:
        return exc.code().name  # type: ignore[attr-defined]
    except grpc.FutureCancelledError:
        return "CANCELLED"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def http_health(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT) as response:  # noqa: S310 - our own loopback URL
            return "SERVING" if response.status == 200 else f"HTTP {response.status}"
    except Exception as exc:  # noqa: BLE001 - refused, timed out, or a half-started server's garbage
        return f"no answer ({exc})"
