"""Re-embedding a library's READY items with a model, into a collection
(a reindex's steps 2 and 5, services/gateway/reindex.py): each from its
kept upload or else its server path when that still holds the same
content, a few at a time, counted in the reindex's `Tally`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Sequence

from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument, ServiceError
from services.common.text import quoted
from services.gateway.ports import Backends, Item, Library, ModelChange
from services.gateway.reindex_progress import Failure, Progress, Tally
from services.gateway.retry import retry
from services.gateway.server_paths import ServerPaths

log = logging.getLogger(__name__)

JOBS = 4  # items re-embedded at once (the embedder batches across requests)
PAGE = 1000  # items per catalog listing
ROUNDS = 10  # checks of the staging collection against the catalog before the switch


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Reembed:
    def __init__(self, backends: Backends, paths: ServerPaths, tally: Tally) -> None:
        self.backends, self.paths, self.tally = backends, paths, tally
        self.catalog, self.vectors, self.embedder = backends.catalog, backends.vectors, backends.embedder

    async def _ready(self, library: str) -> dict[int, Item]:
        items: dict[int, Item] = {}
        token = ""
        while True:
            page, token = await self.catalog.list_items(library, PAGE, token, "")
            items.update((item.id, item) for item in page)
            if not token:
                return items

    async def fill(self, library: str, stage: str, change: ModelChange, resumed: bool) -> AsyncIterator[Progress]:
        """Step 2: the staging collection, until it matches the catalog."""
        tally = self.tally
        for _ in range(ROUNDS):
            ready = await self._ready(library)
            staged = await self.vectors.item_ids(stage)
            gone = sorted(staged - ready.keys())
            if gone:  # deleted (or hidden by repair) since their vectors were written
                await self.vectors.delete(stage, gone)
            for gone_id in [i for i in tally.failures if i not in ready]:  # a failed item deleted meanwhile
                del tally.failures[gone_id]
            if not tally.seen and resumed:
                tally.skipped = len(staged & ready.keys())
            tally.seen.update(ready)
            todo = [item for i, item in ready.items() if i not in staged and i not in tally.failures]
            yield tally.progress()
            if not todo:
                return
            async with contextlib.aclosing(self._embed_all(todo, stage, change)) as results:
                async for item, reason in results:
                    if reason:
                        failure = Failure(item_id=item.id, name=item.name, reason=reason)
                        tally.failures[item.id] = failure
                        log.warning("reindex: item %d (%r) of %r: %s", item.id, item.name, library, reason)
                        yield tally.progress(failure=failure)
                    else:
                        tally.reindexed += 1
                        yield tally.progress()
        # Still changing after that many checks: items are pouring in. Those
        # that missed the last check are picked up after the switch (step 5).

    async def _embed_all(self, items: Sequence[Item], key: str, change: ModelChange) -> AsyncIterator[tuple[Item, str]]:
        """(item, why it could not be re-embedded, or ""), as each finishes,
        JOBS at a time; an error no single item explains stops them all."""
        queue = iter(items)
        running: dict[asyncio.Task[str], Item] = {}

        def start() -> None:
            item = next(queue, None)
            if item is not None:
                running[asyncio.create_task(self._one(item, key, change))] = item

        for _ in range(JOBS):
            start()
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    item = running.pop(task)
                    reason = task.result()
                    start()
                    yield item, reason
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _one(self, item: Item, key: str, change: ModelChange) -> str:
        data, reason = await self._source(item)
        if data is None:
            return reason
        try:
            embedded = await retry(lambda: self.embedder.embed(data, change.model, 0, change.window, change.hop))
        except InvalidArgument as exc:
            return f"the embedder refused it: {exc.message}"
        if embedded.model != change.model or embedded.dim != change.dim:
            raise FailedPrecondition(
                f"the embedder returned {embedded.model} ({embedded.dim}-d) vectors, "
                f"not {change.model} ({change.dim}-d)",
                reason=reasons.LIBRARY_MODEL_MISMATCH,
            )
        if not embedded.windows:
            return f"{change.model} made no windows of it"
        await retry(lambda: self.vectors.upsert(key, change.model, change.dim, item.id, embedded.windows))
        return ""

    async def _source(self, item: Item) -> tuple[bytes | None, str]:
        """The item's audio, from its kept upload or else its server path,
        checked against its sha256; else None and why not."""
        audio = self.backends.audio
        data = await audio.read(item.library, item.id)
        if data is not None and await asyncio.to_thread(_sha256, data) == item.sha256:
            return data, ""
        if data is not None:
            kept = "its kept upload does not match its sha256"
        elif audio.root is None:
            kept = "no kept upload (this gateway does not keep audio: AUDIOSEARCH_KEEP_AUDIO=false)"
        else:
            kept = "no kept upload"
        path = item.source_uri
        if not path or not os.path.isabs(path):
            return None, f"{kept}, and no server path to read it from (it was uploaded)"
        try:
            data = await asyncio.to_thread(self.paths.read, path)
        except ServiceError as exc:
            return None, f"{kept}, and its source {quoted(path)} cannot be read: {exc.message}"
        if await asyncio.to_thread(_sha256, data) != item.sha256:
            return None, f"{kept}, and its source {quoted(path)} holds other content now"
        return data, ""

    async def catch_up(self, lib: Library) -> list[Failure]:
        """Step 5: items that became READY during the switch with vectors of
        the old model only get the new model's now; those that cannot (the
        switch is done: repair hides them until they are inserted again)."""
        live = await self.vectors.item_ids(lib.name)
        late = [item for i, item in (await self._ready(lib.name)).items() if i not in live]
        change = ModelChange(model=lib.model, dim=lib.dim, window=lib.window, hop=lib.hop)
        failures = []
        for item in late:
            self.tally.seen.add(item.id)
            reason = await self._one(item, lib.name, change)
            if reason:
                why = f"inserted during the switch, it has no {lib.model} vectors: {reason}"
                failure = Failure(item_id=item.id, name=item.name, reason=why)
                self.tally.failures[item.id] = failure
                failures.append(failure)
                log.warning("reindex: item %d of %r: %s", item.id, lib.name, failure.reason)
            else:
                self.tally.reindexed += 1
        return failures
