"""`audiosearch serve` as a supervisor, on real processes: it brings back
any child killed (and only that one), retries a relaunch that fails,
restarts a child that stops answering its health checks, gives up on a
crash loop with the log tail, refuses taken ports and a data dir in use,
takes its children with it when it is SIGKILLed, and clears what a dead
serve left behind. Waits are generous: a loaded 2-core machine passes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.cli.probes import wait_serving
from services.cli.supervisor import OFFSETS
from tests.test_e2e import free_port_block, reap, service_pids, wait_web
from tests.test_faults import ServiceProcesses

ALL = ("catalog", "search", "embedder", "gateway", "web")


class Serve:
    """One `audiosearch serve` (own process group), its ports and its stderr."""

    def __init__(self, tmp_path: Path, data_dir: Path, port: int, http_port: int, *extra: str) -> None:
        self.data_dir, self.port, self.http_port = data_dir, port, http_port
        self.env = {
            **os.environ,
            "AUDIOSEARCH_CNN14_DOWNLOAD": "false",
            "AUDIOSEARCH_CNN14_CHECKPOINT": str(tmp_path / "no-weights.pth"),
        }
        self.stderr_path = tmp_path / f"serve-{port}-{time.monotonic_ns()}.err"
        command = [sys.executable, "-m", "services.cli.main", "serve", "--data-dir", str(data_dir)]
        command += ["--port", str(port), "--metrics-port", "0", "--http-port", str(http_port), *extra]
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, env=self.env, stderr=stderr, start_new_session=True)
        self.children = ServiceProcesses(self.process.pid)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.http_port if name == 'web' else self.port + OFFSETS[name]}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_up(self, name: str | None = None, timeout: float = 180) -> None:
        """Until `name` answers SERVING; by default until serve says it is
        serving (its own checks see SERVING a little after ours can)."""
        if name is None:
            self.wait_for(lambda: "audiosearch serving on" in self.stderr(), timeout, "serve did not start")
        for each in [name] if name else self.names():
            if each == "web":
                wait_web(self.http_port, timeout)
            else:
                wait_serving(self.address(each), timeout, self.process)

    def names(self) -> tuple[str, ...]:
        return ALL if self.http_port else ALL[:4]

    def pids(self) -> dict[str, int]:
        return self.children.pids()

    def wait_relaunched(self, name: str, old: int) -> int:
        """Until `name` runs as a new process that answers SERVING; its pid."""
        self.wait_for(lambda: self.pids().get(name, old) != old, why=f"{name} (pid {old}) not relaunched")
        self.wait_up(name)
        return self.pids()[name]

    def wait_for(self, what: Callable[[], bool], timeout: float = 180, why: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, f"{why}; serve said:\n{self.stderr()[-3000:]}"
            time.sleep(0.2)


@pytest.fixture
def serves(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """Starts serves; every one is killed with its process group and listed
    children at the end, whatever the test did."""
    started: list[Serve] = []

    def start(data_dir: Path | None = None, port: int = 0, http_port: int = 0, *extra: str) -> Serve:
        serve = Serve(tmp_path, data_dir or tmp_path / "data", port or free_port_block(), http_port, *extra)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        reap(serve.process, serve.data_dir)


def run_serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A serve expected to refuse at once."""
    command = [sys.executable, "-m", "services.cli.main", "serve", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def listening_socket(port: int, timeout: float = 30) -> socket.socket:
    """Takes 127.0.0.1:port as a foreign server would, as soon as it is free
    (a killed process lets go of its sockets when its last thread is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the TIME_WAIT of a just-killed child
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        s.listen()
        return s


def gone(pid: int) -> bool:
    """Exited (a zombie counts: it is dying and only waits to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is gone
    except OSError:
        return True


@pytest.mark.timeout(900)
def test_any_dead_child_comes_back_and_the_others_keep_running(serves: Callable[..., Serve]) -> None:
    serve = serves(None, 0, free_port_block(1), "--unhealthy-after", "10")
    serve.wait_up()
    for name in ALL:
        before = serve.pids()
        assert set(before) == set(ALL), before
        os.kill(before[name], signal.SIGKILL)
        serve.wait_relaunched(name, before[name])
        after = serve.pids()
        assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}
    assert "web (pid" in serve.stderr() and "was killed by SIGKILL; restarting it" in serve.stderr()

    # A second serve on the same data dir, or on the same ports: refused at once, this one untouched.
    again = run_serve(serve.env, "--data-dir", str(serve.data_dir), "--port", "1")
    assert again.returncode == 1
    assert f"another audiosearch serve (pid {serve.process.pid}) is using {serve.data_dir}" in again.stderr
    other = run_serve(
        serve.env,
        "--data-dir",
        str(serve.data_dir.parent / "other"),
        "--port",
        str(serve.port),
        "--http-port",
        str(serve.http_port),
        "--metrics-port",
        "0",
    )
    assert other.returncode == 1
    taken = min(serve.port, serve.http_port)  # serve names the lowest port it finds taken
    assert f"audiosearch: port {taken} is in use (another audiosearch serve?)" in other.stderr

    # A relaunch that fails (its port taken by someone else) is retried until it works.
    os.kill(serve.process.pid, signal.SIGSTOP)  # so the port is taken before serve looks
    catalog = serve.pids()["catalog"]
    os.kill(catalog, signal.SIGKILL)
    serve.wait_for(lambda: gone(catalog), 30, "catalog not dead")
    blocker = listening_socket(serve.port + OFFSETS["catalog"])
    os.kill(serve.process.pid, signal.SIGCONT)
    try:
        serve.wait_for(lambda: serve.stderr().count(f"port {serve.port + 3} is in use") >= 2, 60, "no retry")
    finally:
        blocker.close()
    serve.wait_relaunched("catalog", catalog)
    assert "restarting it in 1 s" in serve.stderr()

    # A child that stops answering its health checks is killed and restarted.
    stuck = serve.pids()["search"]
    os.kill(stuck, signal.SIGSTOP)
    serve.wait_relaunched("search", stuck)
    assert f"search (pid {stuck}) was unhealthy for" in serve.stderr()
    assert set(serve.pids()) == set(ALL) and serve.process.poll() is None


@pytest.mark.timeout(600)
def test_a_crash_loop_gives_up_with_the_log_tail(serves: Callable[..., Serve]) -> None:
    serve = serves()
    serve.wait_up()
    children = serve.pids()
    # The catalog can no longer open its database: every relaunch exits at once.
    db = serve.data_dir / "catalog.db"
    os.kill(serve.process.pid, signal.SIGSTOP)  # no relaunch before the database is gone
    os.kill(children["catalog"], signal.SIGKILL)
    serve.wait_for(lambda: gone(children["catalog"]), 30, "catalog not dead")
    db.rename(db.with_suffix(".db.moved"))
    db.mkdir()
    os.kill(serve.process.pid, signal.SIGCONT)
    assert serve.process.wait(300) == 1
    err = serve.stderr()
    assert "failures within 60 s: giving up" in err, err[-3000:]
    assert f"--- last 40 lines of {serve.data_dir / 'logs' / 'catalog.log'} ---" in err
    assert "unable to open database file" in err.split("--- last 40 lines", 1)[1]
    assert "restarting it in 1 s" in err and "restarting it in 2 s" in err  # backoff
    assert all(gone(pid) for pid in children.values())  # stopped everything
    assert not (serve.data_dir / "serve.pid").exists()


@pytest.mark.timeout(600)
def test_children_die_with_serve_and_leftovers_are_cleared(tmp_path: Path, serves: Callable[..., Serve]) -> None:
    first = serves(None, 0, free_port_block(1))
    first.wait_up()
    children = first.pids()
    assert set(children) == set(ALL) and service_pids(first.data_dir) == children
    os.kill(first.process.pid, signal.SIGKILL)  # as the OOM killer would
    first.process.wait()
    first.wait_for(lambda: all(gone(pid) for pid in children.values()), 20, f"orphans left: {children}")

    # A leftover of a dead serve (here one it never stopped) on the catalog's port: the next serve stops it.
    catalog_env = {
        **first.env,
        "AUDIOSEARCH_LISTEN": first.address("catalog"),
        "AUDIOSEARCH_DATA_DIR": str(first.data_dir.resolve()),
        "AUDIOSEARCH_METRICS_LISTEN": "",
    }
    with (tmp_path / "leftover.log").open("wb") as log:
        leftover = subprocess.Popen(
            [sys.executable, "-m", "services.catalog"], env=catalog_env, stdout=log, stderr=log, start_new_session=True
        )
    try:
        wait_serving(first.address("catalog"), 120, leftover)
        record = json.loads((first.data_dir / "serve.pid").read_text())  # the dead serve's own record
        record["children"] = {"catalog": leftover.pid}
        (first.data_dir / "serve.pid").write_text(json.dumps(record))
        second = serves(first.data_dir, first.port)
        second.wait_up()
        assert leftover.wait(60) is not None
        assert f"stopping catalog (pid {leftover.pid}), left running" in second.stderr()
        assert service_pids(second.data_dir) == second.pids()
        second.process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert second.process.wait(120) == 0
        assert not (second.data_dir / "serve.pid").exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_taken_port_stops_serve_before_it_starts_anything(tmp_path: Path, serves: Callable[..., Serve]) -> None:
    port = free_port_block()
    blocker = listening_socket(port + OFFSETS["search"])
    try:
        began = time.monotonic()
        serve = serves(None, port)
        code = serve.process.wait(60)
        took = time.monotonic() - began
    finally:
        blocker.close()
    assert code == 1
    assert f"audiosearch: port {port + 2} is in use (another audiosearch serve?)" in serve.stderr()
    assert not (serve.data_dir / "logs").exists()  # nothing was started
    print(f"serve refused the taken port in {took:.2f} s")
