"""The configured models and whether each can serve right now. Loading
runs in the background so a slow download never blocks the weights-free
model."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.text import quoted
from services.embedder.config import EmbedderConfig
from services.embedder.models import table
from services.embedder.models.base import EmbeddingModel, ModelUnavailable

log = logging.getLogger(__name__)

LOADING, READY, UNAVAILABLE = "loading", "ready", "unavailable"


@dataclasses.dataclass
class Slot:
    model: EmbeddingModel
    state: str = LOADING
    reason: str = "the model is still loading"
    # Seconds the last load took, download included (None until loaded).
    load_seconds: float | None = None


def build_models(config: EmbedderConfig) -> list[EmbeddingModel]:
    """The models named in config, from the table; torch is imported only when a model that uses it is wanted."""
    entries = [table.entry(name) for name in config.models]
    if any(entry.uses_torch for entry in entries):
        from services.embedder.threads import configure_torch

        configure_torch(config.torch_threads)  # process-wide, so once
    return [entry.build(config) for entry in entries]


class Registry:
    def __init__(self, models: Sequence[EmbeddingModel], default: str = "auto") -> None:
        self.slots = {m.info.name: Slot(m) for m in models}
        self._default = default
        self._tasks: list[asyncio.Task[None]] = []

    async def load_all(self, wait_seconds: float = 60.0) -> None:
        """Loads every model, waiting up to `wait_seconds` (a checkpoint on
        disk loads in seconds); a longer load, such as a first download,
        goes on in the background while the other models serve."""
        self._tasks = [asyncio.create_task(self._load(slot)) for slot in self.slots.values()]
        await asyncio.wait(self._tasks, timeout=wait_seconds)

    async def wait_loaded(self) -> None:
        await asyncio.gather(*self._tasks)

    async def _load(self, slot: Slot) -> None:
        start = time.perf_counter()
        try:
            await asyncio.to_thread(slot.model.load)
        except ModelUnavailable as exc:
            slot.state, slot.reason = UNAVAILABLE, str(exc)
            log.warning("model %s unavailable: %s", slot.model.info.name, exc)
            return
        except Exception as exc:
            slot.state, slot.reason = UNAVAILABLE, f"failed to load: {type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", slot.model.info.name)
            return
        slot.state, slot.reason, slot.load_seconds = READY, "", time.perf_counter() - start
        log.info("model %s ready (loaded in %.2f s)", slot.model.info.name, slot.load_seconds)

    @property
    def default_name(self) -> str:
        if self._default != "auto":
            return self._default
        # Cnn14 (table.AUTO_DEFAULT) while it loads too: a library must not be bound to the weaker
        # model just because the weights were still downloading.
        preferred = self.slots.get(table.AUTO_DEFAULT)
        if preferred is not None and preferred.state in (READY, LOADING):
            return table.AUTO_DEFAULT
        ready = [name for name, slot in self.slots.items() if slot.state == READY]
        if table.WEIGHTS_FREE_DEFAULT in ready:
            return table.WEIGHTS_FREE_DEFAULT
        return ready[0] if ready else next(iter(self.slots))

    def get(self, name: str) -> EmbeddingModel:
        name = name or self.default_name
        slot = self.slots.get(name)
        if slot is None:
            raise InvalidArgument(
                f"unknown model {quoted(name)}; this embedder offers: {', '.join(self.slots)}",
                reason=reasons.UNKNOWN_MODEL,
                field="model",
            )
        if slot.state == LOADING:
            raise Unavailable(f"model {name} is still loading; retry shortly")
        if slot.state == UNAVAILABLE:
            raise FailedPrecondition(f"model {name} is unavailable: {slot.reason}", reason=reasons.MODEL_UNAVAILABLE)
        return slot.model
