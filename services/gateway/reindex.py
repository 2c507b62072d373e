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

Steps 2 and 5 are services/gateway/reembed.py; this module runs the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator

from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.limits import MAX_WINDOW_SECONDS
from services.common.text import quoted
from services.gateway import access
from services.gateway.ports import Backends, Library, ModelChange, ModelStatus
from services.gateway.reembed import Reembed
from services.gateway.reindex_progress import CANCELLED, SWITCHED, UNCHANGED, Progress, Tally
from services.gateway.retry import retry
from services.gateway.server_paths import ServerPaths
from services.gateway.steps import model_status

log = logging.getLogger(__name__)

LISTED = 10  # failed items named in the error message (the stream reports every one)


def staging_key(library: str, model: str) -> str:
    """The search service's name for the library's staging collection."""
    return f"{library}@{model}"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


class Reindex:
    def __init__(
        self, backends: Backends, paths: ServerPaths, library: str, model: str, window: float = 0.0, hop: float = 0.0
    ) -> None:
        """`paths`: the files an item may be re-read from (its source)."""
        self.backends, self.library, self.model, self.window, self.hop = backends, library, model, window, hop
        self.catalog, self.vectors = backends.catalog, backends.vectors
        self.tally = Tally()
        self.reembed = Reembed(backends, paths, self.tally)

    async def run(self) -> AsyncIterator[Progress]:
        access.require_admin("reindex a library")
        if not self.library:
            raise InvalidArgument("library must be set", reason=reasons.MISSING_FIELD, field="library")
        if not self.model:
            raise InvalidArgument(
                "model must be set: the model to move the library to (audiosearch stats lists them)",
                reason=reasons.MISSING_FIELD,
                field="model",
            )
        for what, value in (("window_seconds", self.window), ("hop_seconds", self.hop)):
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(
                    f"{what} must be 0 (the new model's default) or more, got {value}",
                    reason=reasons.INVALID_FIELD,
                    field=what,
                )
        lib = await self.catalog.get_library(self.library)
        status = await self._usable(self.model)
        window = self.window or status.window
        hop = self.hop or min(status.hop, window)
        if not 0 < window <= MAX_WINDOW_SECONDS:
            raise InvalidArgument(
                f"window must be more than 0 and at most {MAX_WINDOW_SECONDS} s, got {window}",
                reason=reasons.INVALID_FIELD,
                field="window_seconds",
            )
        if not 0 < hop <= window:
            raise InvalidArgument(
                f"hop ({hop} s) must be positive and at most the window ({window} s)",
                reason=reasons.INVALID_FIELD,
                field="hop_seconds",
            )
        # Two calls moving one library (two gateways, say) are safe: they write
        # the same vectors, and the catalog switches only to a change still
        # pending; the later one finds the work done or reports what changed.
        adopted = await self._finish_interrupted_switch(lib)
        if status.name == lib.model:
            yield await self._same_model(lib, status, window, hop, adopted)
            return
        change = ModelChange(model=status.name, dim=status.dim, window=window, hop=hop)
        async with contextlib.aclosing(self._move(lib, status, change)) as moving:
            async for progress in moving:
                yield progress

    async def _usable(self, model: str) -> ModelStatus:
        # An unknown model: INVALID_ARGUMENT, naming the known ones.
        status = await model_status(self.backends, model)
        if status.loading:
            raise Unavailable(f"model {status.name} is still loading (a first start downloads weights); retry shortly")
        if not status.available:
            raise FailedPrecondition(
                f"model {status.name} is unavailable: {status.reason}", reason=reasons.MODEL_UNAVAILABLE
            )
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
            status = await model_status(self.backends, lib.model)
        except InvalidArgument:
            return False  # no longer offered: nothing can be adopted for it
        await retry(lambda: self.vectors.create(lib.name, lib.model, lib.dim, status.sparse))
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
                "a reindex moves a library to another model, it cannot change only the window or hop",
                reason=reasons.REINDEX_REFUSED,
            )
        if status.dim != lib.dim:
            raise FailedPrecondition(
                f"library {quoted(lib.name)} holds {lib.dim}-d {lib.model} vectors and {lib.model} is now "
                f"{status.dim}-d: a reindex cannot move a library within one model; create a new library",
                reason=reasons.REINDEX_REFUSED,
            )
        cancelled = await self.catalog.cancel_model_change(lib.name)
        if cancelled is not None:
            await self.vectors.drop(staging_key(lib.name, cancelled.model))
            return self.tally.progress(
                outcome=CANCELLED,
                library=lib,
                previous_model=lib.model,
                detail=f"library {lib.name} already uses {lib.model}; the unfinished move to {cancelled.model} "
                "was abandoned and the vectors it had written are dropped",
            )
        if adopted:
            await self.reembed.catch_up(lib)  # (such items are counted in `failed`: a switch cut short is rare enough)
            return self.tally.progress(
                outcome=SWITCHED,
                library=lib,
                detail=f"finished the switch of library {lib.name} to {lib.model} that an interrupted reindex had "
                "begun; the old vectors are dropped",
            )
        return self.tally.progress(
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
            async with contextlib.aclosing(self.reembed.fill(lib.name, stage, change, resumed)) as filling:
                async for progress in filling:
                    yield progress
        except NotFound:
            await self.catalog.get_library(lib.name)  # deleted meanwhile: that NOT_FOUND
            raise FailedPrecondition(
                f"the new vectors of library {quoted(lib.name)} disappeared while it was being reindexed (another "
                "reindex of it finished, replaced or cancelled this one); run it again",
                reason=reasons.REINDEX_REFUSED,
            ) from None
        if self.tally.failures:
            raise FailedPrecondition(self._refusal(lib, change), reason=reasons.REINDEX_REFUSED)
        # The commit and the adoption run to the end even if the caller goes
        # away meanwhile: stopping between them would leave the old vectors
        # serving requests that read the library by id.
        new = await asyncio.shield(self._switch(lib.name, change, status.sparse))
        for failure in await self.reembed.catch_up(new):
            yield self.tally.progress(failure=failure)
        log.info("reindex: library %r moved from %s to %s", lib.name, lib.model, change.model)
        yield self.tally.progress(
            outcome=SWITCHED,
            library=new,
            previous_model=lib.model,
            detail=f"library {lib.name} moved from {lib.model} to {change.model}; the old vectors are dropped",
        )

    async def _switch(self, name: str, change: ModelChange, sparse: bool) -> Library:
        new = await retry(lambda: self.catalog.finish_model_change(name, change.model))  # step 3: the commit
        await retry(lambda: self.vectors.create(name, change.model, change.dim, sparse))  # step 4: adoption
        return new

    def _refusal(self, lib: Library, change: ModelChange) -> str:
        failures = list(self.tally.failures.values())
        listed = "; ".join(f"item {f.item_id} ({quoted(f.name)}): {f.reason}" for f in failures[:LISTED])
        more = f"; and {len(failures) - LISTED} more" if len(failures) > LISTED else ""
        return (
            f"{len(failures)} of {len(self.tally.seen)} items of library {quoted(lib.name)} cannot be re-embedded with "
            f"{change.model}, so it stays on {lib.model}: {listed}{more}. Put their files back (or delete the "
            "items), then run the reindex again: the items re-embedded so far are kept"
        )
