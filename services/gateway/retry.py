"""Calls retried through a restart of a service behind the gateway, or a
busy embedder: for long jobs (a reindex) that should ride those out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.common.errors import DeadlineExceeded, ResourceExhausted, Unavailable

RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
TRANSIENT = (Unavailable, ResourceExhausted, DeadlineExceeded)
T = TypeVar("T")


async def retry(call: Callable[[], Awaitable[T]]) -> T:
    """`call`, again after failures a wait may cure (about 30 s in all)."""
    for wait in (*RETRY_WAITS, None):
        try:
            return await call()
        except TRANSIENT:
            if wait is None:
                raise
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")
