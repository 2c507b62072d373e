"""Moving a library to another embedding model (GatewayService.ReindexLibrary).

Every READY item is re-embedded with the new model, from its kept upload or
else its server path when that still holds the same content (as repair
does), into the library's *staging* collection for that model (the search
service's key "<library>@<model>"), while searches keep using the library's
own vectors. Item rows (ids, names, user and automatic tags, metadata) are
never touched.

The steps, and what an interruption at each leaves:
1. The catalog records the change (StartModelChange); the library keeps its
   model. The same change again resumes it; another one replaces it, and
   the vectors that one had written are dropped.
2. Items are embedded into the staging collection, skipping those an
   earlier, interrupted run with the same settings wrote. The staging
   collection is then checked against the catalog until it holds every
   READY item and nothing else (items inserted meanwhile are added, deleted
   ones removed). Interrupted here, the library is as it was: on its model,
   every item searchable; running again continues. An item that cannot be
   re-embedded stops the move here (FAILED_PRECONDITION, every such item
   reported): no item may lose its vectors.
3. The catalog switches the library's model, dimension, window and hop in
   one update (FinishModelChange): the commit. From then on every request
   names the new model, and the search service serves those from the
   staging collection.
4. The search service adopts the staging collection as the library's own
   and drops the old one (CreateCollection for the new model). Steps 3 and
   4 run shielded from the caller's cancellation; if the gateway dies
   between them, the next run (with that model or another) finishes step 4
   first.
5. Items that became READY during the switch without new vectors (an insert
   that straddled it) are re-embedded into the library's collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.common.limits import MAX_WINDOW_SECONDS
from services.common.text import quoted
from services.gateway import access
from services.gateway.domain import Item, Library, ModelChange, ModelStatus

if TYPE_CHECKING:
    from services.gateway.orchestrator import Gateway

log = logging.getLogger(__name__)

SWITCHED, UNCHANGED, CANCELLED = "switched", "unchanged", "cancelled"
OUTCOMES = (SWITCHED, UNCHANGED, CANCELLED)
JOBS = 4  # items re-embedded at once (the embedder batches across requests)
PAGE = 1000  # items per catalog listing
ROUNDS = 10  # checks of the staging collection against the catalog before the switch
RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # a service behind the gateway restarting, a busy embedder
TRANSIENT = (Unavailable, ResourceExhausted, DeadlineExceeded)
LISTED = 10  # failed items named in the error message (the stream reports every one)
T = TypeVar("T")


def staging_key(library: str, model: str) -> str:
    """The search service's name for the library's staging collection."""
    return f"{library}@{model}"


@dataclasses.dataclass(frozen=True)
class Failure:
    item_id: int
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Progress:
    """Counts since the call began; the last one also says how it ended."""

    total: int = 0
    reindexed: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed: float = 0.0
    failure: Failure | None = None  # the item this message reports
    outcome: str = ""  # last message: SWITCHED, UNCHANGED or CANCELLED
    library: Library | None = None  # last message: the library as it is now
    previous_model: str = ""  # last message: its model when the call began
    detail: str = ""  # last message: what was done, for people


async def _retry(call: Callable[[], Awaitable[T]]) -> T:
    """`call`, again after failures a wait may cure (about 30 s in all)."""
    for wait in (*RETRY_WAITS, None):
        try:
            return await call()
        except TRANSIENT:
            if wait is None:
                raise
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Reindex:
    def __init__(self, gateway: Gateway, library: str, model: str, window: float = 0.0, hop: float = 0.0) -> None:
        self.gateway, self.library, self.model, self.window, self.hop = gateway, library, model, window, hop
        self.catalog, self.vectors, self.embedder = gateway.catalog, gateway.vectors, gateway.embedder
        self.started = time.monotonic()
        self.seen: set[int] = set()  # READY items met so far
        self.reindexed = self.skipped = 0
        self.failures: dict[int, Failure] = {}

    def _progress(self, **last: object) -> Progress:
        return Progress(
            len(self.seen),
            self.reindexed,
            self.skipped,
            len(self.failures),
            time.monotonic() - self.started,
            **last,  # type: ignore[arg-type]
        )

    async def run(self) -> AsyncIterator[Progress]:
        access.require_admin("reindex a library")
        if not self.library:
            raise InvalidArgument("library must be set")
        if not self.model:
            raise InvalidArgument("model must be set: the model to move the library to (audiosearch stats lists them)")
        for what, value in (("window_seconds", self.window), ("hop_seconds", self.hop)):
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"{what} must be 0 (the new model's default) or more, got {value}")
        lib = await self.catalog.get_library(self.library)
        status = await self._usable(self.model)
        window = self.window or status.window
        hop = self.hop or min(status.hop, window)
        if not 0 < window <= MAX_WINDOW_SECONDS:
            raise InvalidArgument(f"window must be more than 0 and at most {MAX_WINDOW_SECONDS} s, got {window}")
        if not 0 < hop <= window:
            raise InvalidArgument(f"hop ({hop} s) must be positive and at most the window ({window} s)")
        # Two calls moving one library (two gateways, say) are safe: they write
        # the same vectors, and the catalog switches only to a change still
        # pending; the later one finds the work done or reports what changed.
        adopted = await self._finish_interrupted_switch(lib)
        if status.name == lib.model:
            yield await self._same_model(lib, status, window, hop, adopted)
            return
        change = ModelChange(status.name, status.dim, window, hop)
        async with contextlib.aclosing(self._move(lib, status, change)) as moving:
            async for progress in moving:
                yield progress

    async def _usable(self, model: str) -> ModelStatus:
        status = await self.gateway.model_status(model)  # an unknown model: INVALID_ARGUMENT, naming the known ones
        if status.loading:
            raise Unavailable(f"model {status.name} is still loading (a first start downloads weights); retry shortly")
        if not status.available:
            raise FailedPrecondition(f"model {status.name} is unavailable: {status.reason}")
        return status

    async def _exists(self, key: str) -> bool:
        try:
            await self.vectors.get(key, 0)  # no item 0: a cheap look at the collection
        except NotFound:
            return False
        return True

    async def _finish_interrupted_switch(self, lib: Library) -> bool:
        """Step 4 of a run that stopped between steps 3 and 4 (the library
        is on its new model, its staging collection not adopted yet); a
        staging collection for the model the library has already adopted
        is a leftover, dropped. True when it adopted one."""
        stage = staging_key(lib.name, lib.model)
        if not await self._exists(stage):
            return False
        try:
            status = await self.gateway.model_status(lib.model)
        except InvalidArgument:
            return False  # no longer offered: nothing can be adopted for it
        await _retry(lambda: self.vectors.create(lib.name, lib.model, lib.dim, status.sparse))
        if await self._exists(stage):
            await self.vectors.drop(stage)
            return False
        log.info("reindex: finished the interrupted switch of library %r to %s", lib.name, lib.model)
        return True

    async def _same_model(
        self, lib: Library, status: ModelStatus, window: float, hop: float, adopted: bool
    ) -> Progress:
        now_window, now_hop = lib.window or status.window, lib.hop or status.hop
        if (self.window and not _close(window, now_window)) or (self.hop and not _close(hop, now_hop)):
            raise FailedPrecondition(
                f"library {quoted(lib.name)} already uses {lib.model} (window {now_window:g} s, hop {now_hop:g} s); "
                "a reindex moves a library to another model, it cannot change only the window or hop"
            )
        if status.dim != lib.dim:
            raise FailedPrecondition(
                f"library {quoted(lib.name)} holds {lib.dim}-d {lib.model} vectors and {lib.model} is now "
                f"{status.dim}-d: a reindex cannot move a library within one model; create a new library"
            )
        cancelled = await self.catalog.cancel_model_change(lib.name)
        if cancelled is not None:
            await self.vectors.drop(staging_key(lib.name, cancelled.model))
            return self._progress(
                outcome=CANCELLED,
                library=lib,
                previous_model=lib.model,
                detail=f"library {lib.name} already uses {lib.model}; the unfinished move to {cancelled.model} "
                "was abandoned and the vectors it had written are dropped",
            )
        if adopted:
            await self._catch_up(lib)  # (such items are counted in `failed`: a switch cut short is rare enough)
            return self._progress(
                outcome=SWITCHED,
                library=lib,
                detail=f"finished the switch of library {lib.name} to {lib.model} that an interrupted reindex had "
                "begun; the old vectors are dropped",
            )
        return self._progress(
            outcome=UNCHANGED,
            library=lib,
            previous_model=lib.model,
            detail=f"library {lib.name} already uses {lib.model}: nothing to do",
        )

    async def _move(self, lib: Library, status: ModelStatus, change: ModelChange) -> AsyncIterator[Progress]:
        resumed, replaced = await self.catalog.start_model_change(lib.name, change)
        stage = staging_key(lib.name, change.model)
        if replaced is not None and replaced.model != change.model:
            await self.vectors.drop(staging_key(lib.name, replaced.model))
        if not resumed:  # whatever is there was written with other settings: start afresh
            await self.vectors.drop(stage)
        await self.vectors.create(stage, change.model, change.dim, status.sparse)
        log.info(
            "reindex: %s library %r from %s to %s (window %g s, hop %g s)",
            "resuming the move of" if resumed else "moving",
            lib.name,
            lib.model,
            change.model,
            change.window,
            change.hop,
        )
        try:
            async with contextlib.aclosing(self._fill(lib.name, stage, change, resumed)) as filling:
                async for progress in filling:
                    yield progress
        except NotFound:
            await self.catalog.get_library(lib.name)  # deleted meanwhile: that NOT_FOUND
            raise FailedPrecondition(
                f"the new vectors of library {quoted(lib.name)} disappeared while it was being reindexed (another "
                "reindex of it finished, replaced or cancelled this one); run it again"
            ) from None
        if self.failures:
            raise FailedPrecondition(self._refusal(lib, change))
        # The commit and the adoption run to the end even if the caller goes
        # away meanwhile: stopping between them would leave the old vectors
        # serving requests that read the library by id.
        new = await asyncio.shield(self._switch(lib.name, change, status.sparse))
        for failure in await self._catch_up(new):
            yield self._progress(failure=failure)
        log.info("reindex: library %r moved from %s to %s", lib.name, lib.model, change.model)
        yield self._progress(
            outcome=SWITCHED,
            library=new,
            previous_model=lib.model,
            detail=f"library {lib.name} moved from {lib.model} to {change.model}; the old vectors are dropped",
        )

    async def _switch(self, name: str, change: ModelChange, sparse: bool) -> Library:
        new = await _retry(lambda: self.catalog.finish_model_change(name, change.model))  # step 3: the commit
        await _retry(lambda: self.vectors.create(name, change.model, change.dim, sparse))  # step 4: adoption
        return new

    async def _ready(self, library: str) -> dict[int, Item]:
        items: dict[int, Item] = {}
        token = ""
        while True:
            page, token = await self.catalog.list_items(library, PAGE, token, "")
            items.update((item.id, item) for item in page)
            if not token:
                return items

    async def _fill(self, library: str, stage: str, change: ModelChange, resumed: bool) -> AsyncIterator[Progress]:
        """Step 2: the staging collection, until it matches the catalog."""
        for _ in range(ROUNDS):
            ready = await self._ready(library)
            staged = await self.vectors.item_ids(stage)
            gone = sorted(staged - ready.keys())
            if gone:  # deleted (or hidden by repair) since their vectors were written
                await self.vectors.delete(stage, gone)
            for gone_id in [i for i in self.failures if i not in ready]:  # a failed item deleted meanwhile
                del self.failures[gone_id]
            if not self.seen and resumed:
                self.skipped = len(staged & ready.keys())
            self.seen.update(ready)
            todo = [item for i, item in ready.items() if i not in staged and i not in self.failures]
            yield self._progress()
            if not todo:
                return
            async with contextlib.aclosing(self._embed_all(todo, stage, change)) as results:
                async for item, reason in results:
                    if reason:
                        failure = Failure(item.id, item.name, reason)
                        self.failures[item.id] = failure
                        log.warning("reindex: item %d (%r) of %r: %s", item.id, item.name, library, reason)
                        yield self._progress(failure=failure)
                    else:
                        self.reindexed += 1
                        yield self._progress()
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
            embedded = await _retry(lambda: self.embedder.embed(data, change.model, 0, change.window, change.hop))
        except InvalidArgument as exc:
            return f"the embedder refused it: {exc.message}"
        if embedded.model != change.model or embedded.dim != change.dim:
            raise FailedPrecondition(
                f"the embedder returned {embedded.model} ({embedded.dim}-d) vectors, "
                f"not {change.model} ({change.dim}-d)"
            )
        if not embedded.windows:
            return f"{change.model} made no windows of it"
        await _retry(lambda: self.vectors.upsert(key, change.model, change.dim, item.id, embedded.windows))
        return ""

    async def _source(self, item: Item) -> tuple[bytes | None, str]:
        """The item's audio, from its kept upload or else its server path,
        checked against its sha256; else None and why not."""
        data = await self.gateway.audio.read(item.library, item.id)
        if data is not None and await asyncio.to_thread(_sha256, data) == item.sha256:
            return data, ""
        if data is not None:
            kept = "its kept upload does not match its sha256"
        elif self.gateway.audio.root is None:
            kept = "no kept upload (this gateway does not keep audio: AUDIOSEARCH_KEEP_AUDIO=false)"
        else:
            kept = "no kept upload"
        path = item.source_uri
        if not path or not os.path.isabs(path):
            return None, f"{kept}, and no server path to read it from (it was uploaded)"
        try:
            data = await asyncio.to_thread(self.gateway.read_allowed_file, path)
        except ServiceError as exc:
            return None, f"{kept}, and its source {quoted(path)} cannot be read: {exc.message}"
        if await asyncio.to_thread(_sha256, data) != item.sha256:
            return None, f"{kept}, and its source {quoted(path)} holds other content now"
        return data, ""

    async def _catch_up(self, lib: Library) -> list[Failure]:
        """Step 5: items that became READY during the switch with vectors of
        the old model only get the new model's now; those that cannot (the
        switch is done: repair hides them until they are inserted again)."""
        live = await self.vectors.item_ids(lib.name)
        late = [item for i, item in (await self._ready(lib.name)).items() if i not in live]
        change = ModelChange(lib.model, lib.dim, lib.window, lib.hop)
        failures = []
        for item in late:
            self.seen.add(item.id)
            reason = await self._one(item, lib.name, change)
            if reason:
                why = f"inserted during the switch, it has no {lib.model} vectors: {reason}"
                failure = Failure(item.id, item.name, why)
                self.failures[item.id] = failure
                failures.append(failure)
                log.warning("reindex: item %d of %r: %s", item.id, lib.name, failure.reason)
            else:
                self.reindexed += 1
        return failures

    def _refusal(self, lib: Library, change: ModelChange) -> str:
        failures = list(self.failures.values())
        listed = "; ".join(f"item {f.item_id} ({quoted(f.name)}): {f.reason}" for f in failures[:LISTED])
        more = f"; and {len(failures) - LISTED} more" if len(failures) > LISTED else ""
        return (
            f"{len(failures)} of {len(self.seen)} items of library {quoted(lib.name)} cannot be re-embedded with "
            f"{change.model}, so it stays on {lib.model}: {listed}{more}. Put their files back (or delete the "
            "items), then run the reindex again: the items re-embedded so far are kept"
        )
