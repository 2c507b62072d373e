"""DATA_DIR/serve.pid: the serve using a data dir and its children, so the
next serve can tell a live serve (refuse) from the leftovers of a dead one
(stop them)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from services.cli.stack_errors import DataDirInUse, StackError

LEFTOVER_GRACE = 5.0  # seconds a leftover child gets after SIGTERM, before SIGKILL


def cmdline(pid: int) -> list[str]:
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


class PidFile:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "serve.pid"

    def write(self, children: dict[str, int]) -> None:
        """Names this process and its `children` (pids by service name)."""
        record = {"pid": os.getpid(), "cmdline": cmdline(os.getpid()), "children": children}
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)  # a reader never sees half a file
        except OSError as exc:  # a full disk must not stop the stack: only leftover detection suffers
            print(f"audiosearch: cannot write {self.path}: {exc.strerror}", file=sys.stderr, flush=True)

    def read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def remove_if_ours(self) -> None:
        record = self.read()
        if record and record.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def clear_leftovers(self) -> bool:
        """Stops the children a dead serve left running on this data dir
        (SIGTERM, SIGKILL after LEFTOVER_GRACE s); True if there were any.
        Raises DataDirInUse when that serve is alive."""
        record = self.read()
        if not record:
            return False
        owner = record.get("pid")
        # The recorded command line tells our serve from a reused pid.
        if isinstance(owner, int) and owner != os.getpid() and cmdline(owner) == record.get("cmdline"):
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
        argv = cmdline(pid)
        module = f"services.{name}"
        if not any(a == "-m" and b == module for a, b in itertools.pairwise(argv)):
            return False
        return _environ(pid).get("AUDIOSEARCH_DATA_DIR") == str(self.data_dir)
