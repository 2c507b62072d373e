"""One item: reading it, renaming and re-tagging it, playing a stretch of it
back, deleting it. Only a READY item is visible; a delete hides it first,
then removes its parts."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.errors import FailedPrecondition, NotFound
from services.gateway import access
from services.gateway.ports import Backends, Item, Segment
from services.gateway.steps import remove


async def get(backends: Backends, item_id: int) -> Item:
    item = await backends.catalog.get_item(item_id)
    access.require_item(item_id, item.library)
    if not item.ready:
        raise NotFound(f"audio item {item_id} is not ready (still being inserted or deleted)")
    return item


async def delete(backends: Backends, item_id: int) -> None:
    item = await backends.catalog.get_item(item_id)
    access.require_item(item_id, item.library, write=True)
    await backends.catalog.mark_deleting(item_id)  # hidden from search from here on
    await remove(backends, item.library, item.id)


async def update(
    backends: Backends,
    item_id: int,
    name: str | None = None,
    add_tags: Sequence[str] = (),
    remove_tags: Sequence[str] = (),
) -> Item:
    """Renames a ready item (`name` None: keeps it) and adds and removes
    user tags; the catalog checks them as at insert. Needs write access to
    the item's library."""
    item = await backends.catalog.get_item(item_id)
    access.require_item(item_id, item.library, write=True)
    not_ready = NotFound(f"audio item {item_id} is not ready (still being inserted or deleted)")
    if not item.ready:
        raise not_ready
    try:
        return await backends.catalog.update_item(item_id, name, add_tags, remove_tags)
    except FailedPrecondition:  # a delete began meanwhile: as invisible as above
        raise not_ready from None


async def segment(backends: Backends, item_id: int, start: float, end: float) -> tuple[Item, Segment]:
    """A stretch of a ready item's audio, as WAV, for playback."""
    item = await get(backends, item_id)
    return item, await backends.audio.segment(item.library, item.id, item.duration_seconds, start, end)
