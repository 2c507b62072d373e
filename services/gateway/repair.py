"""Bringing the catalog and the vector store back into agreement.

Writes follow one order, which is what makes every leftover recognisable:
- insert: catalog row PENDING -> kept upload -> vectors -> READY;
- delete: DELETING -> vectors -> kept upload -> row;
- library: row -> collection on create, row -> kept uploads -> collection
  on delete (a collection left without a row takes its uploads with it).

So vectors without a row are orphans, a DELETING row is an unfinished
delete, a PENDING row untouched for `stale_after` is an abandoned insert,
and a READY row without vectors lost them (a store restored from an older
backup, say). Repair reads the vector store before the catalog, so an
insert that lands meanwhile is never mistaken for an orphan, and it checks
a READY item's vectors again before calling them missing. Every fix is
idempotent, so repair may run beside traffic and beside another repair."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import UTC, datetime, timedelta

from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from services.gateway import access
from services.gateway.ports import DELETING, PENDING, READY, Backends, ItemState, Library
from services.gateway.server_paths import ServerPaths
from services.gateway.steps import model_status, remove

log = logging.getLogger(__name__)

ORPHAN_VECTORS = "orphan_vectors"
UNFINISHED_DELETE = "unfinished_delete"
STALE_PENDING = "stale_pending"
REINDEXED = "reindexed"
MISSING_VECTORS = "missing_vectors"
MISSING_COLLECTION = "missing_collection"
ORPHAN_COLLECTION = "orphan_collection"
KINDS = (
    ORPHAN_VECTORS,
    UNFINISHED_DELETE,
    STALE_PENDING,
    REINDEXED,
    MISSING_VECTORS,
    MISSING_COLLECTION,
    ORPHAN_COLLECTION,
)


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str
    library: str
    item_id: int  # 0 for library-level actions
    detail: str


async def repair(backends: Backends, paths: ServerPaths, stale_after: float, dry_run: bool) -> list[Action]:
    """GatewayService.Repair: what was found (and, unless `dry_run`, fixed)."""
    access.require_admin("run repair")
    if stale_after < 0:
        raise InvalidArgument(
            "stale_after_seconds must not be negative", reason=reasons.INVALID_FIELD, field="stale_after_seconds"
        )
    return await Repair(backends, paths, stale_after, dry_run).run()


class Repair:
    def __init__(self, backends: Backends, paths: ServerPaths, stale_after: float, dry_run: bool) -> None:
        """`paths`: the files an item may be re-read from (its source)."""
        self.backends, self.paths, self.stale_after, self.dry_run = backends, paths, stale_after, dry_run
        self.catalog, self.vectors = backends.catalog, backends.vectors
        self.actions: list[Action] = []

    def _found(self, kind: str, library: str, item_id: int, detail: str) -> bool:
        """Records an action; True when it should also be carried out."""
        self.actions.append(Action(kind=kind, library=library, item_id=item_id, detail=detail))
        log.info("repair%s: %s %s item %d: %s", " (dry run)" if self.dry_run else "", kind, library, item_id, detail)
        return not self.dry_run

    async def run(self) -> list[Action]:
        collections = {c.library for c in await self.vectors.stats()}  # before the catalog: see module doc
        libraries = await self.catalog.list_libraries()
        for lib in libraries:
            try:
                await self._library(lib, lib.name in collections)
            except NotFound:
                continue  # deleted meanwhile
        names = {lib.name for lib in libraries}
        for name in sorted(collections - names):
            try:
                await self.catalog.get_library(name)
                continue  # created since the listing: its collection is new, not a leftover
            except NotFound:
                pass
            if self._found(ORPHAN_COLLECTION, name, 0, "vector collection of a library the catalog does not hold"):
                await self.vectors.drop(name)
                await self.backends.audio.drop(name)  # and its kept uploads
        return self.actions

    async def _library(self, lib: Library, has_collection: bool) -> None:
        if not has_collection:
            status = await model_status(self.backends, lib.model)
            if self._found(MISSING_COLLECTION, lib.name, 0, f"no vector collection; creating it for {lib.model}"):
                await self.vectors.create(lib.name, lib.model, lib.dim, status.sparse)
        with_vectors = await self.vectors.item_ids(lib.name) if has_collection else set()
        states = await self.catalog.item_states(lib.name)
        known = {s.id for s in states}
        orphans = sorted(with_vectors - known)
        if orphans and self._found(
            ORPHAN_VECTORS, lib.name, 0, f"vectors of {len(orphans)} unknown items: {_short(orphans)}"
        ):
            await self.vectors.delete(lib.name, orphans)
        now = datetime.now(UTC).replace(tzinfo=None)
        cutoff = now - timedelta(seconds=self.stale_after)
        missing = []
        for s in states:
            try:
                if s.state == DELETING:
                    if self._found(UNFINISHED_DELETE, lib.name, s.id, "left DELETING; finishing the delete"):
                        await self._remove(lib.name, s.id)
                elif s.state == PENDING and s.updated_at < cutoff:
                    await self._stale(lib.name, s, (now - s.updated_at).total_seconds())
                elif s.state == READY and s.id not in with_vectors:
                    missing.append(s)
            except (NotFound, FailedPrecondition):
                continue  # changed meanwhile (deleted, resumed): nothing left to fix
        if missing and (has_collection or not self.dry_run):  # look again: an insert may have finished meanwhile
            with_vectors = await self.vectors.item_ids(lib.name)
        for s in missing:
            if s.id not in with_vectors:
                try:
                    await self._restore(lib, s)
                except (NotFound, FailedPrecondition):
                    continue

    async def _stale(self, library: str, item: ItemState, age: float) -> None:
        """An abandoned insert goes the way of a delete, but only if it is
        still untouched when marked (one atomic update): a retry that resumed
        it meanwhile keeps it."""
        if self.dry_run:
            self._found(STALE_PENDING, library, item.id, f"insert abandoned {age:.0f} s ago; would remove it")
            return
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=self.stale_after)
        if await self.catalog.mark_deleting(item.id, pending_before=cutoff):
            self._found(STALE_PENDING, library, item.id, f"insert abandoned {age:.0f} s ago; removed it")
            await self._remove(library, item.id)

    async def _remove(self, library: str, item_id: int) -> None:
        await remove(self.backends, library, item_id)  # as a delete does

    async def _restore(self, lib: Library, item: ItemState) -> None:
        """Re-embeds a READY item from its kept upload or its server file
        (when that still holds the same content), else hides it until it is
        inserted again."""
        item_id, source = item.id, item.source_uri
        data = await self.backends.audio.read(lib.name, item_id)
        if data is not None:
            source = "the kept upload"
        else:
            try:
                data = self.paths.read(source) if source else None
            except ServiceError:
                data = None
        if data is not None and hashlib.sha256(data).hexdigest() == item.sha256:
            if self._found(REINDEXED, lib.name, item_id, f"no vectors; re-embedded from {source}"):
                embedded = await self.backends.embedder.embed(data, lib.model, 0, lib.window, lib.hop)
                await self.vectors.upsert(lib.name, lib.model, lib.dim, item_id, embedded.windows)
                try:
                    still = (await self.catalog.get_item(item_id)).ready
                except NotFound:
                    still = False
                if not still:  # deleted while it was being re-embedded: take the vectors back
                    await self.vectors.delete(lib.name, [item_id])
            return
        if self._found(
            MISSING_VECTORS, lib.name, item_id, "no vectors and no readable source; set PENDING until inserted again"
        ):
            await self.catalog.mark_pending(item_id)


def _short(ids: list[int], limit: int = 10) -> str:
    text = ", ".join(map(str, ids[:limit]))
    return text + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
