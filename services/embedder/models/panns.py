"""The runtime every PANNs network shares: `PannsModel` finds (or
downloads) a checkpoint, loads it strictly, and embeds with the precision,
device and compilation chosen; `accelerate` and `run` are the inference
form and the batch call. The networks themselves are in `cnn14` and
`mobilenet`; their declarations (info, checkpoint) in `panns_specs`."""

from __future__ import annotations

import csv
import logging
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.embedder.models import panns_specs
from services.embedder.models.base import Embeddings, ModelInfo, ModelUnavailable, l2_normalise
from services.embedder.models.checkpoint import Checkpoint, ensure_checkpoint
from services.embedder.models.panns_frontend import PANNS_32K, FrontEnd, PannsNet

log = logging.getLogger(__name__)

LABELS_FILE = Path(__file__).with_name("audioset_labels.csv")
CLASSES = 527


def load_labels() -> list[str]:
    with LABELS_FILE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [row["display_name"] for row in rows]


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 dot products in hardware (AVX512-BF16
    or AMX-BF16). oneDNN runs bf16 convolutions on any AVX-512 core, but
    without these instructions it emulates them, slower than fp32."""
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux: stay on the safe side
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto': bf16 autocast on CUDA and on CPUs with native bf16 (cosine to
    fp32 0.999998 on real audio; 2.0x the fp32 throughput on this 2-core
    AVX512-BF16 machine, measured by `make bench`), else fp32, since
    emulated bf16 is slower than fp32."""
    if name == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"
    if name not in PRECISIONS:
        raise ModelUnavailable(f"unknown precision {name!r}; use auto, fp32, bf16 or fp16")
    return name


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present. Any 'cuda:N' is honoured as a real
    torch.device (panns_inference silently ran 'cuda:1' on the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {name!r} was requested but CUDA is not available; set AUDIOSEARCH_DEVICE=cpu")
    return device


class PannsModel:
    """A PANNs network behind the model contract: finds (or downloads) its
    checkpoint, loads it strictly, and embeds with the precision, device and
    compilation chosen. Subclasses name the network and their defaults."""

    architecture: type[PannsNet]
    info: ModelInfo
    spec: FrontEnd = PANNS_32K

    def __init__(
        self,
        checkpoint: Path,
        download: bool,
        device: str = "auto",
        source: Checkpoint | None = None,
        precision: str = "auto",
        compile: str = "auto",
        spec: FrontEnd | None = None,
        info: ModelInfo | None = None,
    ) -> None:
        self.spec = spec or type(self).spec
        self.info = info or type(self).info
        if self.spec.sample_rate != self.info.sample_rate:
            # The service resamples to info.sample_rate: a mismatch would feed the network the wrong rate.
            raise ValueError(
                f"{self.info.name}: front end at {self.spec.sample_rate} Hz, info says {self.info.sample_rate}"
            )
        self.checkpoint, self.download, self.device_name = checkpoint, download, device
        self.source = source or panns_specs.CHECKPOINTS[self.info.name]
        self.precision_name, self.compile_name = precision, compile
        self.labels = load_labels()
        self._net: nn.Module | None = None
        self._device = torch.device("cpu")
        self.precision = "fp32"

    @property
    def label(self) -> str:
        """The network as messages name it: "Cnn14", "Cnn14 (16 kHz)"."""
        name = self.architecture.__name__
        return name if self.spec == PANNS_32K else f"{name} ({self.spec.sample_rate // 1000} kHz)"

    def load(self) -> None:
        path = ensure_checkpoint(self.source, self.checkpoint, self.download)
        self._device = resolve_device(self.device_name)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same remedy
            raise ModelUnavailable(
                f"could not read the {self.label} checkpoint {path}: {exc}; delete it and download again"
            ) from None
        state = state.get("model", state) if isinstance(state, dict) else state
        # Built without memory (meta device) and given the checkpoint's own
        # tensors, which `cpu_form` then replaces layer by layer: the weights
        # are never all held twice while loading.
        with torch.device("meta"):
            net = self.architecture(self.spec)
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            raise ModelUnavailable(f"{path} is not a {self.label} checkpoint: {str(exc)[:300]}") from None
        del state
        net.rebuild_buffers()
        self.precision = resolve_precision(self.precision_name, self._device)
        compiled = self.compile_name == "true" or (self.compile_name == "auto" and self._device.type == "cuda")
        self._net = accelerate(net, self._device, compiled, self.precision)
        # Warm-up: the first call pays for cuDNN's algorithm search and for
        # compilation, not the first user.
        run(self._net, np.zeros((2, self.info.sample_rate), dtype=np.float32), self._device, self.precision)
        log.info(
            "loaded %s from %s on %s (%s%s)",
            self.label,
            path,
            self._device,
            self.precision,
            ", compiled" if compiled else "",
        )

    @torch.inference_mode()
    def embed(self, windows: np.ndarray) -> Embeddings:
        if self._net is None:
            raise ModelUnavailable(f"{self.label} is not loaded")
        embedding, tags = run(self._net, windows, self._device, self.precision)
        return Embeddings(l2_normalise(embedding.numpy()), tags.numpy())


def accelerate(net: PannsNet, device: torch.device, compiled: bool = False, precision: str = "fp32") -> nn.Module:
    """Inference form of the network on `device`: eval mode, and optionally
    compiled with torch.compile (one graph for every batch size; on an H100
    it raised throughput 1.5x, measured by `make bench-gpu`; on the CPU it
    gained 6% for a minute of compiling, so "auto" leaves it off there). On
    the CPU the network takes its CPU form (`PannsNet.cpu_form`: folded,
    cast and prepacked once). On CUDA it runs as loaded, channels-last (what
    cuDNN's tensor-core convolutions want), under autocast, as measured on
    the H100."""
    net = net.to(device).eval()
    if device.type == "cpu":
        net.cpu_form(PRECISIONS[precision] or torch.float32, prepack=not compiled)
    if not net.mkldnn:  # oneDNN's own layout is already the fastest for it
        net = net.to(memory_format=torch.channels_last)
        net.channels_last = True
    if compiled:
        return torch.compile(net, dynamic=True)  # type: ignore[return-value]
    return net


class _Staging:
    """A page-locked host buffer, kept and grown as needed: pinned memory is
    slow to allocate, and only from it can a copy to the GPU run async."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0)

    def to_device(self, windows: np.ndarray, device: torch.device) -> torch.Tensor:
        if self.buffer.numel() < windows.size:
            self.buffer = torch.empty(windows.size, dtype=torch.float32).pin_memory()
        staged = self.buffer[: windows.size].view(windows.shape)
        staged.copy_(torch.from_numpy(windows))
        return staged.to(device, non_blocking=True)


# One staging buffer per device and thread: each model has its own batcher
# thread, and a buffer must not be refilled while its copy may still run.
_staging = threading.local()


def _staging_buffer(device: torch.device) -> _Staging:
    if not hasattr(_staging, "by_device"):
        _staging.by_device = {}
    return _staging.by_device.setdefault(device, _Staging())


@torch.inference_mode()
def run(net: nn.Module, windows: np.ndarray, device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, tags) on the CPU, as fp32, for a batch of windows. One
    caller at a time per network (each model's batcher has one thread)."""
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if device.type == "cuda":
        batch = _staging_buffer(device).to_device(windows, device)
    else:
        batch = torch.from_numpy(windows)
    dtype = PRECISIONS[precision]
    # A network already cast for the CPU (`cpu_form`) needs no autocast.
    enabled = dtype is not None and getattr(net, "body_dtype", torch.float32) == torch.float32
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=enabled):
        embedding, tags = net(batch)
    return embedding.cpu(), tags.cpu()
