"""The current request's deadline, carried in a context variable so that
domain code can pass what is left of it to the calls it makes downstream
without knowing about gRPC."""

from __future__ import annotations

import contextvars
import time

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


def set_time_remaining(seconds: float | None) -> None:
    """Records the caller's deadline (None: the caller set none)."""
    _deadline.set(None if seconds is None else time.monotonic() + seconds)


def timeout(default: float) -> float:
    """Seconds to give a downstream call: what the caller has left, capped
    at `default`. Never below a small floor so a late call still fails
    cleanly with DEADLINE_EXCEEDED rather than an argument error."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.05, min(default, deadline - time.monotonic()))
