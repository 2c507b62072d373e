"""`audiosearch serve`: the four services as child processes on fixed
local ports, started in dependency order and stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Start order: the gateway last, once what it calls is up.
SERVICES = ("catalog", "search", "embedder", "gateway")
OFFSETS = {"gateway": 0, "embedder": 1, "search": 2, "catalog": 3}


def wait_serving(address: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Polls gRPC health until SERVING; fails early if the process died."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with code {process.returncode}")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{address} did not become SERVING within {timeout:.0f} s")


class Stack:
    def __init__(
        self, data_dir: Path, host: str = "127.0.0.1", port: int = 50051, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.addresses = {name: f"{host}:{port + OFFSETS[name]}" for name in SERVICES}
        self.env = {**os.environ, **(env or {})}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 120.0) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            env = {
                **self.env,
                "AUDIOSEARCH_LISTEN": self.addresses[name],
                "AUDIOSEARCH_DATA_DIR": str(self.data_dir),
                "AUDIOSEARCH_EMBEDDER_ADDR": self.addresses["embedder"],
                "AUDIOSEARCH_SEARCH_ADDR": self.addresses["search"],
                "AUDIOSEARCH_CATALOG_ADDR": self.addresses["catalog"],
            }
            with (logs / f"{name}.log").open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            try:
                wait_serving(self.addresses[name], timeout, self.processes[name])
            except (RuntimeError, TimeoutError) as exc:
                self.stop()
                tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} failed to start: {exc}\n--- {logs / (name + '.log')} ---\n{tail}") from None

    def stop(self, grace: float = 15.0) -> None:
        for name in reversed(SERVICES):
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
        """Blocks until a child exits; returns its name (None on a signal)."""
        stop = {"now": False}

        def handler(signum, frame):  # type: ignore[no-untyped-def]
            stop["now"] = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        while not stop["now"]:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    return name
            time.sleep(0.5)
        return None
