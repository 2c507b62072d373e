"""Repair that nobody has to ask for: at start-up, and each time the search
service comes back from a restart (a store that crashed may have lost
writes it never acknowledged as durable, or a backend may have been
restored from a backup), so the stores agree again without waiting for the
next gateway start or a manual `audiosearch repair`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from services.common.errors import ServiceError
from services.gateway.repair import Action

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, repair: Callable[[], Awaitable[list[Action]]]) -> None:
        """`repair`: one repair with the gateway's settings (`Gateway.repair`)."""
        self._repair = repair
        # One repair at a time: a comeback during the start-up repair waits
        # for it instead of doing the same work beside it.
        self._one_at_a_time = asyncio.Lock()

    async def repair(self, why: str, attempts: int = 10) -> None:
        """One repair; the other services may still be starting, so failures
        are retried with backoff (1, 2, 4 ... 60 s; about 8 minutes in all)."""
        for attempt in range(attempts):
            try:
                async with self._one_at_a_time:
                    actions = await self._repair()
            except ServiceError as exc:
                log.warning("%s repair failed (attempt %d of %d): %s", why, attempt + 1, attempts, exc.message)
            except Exception:  # a bug must not end the background task: log it, try again later
                log.exception("%s repair failed (attempt %d of %d)", why, attempt + 1, attempts)
            else:
                log.info("%s repair: %s", why, f"{len(actions)} inconsistencies fixed" if actions else "nothing to fix")
                return
            await asyncio.sleep(min(60.0, 2.0**attempt))

    async def after_comebacks(self, comebacks: AsyncIterator[None]) -> None:
        """A repair after each comeback of the search service."""
        async for _ in comebacks:
            log.info("the search service is back after a restart: checking the stores agree")
            await self.repair("post-restart")
