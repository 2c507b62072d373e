"""The insert, a small saga: reserve (PENDING) -> embed -> keep the upload
-> write vectors -> mark READY. Each step is idempotent, so a retry after a
crash finishes the job, and search only ever shows READY items."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from services.common import reasons
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.common.text import quoted
from services.gateway import access
from services.gateway.ports import DELETING, PENDING, Backends, Item
from services.gateway.server_paths import ServerPaths
from services.gateway.steps import remove

log = logging.getLogger(__name__)


async def insert(
    backends: Backends,
    auto_tags: int,
    library: str,
    data: bytes,
    name: str,
    source_uri: str = "",
    tags: Sequence[str] = (),
    idempotency_key: str = "",
) -> tuple[Item, bool]:
    """(the item, whether this call added it); `auto_tags`: automatic tags kept per item."""
    if not library:
        raise InvalidArgument("library must be set", reason=reasons.MISSING_FIELD, field="library")
    access.require(library, write=True)
    if not data:
        raise InvalidArgument(
            "the upload is empty: send the bytes of an audio file", reason=reasons.EMPTY_UPLOAD, field="chunk"
        )
    if not name:
        raise InvalidArgument("name must be set (e.g. the file name)", reason=reasons.MISSING_FIELD, field="name")
    catalog = backends.catalog
    lib = await catalog.get_library(library)
    sha256 = hashlib.sha256(data).hexdigest()
    item, created = await catalog.reserve_item(library, sha256, name, source_uri, tags, idempotency_key)
    if item.state == DELETING:
        # The same content is being deleted (or a delete crashed half-way):
        # finish that delete, then start afresh.
        await remove(backends, item.library, item.id)
        item, created = await catalog.reserve_item(library, sha256, name, source_uri, tags, idempotency_key)
    if item.ready:
        return item, False
    # New, or left PENDING by an earlier attempt: (re)do the remaining steps.
    try:
        embedded = await backends.embedder.embed(data, lib.model, auto_tags, lib.window, lib.hop)
        if embedded.model != lib.model or embedded.dim != lib.dim:
            raise FailedPrecondition(
                f"embedder returned {embedded.model} vectors for a {lib.model} library",
                reason=reasons.LIBRARY_MODEL_MISMATCH,
            )
        await backends.audio.put(library, item.id, data)  # before READY: a ready item can be played
        # Acknowledged only once durable (the search service's promise),
        # so a READY item keeps its vectors through a crash of the store.
        await backends.vectors.upsert(library, lib.model, lib.dim, item.id, embedded.windows)
    except ServiceError as exc:
        if created and isinstance(exc, (InvalidArgument, ResourceExhausted, FailedPrecondition)):
            await _forget(backends, library, item.id)
        raise
    try:
        item = await catalog.mark_ready(item.id, embedded)
    except (NotFound, FailedPrecondition):
        # Removed or being deleted meanwhile (repair took it for abandoned,
        # or a delete came): take the vectors back so nothing is orphaned;
        # a retry starts afresh.
        await backends.vectors.delete(library, [item.id])
        await backends.audio.delete(library, item.id)
        raise Unavailable(f"the insert of {quoted(name)} was interrupted by a delete; retry it") from None
    # Not in the library before this call (new, or left PENDING by an
    # attempt that failed): this call added it, as the client sees it.
    return item, True


async def _forget(backends: Backends, library: str, item_id: int) -> None:
    """Leaves no trace of an insert that failed for a reason a retry
    will not fix by itself (bad input, a full disk, a busy embedder).
    Only while still PENDING: a concurrent upload of the same content
    may have finished the item meanwhile, and that one stays. Best
    effort: what it cannot remove (the catalog's disk is full too),
    a retry resumes or repair removes once stale."""
    try:
        if await backends.catalog.delete_item(item_id, only_if_state=PENDING):
            await backends.audio.delete(library, item_id)
            await backends.vectors.delete(library, [item_id])
    except ServiceError as exc:
        log.warning("could not clear the failed insert of item %d: %s", item_id, exc.message)


async def insert_path(
    backends: Backends,
    paths: ServerPaths,
    auto_tags: int,
    library: str,
    path: str,
    name: str = "",
    tags: Sequence[str] = (),
    idempotency_key: str = "",
) -> tuple[Item, bool]:
    """`insert` of a file on the gateway's machine, if `paths` allows reading it."""
    if not library:
        raise InvalidArgument("library must be set", reason=reasons.MISSING_FIELD, field="library")
    access.require(library, write=True)
    data = paths.read(path)
    return await insert(backends, auto_tags, library, data, name or Path(path).name, path, tags, idempotency_key)
