"""`audiosearch serve`: the services as child processes on fixed local
ports, started in dependency order, healed while they run, and stopped
together.

`Stack.watch` is one non-blocking loop over a small state machine per child:

    starting (since t) --SERVING--> serving --dies or stays unhealthy--> waiting (until t)
    starting --dies, or not SERVING within start_timeout--> waiting (until t)
    waiting --t reached, its ports free--> starting

- A child that dies while serving is relaunched at once; each relaunch that
  fails after that waits twice as long as the last (1 s, 2 s, ... 30 s). A
  child that reaches SERVING starts over at "at once".
- A serving child whose health check fails (NOT_SERVING, or no answer within
  HEALTH_TIMEOUT s) continuously for `unhealthy_after` s is SIGKILLed and
  relaunched like a dead one.
- More than MAX_FAILURES deaths or failed starts of one child within
  FAILURE_WINDOW s is a crash loop, not bad luck: `watch` raises CrashLoop
  (with the child's log tail) and the caller stops the stack.

Children are started from the main thread only: each gets
AUDIOSEARCH_PARENT_PID and binds its life to ours (services/common/lifeline.py),
and Linux signals a child when the *thread* that forked it ends. DATA_DIR/
serve.pid names this process and its children, so the next serve can tell a
live serve (refuse) from the leftovers of a dead one (stop them)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cli.children import LOG_TAIL_LINES, Child, exit_text, log_tail
from services.cli.pidfile import LEFTOVER_GRACE, PidFile
from services.cli.probes import HEALTH_TIMEOUT, PROBE_OPTIONS, health_verdict, http_health, port_free
from services.cli.stack_errors import CrashLoop, Interrupted, PortInUse, StartFailed
from services.common import config as cfg
from services.common.channels import open_blocking_channel
from services.common.config import TlsConfig
from services.common.lifeline import PARENT_PID_ENV

# Start order: the gateway after what it calls, the web page after the gateway.
SERVICES = ("catalog", "search", "embedder", "gateway")
OFFSETS = {"gateway": 0, "embedder": 1, "search": 2, "catalog": 3}
# More than MAX_FAILURES deaths or failed starts of one child within
# FAILURE_WINDOW seconds: serve gives up instead of looping. With the
# backoff below, a child that cannot start at all is given up after ~30 s.
MAX_FAILURES, FAILURE_WINDOW = 5, 60.0
MAX_BACKOFF = 30.0  # seconds between relaunches of a child that keeps failing
CHECK_EVERY = {"starting": 0.5, "serving": 1.0}  # seconds between health checks
TICK = 0.2  # the watch loop's period, seconds


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


class Stack:
    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 50051,
        env: dict[str, str] | None = None,
        metrics_port: int | None = None,
        http_port: int = 0,
        start_timeout: float = 120.0,
        unhealthy_after: float = 30.0,
    ) -> None:
        """Services on `port` and the next three; their /metrics on
        `metrics_port` and the next three (default port + 100; 0: none);
        the HTTP API and web page on `http_port` (0: not started). A child
        has `start_timeout` s to become SERVING (the search service loads
        every collection first), and is restarted once it has been
        unhealthy for `unhealthy_after` s in a row."""
        self.data_dir = data_dir.resolve()
        self.host = host
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
        self.start_timeout, self.unhealthy_after = start_timeout, unhealthy_after
        self.children = {
            name: Child(
                name=name,
                address=self.addresses[name],
                ports=tuple(_port(a) for a in (self.addresses[name], self.metrics_addresses.get(name)) if a),
            )
            for name in self.services
        }
        self.pid_file = PidFile(self.data_dir)
        self._stop_requested = False
        self._http_pool: ThreadPoolExecutor | None = None

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The children's current processes, by name."""
        return {name: c.process for name, c in self.children.items() if c.process is not None}

    def ports(self) -> list[int]:
        """Every port the stack listens on, lowest (the gateway's) first."""
        return sorted({port for child in self.children.values() for port in child.ports})

    # Start

    def preflight(self) -> None:
        """Refuses a data dir a live serve uses (DataDirInUse), stops what a
        dead one left running there, then checks every port is free
        (PortInUse). Binds and closes sockets only: takes well under a second,
        plus up to 2 * LEFTOVER_GRACE s when there are leftovers."""
        stopped = self.pid_file.clear_leftovers()
        # A killed process lets go of its sockets only once its last thread
        # is gone, a little after it looks dead: leftovers get a moment.
        deadline = time.monotonic() + (LEFTOVER_GRACE if stopped else 0.0)
        for port in self.ports():
            while not port_free(self.host, port):
                if time.monotonic() >= deadline:
                    raise PortInUse(port)
                time.sleep(0.1)

    def start(self, timeout: float | None = None) -> None:
        """Preflight, then each child in dependency order, each SERVING before
        the next starts (`timeout`: each one's start timeout, default
        start_timeout). On failure stops what it started and raises
        StartFailed with the log tail (or Interrupted on SIGINT/SIGTERM)."""
        if timeout is not None:
            self.start_timeout = timeout
        self.preflight()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.stop_on_signals():
            for child in self.children.values():
                self._launch(child, time.monotonic())
                while child.state == "starting":
                    time.sleep(TICK)
                    now = time.monotonic()
                    for other in self.children.values():
                        problem = self._check(other, now) if other.state != "waiting" else None
                        if problem:
                            self.stop()
                            raise StartFailed(f"{other.name} {problem}; stopped the stack\n{self._tail(other)}")
                    if self._stop_requested:
                        self.stop()
                        raise Interrupted("stopped while starting")

    def _launch(self, child: Child, now: float) -> None:
        """Starts one child (returns at once: it is 'starting' until its
        health says SERVING)."""
        # PDEATHSIG follows the forking thread: a child forked from another
        # thread would be signalled when that thread ends, not when we do.
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Stack starts children from the main thread only")
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            "AUDIOSEARCH_LISTEN": self.addresses[child.name],
            "AUDIOSEARCH_DATA_DIR": str(self.data_dir),
            "AUDIOSEARCH_EMBEDDER_ADDR": self.addresses["embedder"],
            "AUDIOSEARCH_SEARCH_ADDR": self.addresses["search"],
            "AUDIOSEARCH_CATALOG_ADDR": self.addresses["catalog"],
            "AUDIOSEARCH_METRICS_LISTEN": self.metrics_addresses.get(child.name, ""),
            "AUDIOSEARCH_HTTP_LISTEN": self.addresses.get("web", ""),
            "AUDIOSEARCH_GATEWAY_ADDR": self.addresses["gateway"],
            PARENT_PID_ENV: str(os.getpid()),
        }
        try:
            log_file = (logs / f"{child.name}.log").open("ab")
        except OSError as exc:  # a full disk: the service still runs, unlogged, rather than not at all
            print(f"audiosearch: cannot open the {child.name} log: {exc.strerror}", file=sys.stderr, flush=True)
            log_file = open(os.devnull, "ab")  # closed just below
        with log_file:
            child.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{child.name}"], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        child.state, child.since, child.unhealthy_since = "starting", now, None
        child.health, child.check, child.asked_at = "no answer yet", None, 0.0
        child.launches += 1
        if child.channel is not None:
            child.channel.close()  # a fresh channel: no reconnect backoff left from the dead one
        if child.name != "web":
            child.channel = open_blocking_channel(child.address, self.tls, options=PROBE_OPTIONS)
        self.pid_file.write({name: c.process.pid for name, c in self.children.items() if c.process is not None})

    # Watch

    def watch(self) -> None:
        """Heals the children (see the module docstring) until SIGTERM or
        SIGINT; raises CrashLoop when one keeps failing. One pass takes
        milliseconds: health checks are futures, a relaunch is one Popen."""
        with self.stop_on_signals():
            while not self._stop_requested:
                now = time.monotonic()
                for child in self.children.values():
                    if self._stop_requested:  # Ctrl-C reaches the children too: let them go
                        break
                    if child.state == "waiting":
                        if now >= child.retry_at:
                            self._relaunch(child, now)
                        continue
                    problem = self._check(child, now)
                    if problem:
                        self._fail(child, problem, now)
                time.sleep(TICK)

    def _relaunch(self, child: Child, now: float) -> None:
        busy = [port for port in child.ports if not port_free(self.host, port)]
        if busy:
            self._fail(child, f"could not start: port {busy[0]} is in use", now)
        else:
            self._launch(child, now)

    def _check(self, child: Child, now: float) -> str | None:
        """Advances a started child's state; returns why it must be
        relaunched (it is then killed), or None."""
        assert child.process is not None
        pid = f"(pid {child.process.pid})"
        code = child.process.poll()
        if code is not None:
            return f"{pid} {exit_text(code)}" + (" while starting" if child.state == "starting" else "")
        verdict = self._health(child, now)
        if child.state == "starting":
            if verdict == "SERVING":
                child.state, child.delay = "serving", 0.0
                if child.launches > 1:
                    again = f"audiosearch: {child.name} is serving again (pid {child.process.pid})"
                    print(again, file=sys.stderr, flush=True)
            elif now - child.since > self.start_timeout:
                self._kill(child)
                took = f"{self.start_timeout:.0f} s (health: {child.health})"
                return f"{pid} was not SERVING within {took}, so it was killed"
            return None
        if verdict == "SERVING":
            child.unhealthy_since = None
        elif verdict is not None and child.unhealthy_since is None:
            child.unhealthy_since = now
        if child.unhealthy_since is not None and now - child.unhealthy_since >= self.unhealthy_after:
            self._kill(child)
            took = f"{now - child.unhealthy_since:.0f} s (health: {child.health})"
            return f"{pid} was unhealthy for {took}, so it was killed"
        return None

    def _health(self, child: Child, now: float) -> str | None:
        """The verdict of a health check that just completed ("SERVING",
        "NOT_SERVING", a gRPC code name, ...), or None when none did; asks
        again every CHECK_EVERY s, never waiting for the answer."""
        verdict = None
        if child.check is not None and child.check.done():
            verdict = child.health = health_verdict(child.check)
            child.check = None
        if child.check is None and now - child.asked_at >= CHECK_EVERY[child.state]:
            child.asked_at = now
            if child.name == "web":  # HTTP, in a worker thread
                if self._http_pool is None:
                    self._http_pool = ThreadPoolExecutor(1, thread_name_prefix="web-health")
                child.check = self._http_pool.submit(http_health, f"http://{child.address}/healthz")
            else:
                assert child.channel is not None
                stub = health_pb2_grpc.HealthStub(child.channel)
                child.check = stub.Check.future(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT)
        return verdict

    def _fail(self, child: Child, problem: str, now: float) -> None:
        """Counts a death or failed start and schedules the relaunch after
        the child's backoff; raises CrashLoop past MAX_FAILURES."""
        child.state, child.check = "waiting", None
        child.failures.append(now)
        while child.failures and now - child.failures[0] > FAILURE_WINDOW:
            child.failures.popleft()
        if len(child.failures) > MAX_FAILURES:
            raise CrashLoop(
                f"{child.name} {problem}; that is {len(child.failures)} failures within "
                f"{FAILURE_WINDOW:.0f} s: giving up\n{self._tail(child)}"
            )
        wait, child.delay = child.delay, min(MAX_BACKOFF, max(1.0, 2 * child.delay))
        child.retry_at = now + wait
        when = f" in {wait:.0f} s" if wait else ""
        print(f"audiosearch: {child.name} {problem}; restarting it{when}", file=sys.stderr, flush=True)

    # Stop

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to every child (the gateway and web first), SIGKILL to
        those still up after `grace` s; removes serve.pid. Idempotent."""
        for child in reversed(self.children.values()):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children.values():
            if child.process is not None:
                try:
                    child.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._kill(child)
            if child.channel is not None:
                child.channel.close()
                child.channel = None
            child.state, child.check = "waiting", None
        if self._http_pool is not None:
            self._http_pool.shutdown(wait=False, cancel_futures=True)
            self._http_pool = None
        self.pid_file.remove_if_ours()

    def _kill(self, child: Child) -> None:
        if child.process is not None and child.process.poll() is None:
            child.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(10)

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT only set a flag the loops look at, while they
        run (from the main thread; the caller's handlers come back after)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: object) -> None:
            self._stop_requested = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _tail(self, child: Child) -> str:
        path = self.data_dir / "logs" / f"{child.name}.log"
        return f"--- last {LOG_TAIL_LINES} lines of {path} ---\n{log_tail(path)}"
