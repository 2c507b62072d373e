"""Embedder settings (AUDIOSEARCH_* environment variables)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common.config import ServerConfig

CACHE = Path("~/.cache/audiosearch").expanduser()
DEFAULT_CHECKPOINT = CACHE / "Cnn14_mAP=0.431.pth"


@dataclasses.dataclass(frozen=True)
class EmbedderConfig(ServerConfig):
    listen: str = "127.0.0.1:50052"
    # Models to offer, by name. Also known, opt-in (each a download of its
    # own): panns-cnn14-16k and panns-mobilenetv1 (docs/models.md).
    models: tuple[str, ...] = ("panns-cnn14", "fingerprint-v1", "fingerprint-v2", "spectral-v1")
    # Used when a request names no model; "auto" prefers Cnn14 when its
    # weights are present, else the weights-free fingerprint-v1.
    default_model: str = "auto"
    cnn14_checkpoint: Path = DEFAULT_CHECKPOINT
    # Where the other PANNs checkpoints are, when their models are offered.
    cnn14_16k_checkpoint: Path = CACHE / "Cnn14_16k_mAP=0.438.pth"
    mobilenetv1_checkpoint: Path = CACHE / "MobileNetV1_mAP=0.389.pth"
    # Download a missing PANNs checkpoint (md5-checked), for every offered
    # PANNs model (the name is older than the variants).
    cnn14_download: bool = True
    # Overrides for a mirror of the Cnn14 (32 kHz) checkpoint; empty means
    # the official Zenodo record.
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
    # Windows per model call, and how long to wait to fill a batch. 8 suits
    # CPUs: as fast per clip as 16 here, and a 10 s window of Cnn14 needs
    # about 35 MB of activations (bf16). On GPUs use 256 or more.
    max_batch: int = 8
    batch_wait_ms: float = 5.0
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
