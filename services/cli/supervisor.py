"""`audiosearch serve`: the four services as child processes on fixed
local ports, started in dependency order, restarted when one dies, and
stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import config as cfg
from services.common.channels import open_blocking_channel
from services.common.config import TlsConfig

# Start order: the gateway last, once what it calls is up.
SERVICES = ("catalog", "search", "embedder", "gateway")
OFFSETS = {"gateway": 0, "embedder": 1, "search": 2, "catalog": 3}
# A service that dies this many times within RESTART_WINDOW seconds is
# broken, not unlucky: serve gives up instead of looping.
MAX_RESTARTS, RESTART_WINDOW = 5, 60.0


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


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Polls `url` until it answers 200."""

    def ok() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
                return response.status == 200
        except OSError:
            return False

    _poll(ok, f"{url} did not answer", timeout, process)


def wait_serving(
    address: str, timeout: float, process: subprocess.Popen[bytes] | None = None, tls: TlsConfig | None = None
) -> None:
    """Polls gRPC health until SERVING (over TLS, with a client certificate,
    when `tls` says so)."""
    with open_blocking_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return response.status == health_pb2.HealthCheckResponse.SERVING

        _poll(serving, f"{address} did not become SERVING", timeout, process)


class Stack:
    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 50051,
        env: dict[str, str] | None = None,
        metrics_port: int | None = None,
        http_port: int = 0,
    ) -> None:
        """Services on `port` and the next three; their /metrics on
        `metrics_port` and the next three (default port + 100; 0: none);
        the HTTP API and web page on `http_port` (0: not started)."""
        self.data_dir = data_dir.resolve()
        self.addresses = {name: f"{host}:{port + OFFSETS[name]}" for name in SERVICES}
        self.services = (*SERVICES, "web") if http_port else SERVICES
        if http_port:
            self.addresses["web"] = f"{host}:{http_port}"
        metrics = port + 100 if metrics_port is None else metrics_port
        self.metrics_addresses = (
            {name: f"{host}:{metrics + offset}" for name, offset in OFFSETS.items()} if metrics else {}
        )
        self.env = {**os.environ, **(env or {})}
        # The services' own TLS settings: the health polls present the same
        # certificate and trust the same CA.
        self.tls = cfg.load(TlsConfig, environ=self.env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 120.0) -> None:
        for name in self.services:
            self.launch(name, timeout)

    def launch(self, name: str, timeout: float = 120.0) -> None:
        """Starts one service and waits until it is SERVING."""
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            "AUDIOSEARCH_LISTEN": self.addresses[name],
            "AUDIOSEARCH_DATA_DIR": str(self.data_dir),
            "AUDIOSEARCH_EMBEDDER_ADDR": self.addresses["embedder"],
            "AUDIOSEARCH_SEARCH_ADDR": self.addresses["search"],
            "AUDIOSEARCH_CATALOG_ADDR": self.addresses["catalog"],
            "AUDIOSEARCH_METRICS_LISTEN": self.metrics_addresses.get(name, ""),
            "AUDIOSEARCH_HTTP_LISTEN": self.addresses.get("web", ""),
            "AUDIOSEARCH_GATEWAY_ADDR": self.addresses["gateway"],
        }
        with (logs / f"{name}.log").open("ab") as log_file:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        try:
            if name == "web":
                wait_http(f"http://{self.addresses['web']}/healthz", timeout, self.processes[name])
            else:
                wait_serving(self.addresses[name], timeout, self.processes[name], self.tls)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} failed to start: {exc}\n--- {logs / (name + '.log')} ---\n{tail}") from None

    def stop(self, grace: float = 15.0) -> None:
        for name in reversed(self.services):
            process = self.processes.get(name)
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def watch(self) -> str | None:
        """Blocks until SIGTERM or SIGINT (returns None), restarting a child
        that dies; returns the name of one that keeps dying."""
        stop = {"now": False}

        def handler(signum, frame):  # type: ignore[no-untyped-def]
            stop["now"] = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        deaths: dict[str, list[float]] = {name: [] for name in self.services}
        while not stop["now"]:
            for name, process in list(self.processes.items()):
                if process.poll() is None:
                    continue
                now = time.monotonic()
                deaths[name] = [t for t in deaths[name] if now - t < RESTART_WINDOW] + [now]
                if len(deaths[name]) > MAX_RESTARTS:
                    return name
                print(f"audiosearch: {name} exited with code {process.returncode}; restarting it", file=sys.stderr)
                try:
                    self.launch(name)
                except RuntimeError:
                    return name
            time.sleep(0.2)
        return None
