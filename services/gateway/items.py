"""One item: reading it, playing a stretch of it back, deleting it. Only a
READY item is visible; a delete hides it first, then removes its parts."""

from __future__ import annotations

from services.common.errors import NotFound
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


async def segment(backends: Backends, item_id: int, start: float, end: float) -> tuple[Item, Segment]:
    """A stretch of a ready item's audio, as WAV, for playback."""
    item = await get(backends, item_id)
    return item, await backends.audio.segment(item.library, item.id, item.duration_seconds, start, end)
