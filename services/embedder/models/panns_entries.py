"""The PANNs models as table entries: their declarations (panns_specs)
with a lazy build. This module imports no torch: the networks (`cnn14`,
`mobilenet`) and their runtime (`panns`) are imported only when a model is
built."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from services.embedder.models.base import EmbeddingModel
from services.embedder.models.checkpoint import Checkpoint
from services.embedder.models.entry import ModelEntry
from services.embedder.models.panns_specs import (
    CNN14_16K_CHECKPOINT,
    CNN14_16K_INFO,
    CNN14_CHECKPOINT,
    CNN14_INFO,
    MOBILENETV1_CHECKPOINT,
    MOBILENETV1_INFO,
)

if TYPE_CHECKING:
    from services.embedder.config import EmbedderConfig


def _panns_args(config: EmbedderConfig, name: str) -> tuple[Path, bool, str, Checkpoint, str, str]:
    """What every PannsModel takes from the config, in its order: checkpoint
    path, download flag (one for all checkpoints; the name is older),
    device, source (with any mirror override), precision, compile."""
    source = config.checkpoint(name)
    return config.checkpoint_path(name), config.cnn14_download, config.device, source, config.precision, config.compile


def _cnn14(config: EmbedderConfig) -> EmbeddingModel:
    from services.embedder.models.cnn14 import Cnn14Model

    return Cnn14Model(*_panns_args(config, CNN14_INFO.name))


def _cnn14_16k(config: EmbedderConfig) -> EmbeddingModel:
    from services.embedder.models.cnn14 import Cnn14Model
    from services.embedder.models.panns_frontend import PANNS_16K

    return Cnn14Model(*_panns_args(config, CNN14_16K_INFO.name), spec=PANNS_16K, info=CNN14_16K_INFO)


def _mobilenetv1(config: EmbedderConfig) -> EmbeddingModel:
    from services.embedder.models.mobilenet import MobileNetV1Model

    return MobileNetV1Model(*_panns_args(config, MOBILENETV1_INFO.name))


CNN14 = ModelEntry(
    info=CNN14_INFO,
    build=_cnn14,
    checkpoint=CNN14_CHECKPOINT,
    offered_by_default=True,
    uses_torch=True,
)
CNN14_16K = ModelEntry(
    info=CNN14_16K_INFO,
    build=_cnn14_16k,
    checkpoint=CNN14_16K_CHECKPOINT,
    uses_torch=True,
)
MOBILENETV1 = ModelEntry(
    info=MOBILENETV1_INFO,
    build=_mobilenetv1,
    checkpoint=MOBILENETV1_CHECKPOINT,
    uses_torch=True,
)
