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

import collections
import contextlib
import dataclasses
import errno
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import config as cfg
from services.common.channels import open_blocking_channel, reconnect_backoff
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
HEALTH_TIMEOUT = 2.0  # one health check's deadline, seconds
CHECK_EVERY = {"starting": 0.5, "serving": 1.0}  # seconds between health checks
TICK = 0.2  # the watch loop's period, seconds
LOG_TAIL_LINES = 40
LEFTOVER_GRACE = 5.0  # seconds a leftover child gets after SIGTERM, before SIGKILL
# Health polls reconnect within a second to a child that just (re)started
# (open_blocking_channel also gives each channel connections of its own).
_PROBE_OPTIONS = reconnect_backoff(1000)


class StackError(RuntimeError):
    """The stack cannot start or go on; the message says why, for the user."""


class PortInUse(StackError):
    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use (another audiosearch serve?)")
        self.port = port


class DataDirInUse(StackError):
    pass


class StartFailed(StackError):
    pass


class CrashLoop(StackError):
    pass


class Interrupted(StackError):
    """SIGINT or SIGTERM arrived during `start`; what had started is stopped."""


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
    with open_blocking_channel(address, tls, options=_PROBE_OPTIONS) as channel:
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


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file (read from its last 256 KiB)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - (256 << 10)))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _cmdline(pid: int) -> list[str]:
    """A process's argv ([] when it is gone or a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return {}
    return dict(entry.partition("=")[::2] for entry in raw.split("\0") if entry)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


@dataclasses.dataclass
class Child:
    """One service process and where it is in the state machine."""

    name: str
    address: str
    ports: tuple[int, ...]  # all it listens on: probed before each relaunch
    process: subprocess.Popen[bytes] | None = None
    state: str = "waiting"  # "starting" | "serving" | "waiting"
    since: float = 0.0  # starting: when it was launched
    retry_at: float = 0.0  # waiting: when to launch it again
    delay: float = 0.0  # the wait after its next failure
    failures: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    unhealthy_since: float | None = None
    health: str = "no answer yet"  # what the last health check said
    check: Any = None  # the health check in flight: grpc.Future or Future[str]
    asked_at: float = 0.0
    channel: grpc.Channel | None = None  # for its gRPC health checks (none for web)
    launches: int = 0


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
                name,
                self.addresses[name],
                tuple(_port(a) for a in (self.addresses[name], self.metrics_addresses.get(name)) if a),
            )
            for name in self.services
        }
        self.pid_file = self.data_dir / "serve.pid"
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
        stopped = self._clear_leftovers()
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
            child.channel = open_blocking_channel(child.address, self.tls, options=_PROBE_OPTIONS)
        self._write_pid_file()

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
            return f"{pid} {_exit_text(code)}" + (" while starting" if child.state == "starting" else "")
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
            verdict = child.health = _verdict(child.check)
            child.check = None
        if child.check is None and now - child.asked_at >= CHECK_EVERY[child.state]:
            child.asked_at = now
            if child.name == "web":  # HTTP, in a worker thread
                if self._http_pool is None:
                    self._http_pool = ThreadPoolExecutor(1, thread_name_prefix="web-health")
                child.check = self._http_pool.submit(_http_health, f"http://{child.address}/healthz")
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
        record = self._read_pid_file()
        if record and record.get("pid") == os.getpid():
            self.pid_file.unlink(missing_ok=True)

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

    # serve.pid and leftovers

    def _write_pid_file(self) -> None:
        record = {
            "pid": os.getpid(),
            "cmdline": _cmdline(os.getpid()),
            "children": {name: c.process.pid for name, c in self.children.items() if c.process is not None},
        }
        tmp = self.pid_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.pid_file)  # a reader never sees half a file
        except OSError as exc:  # a full disk must not stop the stack: only leftover detection suffers
            print(f"audiosearch: cannot write {self.pid_file}: {exc.strerror}", file=sys.stderr, flush=True)

    def _read_pid_file(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _clear_leftovers(self) -> bool:
        """Stops the children a dead serve left running on this data dir
        (SIGTERM, SIGKILL after LEFTOVER_GRACE s); True if there were any."""
        record = self._read_pid_file()
        if not record:
            return False
        owner = record.get("pid")
        # The recorded command line tells our serve from a reused pid.
        if isinstance(owner, int) and owner != os.getpid() and _cmdline(owner) == record.get("cmdline"):
            raise DataDirInUse(f"another audiosearch serve (pid {owner}) is using {self.data_dir}")
        children = record.get("children") or {}
        stray = {pid: name for name, pid in children.items() if isinstance(pid, int) and self._ours(pid, name)}
        for pid, name in stray.items():
            print(
                f"audiosearch: stopping {name} (pid {pid}), left running in {self.data_dir} by a serve "
                f"(pid {owner}) that is gone",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for sig in (signal.SIGKILL, None):
            deadline = time.monotonic() + LEFTOVER_GRACE
            while time.monotonic() < deadline and any(self._ours(pid, name) for pid, name in stray.items()):
                time.sleep(0.1)
            for pid, name in stray.items():
                if sig is not None and self._ours(pid, name):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
        still = [pid for pid, name in stray.items() if self._ours(pid, name)]
        if still:
            raise StackError(f"leftover service processes {still} of a dead serve do not stop")
        return bool(stray)

    def _ours(self, pid: int, name: str) -> bool:
        """Whether `pid` is (still) our `python -m services.<name>` on this data
        dir: not a zombie, not an unrelated process that reused the pid."""
        argv = _cmdline(pid)
        module = f"services.{name}"
        if not any(a == "-m" and b == module for a, b in itertools.pairwise(argv)):
            return False
        return _environ(pid).get("AUDIOSEARCH_DATA_DIR") == str(self.data_dir)

    def _tail(self, child: Child) -> str:
        path = self.data_dir / "logs" / f"{child.name}.log"
        return f"--- last {LOG_TAIL_LINES} lines of {path} ---\n{log_tail(path)}"


def _verdict(check: Any) -> str:
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


def _http_health(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT) as response:  # noqa: S310 - our own loopback URL
            return "SERVING" if response.status == 200 else f"HTTP {response.status}"
    except Exception as exc:  # noqa: BLE001 - refused, timed out, or a half-started server's garbage
        return f"no answer ({exc})"
