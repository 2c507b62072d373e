"""Steps more than one use case takes: finding a model, and removing an
item that is already DELETING (a delete, repair and the insert saga all
finish removals this way)."""

from __future__ import annotations

from services.common import reasons
from services.common.errors import InvalidArgument
from services.common.text import quoted
from services.gateway.ports import DELETING, Backends, ModelStatus


async def model_status(backends: Backends, name: str) -> ModelStatus:
    """The embedder's model `name` (empty: its default)."""
    models, default = await backends.embedder.models()
    name = name or default
    status = next((m for m in models if m.name == name), None)
    if status is None:
        raise InvalidArgument(
            f"unknown model {quoted(name)}; available: {', '.join(m.name for m in models)}",
            reason=reasons.UNKNOWN_MODEL,
            field="model",
        )
    return status


async def remove(backends: Backends, library: str, item_id: int) -> None:
    """Vectors, audio, then the row (of an item already DELETING).
    Idempotent: a retry, a concurrent delete or repair may get here too."""
    await backends.vectors.delete(library, [item_id])
    await backends.audio.delete(library, item_id)
    await backends.catalog.delete_item(item_id, only_if_state=DELETING)
