"""Library admin: creating, listing and deleting libraries, and listing
their items. A library is a catalog row plus a vector collection (and a
folder of kept uploads); the catalog row is what makes it exist."""

from __future__ import annotations

from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.limits import MAX_WINDOW_SECONDS
from services.gateway import access
from services.gateway.ports import Backends, Item, Library
from services.gateway.steps import model_status


async def create_library(
    backends: Backends, name: str, model: str = "", description: str = "", window: float = 0.0, hop: float = 0.0
) -> Library:
    access.require(name, write=True)
    status = await model_status(backends, model)
    if status.loading:
        raise Unavailable(
            f"model {status.name} is still loading (first start downloads its weights); retry shortly, "
            "or choose another model (e.g. fingerprint-v1)"
        )
    if not status.available:
        raise FailedPrecondition(
            f"model {status.name} is unavailable: {status.reason}", reason=reasons.MODEL_UNAVAILABLE
        )
    window = window or status.window
    hop = hop or min(status.hop, window)
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
    library = await backends.catalog.create_library(name, status.name, status.dim, description, window, hop)
    try:
        # The name was free in the catalog, so a collection under it is a
        # leftover of a delete that crashed half-way: start clean.
        await backends.vectors.drop(name)
        await backends.audio.drop(name)
        await backends.vectors.create(name, status.name, status.dim, status.sparse)
    except BaseException:
        await backends.catalog.delete_library(name)  # undo, so the name is free for a retry
        raise
    return library


async def list_libraries(backends: Backends) -> list[Library]:
    libraries = await backends.catalog.list_libraries()
    visible = access.visible(lib.name for lib in libraries)
    return [lib for lib in libraries if lib.name in visible]


async def list_items(
    backends: Backends, library: str, page_size: int, page_token: str, tag: str
) -> tuple[list[Item], str]:
    if library:
        access.require(library)
    else:
        access.require_admin("list the items of every library (set a library)")
    return await backends.catalog.list_items(library, page_size, page_token, tag)


async def delete_library(backends: Backends, name: str) -> int:
    access.require(name, write=True)
    # Catalog first: from then on nothing of the library is visible, and
    # a crash before the drop leaves only a collection that repair (or
    # creating the name again) removes.
    deleted = await backends.catalog.delete_library(name)
    await backends.audio.drop(name)  # before the collection: repair finds a leftover collection, not files
    await backends.vectors.drop(name)
    return deleted
