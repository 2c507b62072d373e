"""The configured models and whether each can serve right now. Loading
runs in the background so a slow download never blocks the weights-free
model."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.text import quoted
from services.embedder.config import EmbedderConfig
from services.embedder.models.base import EmbeddingModel, ModelUnavailable

log = logging.getLogger(__name__)

LOADING, READY, UNAVAILABLE = "loading", "ready", "unavailable"
KNOWN_MODELS = (
    "panns-cnn14",
    "panns-cnn14-16k",
    "panns-mobilenetv1",
    "fingerprint-v1",
    "fingerprint-v2",
    "spectral-v1",
)
PANNS_MODELS = ("panns-cnn14", "panns-cnn14-16k", "panns-mobilenetv1")
# Without Cnn14 weights, the default is the weights-free fingerprint.
WEIGHTS_FREE_DEFAULT = "fingerprint-v1"


@dataclasses.dataclass
class Slot:
    model: EmbeddingModel
    state: str = LOADING
    reason: str = "the model is still loading"
    # Seconds the last load took, download included (None until loaded).
    load_seconds: float | None = None


def build_models(config: EmbedderConfig) -> list[EmbeddingModel]:
    """The models named in config; imports torch only when a PANNs model is wanted."""
    models: list[EmbeddingModel] = []
    if any(name in PANNS_MODELS for name in config.models):
        from services.embedder.threads import configure_torch

        configure_torch(config.torch_threads)  # process-wide, so once
    for name in config.models:
        if name == "fingerprint-v1":
            from services.embedder.models.fingerprint import FingerprintModel

            models.append(FingerprintModel())
        elif name == "fingerprint-v2":
            from services.embedder.models.fingerprint_v2 import FingerprintV2Model

            models.append(FingerprintV2Model())
        elif name == "spectral-v1":
            from services.embedder.models.spectral import SpectralModel

            models.append(SpectralModel())
        elif name in PANNS_MODELS:
            models.append(_panns_model(name, config))
        else:
            raise ValueError(f"unknown model {name!r} in AUDIOSEARCH_MODELS; known: {', '.join(KNOWN_MODELS)}")
    return models


def _panns_model(name: str, config: EmbedderConfig) -> EmbeddingModel:
    from services.embedder.models.checkpoint import CHECKPOINTS
    from services.embedder.models.cnn14 import CNN14_16K_INFO, CNN14_INFO, PANNS_16K, PANNS_32K, Cnn14Model

    source = CHECKPOINTS[name]
    if name == "panns-cnn14":  # the mirror overrides are for this checkpoint only
        source = dataclasses.replace(source, url=config.cnn14_url or source.url, md5=config.cnn14_md5 or source.md5)
    # One download flag for all PANNs checkpoints; each has its own path setting.
    args = (
        getattr(config, source.setting),
        config.cnn14_download,
        config.device,
        source,
        config.precision,
        config.compile,
    )
    if name == "panns-mobilenetv1":
        from services.embedder.models.mobilenet import MobileNetV1Model

        return MobileNetV1Model(*args)
    spec, info = (PANNS_16K, CNN14_16K_INFO) if name == "panns-cnn14-16k" else (PANNS_32K, CNN14_INFO)
    return Cnn14Model(*args, spec=spec, info=info)


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
        # Cnn14 while it loads too: a library must not be bound to the weaker
        # model just because the weights were still downloading.
        cnn14 = self.slots.get("panns-cnn14")
        if cnn14 is not None and cnn14.state in (READY, LOADING):
            return "panns-cnn14"
        ready = [name for name, slot in self.slots.items() if slot.state == READY]
        if WEIGHTS_FREE_DEFAULT in ready:
            return WEIGHTS_FREE_DEFAULT
        return ready[0] if ready else next(iter(self.slots))

    def get(self, name: str) -> EmbeddingModel:
        name = name or self.default_name
        slot = self.slots.get(name)
        if slot is None:
            raise InvalidArgument(f"unknown model {quoted(name)}; this embedder offers: {', '.join(self.slots)}")
        if slot.state == LOADING:
            raise Unavailable(f"model {name} is still loading; retry shortly")
        if slot.state == UNAVAILABLE:
            raise FailedPrecondition(f"model {name} is unavailable: {slot.reason}")
        return slot.model
