"""One child of `audiosearch serve`: its process, where it is in the
supervisor's state machine, and what to tell the user when it fails."""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import grpc

LOG_TAIL_LINES = 40


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file (read from its last 256 KiB)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - (256 << 10)))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


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
