"""Embedder settings (AUDIOSEARCH_* environment variables)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common.config import ServerConfig
from services.embedder.models import table
from services.embedder.models.checkpoint import Checkpoint
from services.embedder.models.entry import Batching

CACHE = Path("~/.cache/audiosearch").expanduser()
# An older per-model path setting left empty: the file is in weights_dir.
UNSET = Path()


@dataclasses.dataclass(frozen=True)
class EmbedderConfig(ServerConfig):
    listen: str = "127.0.0.1:50052"
    # Models to offer, by name (models/table.py lists them; docs/models.md).
    # The PANNs variants are opt-in, each a download of its own.
    models: tuple[str, ...] = table.offered_by_default()
    # Used when a request names no model; "auto" prefers Cnn14 when its
    # weights are present, else the weights-free fingerprint-v1.
    default_model: str = "auto"
    # Where model weights are, each under its checkpoint's file name.
    weights_dir: Path = CACHE
    # Download a missing checkpoint (md5-checked), for every offered model
    # with weights (the name is older than the other models).
    cnn14_download: bool = True
    # Older per-model settings, kept as aliases: a path here wins over
    # weights_dir for that model's checkpoint (Checkpoint.setting), and a URL
    # or md5 overrides the official one, for a mirror (url_setting, md5_setting).
    # Models added since have only weights_dir.
    cnn14_checkpoint: Path = UNSET
    cnn14_16k_checkpoint: Path = UNSET
    mobilenetv1_checkpoint: Path = UNSET
    cnn14_url: str = ""
    cnn14_md5: str = ""
    # "auto", "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # PANNs arithmetic: "auto" (bf16 autocast on CUDA and on CPUs with
    # native bf16, AVX512-BF16 or AMX; else fp32), "fp32", "bf16" or "fp16".
    precision: str = "auto"
    # torch.compile the network: "auto" (on CUDA), "true" or "false".
    compile: str = "auto"
    # torch's threads for the models: 0 means the CPUs this process may use
    # (its affinity, capped by the cgroup quota, e.g. a Kubernetes CPU limit).
    torch_threads: int = 0
    # Windows per model call, and how long to wait to fill a batch, for
    # every model; unset (0, and below 0), each model's own (models.entry.Batching).
    max_batch: int = 0
    batch_wait_ms: float = -1.0
    # Requests decoded and embedded at once, and how many more may wait;
    # beyond that the embedder answers RESOURCE_EXHAUSTED (bounded memory).
    max_active_embeds: int = 4
    max_queued_embeds: int = 32
    # Limits on one upload (docs/input-limits.md). Beyond the size or the
    # length: RESOURCE_EXHAUSTED; outside the sane format range, or shorter
    # than the minimum: INVALID_ARGUMENT.
    max_audio_seconds: float = 3600.0
    max_upload_bytes: int = 512 * 1024 * 1024
    min_audio_seconds: float = 0.01
    min_sample_rate: int = 1000
    max_sample_rate: int = 384_000
    max_channels: int = 64
    # Samples (frames x channels) decoded from one upload: bounds the work of
    # high-rate, many-channel files and decompression bombs.
    max_decoded_samples: int = 1_000_000_000

    def __post_init__(self) -> None:
        super().__post_init__()
        # The older path settings read back as the path in use, as they always
        # did (so a dataclasses.replace of weights_dir alone keeps the old paths).
        for name, ckpt in table.checkpoints().items():
            if ckpt.setting:
                object.__setattr__(self, ckpt.setting, self.checkpoint_path(name))

    def checkpoint_path(self, model: str) -> Path:
        """Where `model`'s weights are: its older path setting if set, else in weights_dir."""
        ckpt = self.checkpoint(model)
        alias = Path(getattr(self, ckpt.setting)) if ckpt.setting else UNSET
        return alias if alias != UNSET else Path(self.weights_dir) / ckpt.filename

    def checkpoint(self, model: str) -> Checkpoint:
        """`model`'s checkpoint, with any mirror URL and md5 from the older settings."""
        ckpt = table.entry(model).checkpoint
        if ckpt is None:
            raise ValueError(f"model {model!r} has no weights")
        url = getattr(self, ckpt.url_setting) if ckpt.url_setting else ""
        md5 = getattr(self, ckpt.md5_setting) if ckpt.md5_setting else ""
        return dataclasses.replace(ckpt, url=url or ckpt.url, md5=md5 or ckpt.md5)

    def batching(self, model: str) -> Batching:
        """`model`'s batching, with max_batch and batch_wait_ms where set."""
        own = table.MODELS[model].batching if model in table.MODELS else Batching()
        return Batching(
            self.max_batch if self.max_batch > 0 else own.max_batch,
            self.batch_wait_ms if self.batch_wait_ms >= 0 else own.wait_ms,
        )
