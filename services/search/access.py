"""Who may touch a Milvus Lite collection at once: many readers, or one writer.

Milvus Lite runs inside this process as a thread-pool gRPC server, and its
collections are not safe for concurrent writers: two upserts at once
interleave their batches in the write-ahead log (after a SIGKILL the log
is replayed only up to the first damaged batch, losing acknowledged
writes), and opening a collection from two threads at once builds two
instances of it, one of which stays released. So every write (upsert,
delete, flush, create, drop, load) holds the lock alone; searches and
queries share it. A Milvus server needs none of this (`AccessLock(False)`).

Bound: a caller waits at most `timeout` seconds for the lock, then gets
`Unavailable`, so a stuck store shows up as errors and a failing health
probe, never as a queue that hangs forever."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from services.common.errors import Unavailable


class AccessLock:
    """A writer-preferring readers-writer lock (off: every entry is free)."""

    def __init__(self, enabled: bool = True, timeout: float = 60.0) -> None:
        self.enabled, self.timeout = enabled, timeout
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def _wait(self, free: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not free():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"the vector store is busy: no {what} access within {self.timeout:.0f} s; retry")
            self._cond.wait(left)

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._cond:
            self._wait(lambda: not self._writer and not self._waiting_writers, "read")
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._cond:
            self._waiting_writers += 1
            try:
                self._wait(lambda: not self._writer and not self._readers, "write")
            finally:
                self._waiting_writers -= 1
                self._cond.notify_all()  # readers held back by this writer may go if it gave up
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
