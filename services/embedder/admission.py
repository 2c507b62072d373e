"""Load shedding: at most `active` requests are decoded and embedded at
once, at most `queued` more wait for a turn, and the rest are refused at
once with RESOURCE_EXHAUSTED. Memory then stays bounded by
(active + queued) uploads plus `active` decoded signals, however many
clients call, and a caller learns to back off instead of timing out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.common.errors import ResourceExhausted


class Admission:
    def __init__(self, active: int, queued: int) -> None:
        self.active, self.queued = max(1, active), max(0, queued)
        self._slots = asyncio.Semaphore(self.active)
        self._inside = 0  # admitted: running or waiting for a slot

    @property
    def admitted(self) -> int:
        """Requests running or waiting for a turn."""
        return self._inside

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._inside >= self.active + self.queued:
            raise ResourceExhausted(
                f"the embedder is busy ({self.active} requests running, {self.queued} waiting; "
                "AUDIOSEARCH_MAX_ACTIVE_EMBEDS, AUDIOSEARCH_MAX_QUEUED_EMBEDS): retry with backoff"
            )
        self._inside += 1
        try:
            async with self._slots:
                yield
        finally:
            self._inside -= 1
