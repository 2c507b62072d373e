"""PANNs Cnn14 (Kong et al. 2020), 2048-d embeddings plus 527 AudioSet tags,
at 32 kHz (`Cnn14_mAP=0.431.pth`) or 16 kHz (`Cnn14_16k_mAP=0.438.pth`):
one network, parameterised by its front end.

The network is written out here instead of importing `panns_inference`,
whose import downloads a labels file (leaving a 0-byte file offline) and
whose loader can truncate a checkpoint. Parameter names match the official
checkpoint, so its state dict (under 'model') loads strictly; a test proves
the output equals `panns_inference.models.Cnn14` for the same weights.

`PannsModel` (load, embed, precision, device, compile) serves every PANNs
network; `mobilenet.py` reuses it."""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from services.embedder.models.base import Embeddings, ModelInfo, ModelUnavailable, l2_normalise
from services.embedder.models.checkpoint import CHECKPOINTS, Checkpoint, ensure_checkpoint
from services.embedder.models.folding import folded
from services.embedder.models.panns_frontend import PANNS_16K, PANNS_32K, FrontEnd, PannsNet, clip_pool

log = logging.getLogger(__name__)

LABELS_FILE = Path(__file__).with_name("audioset_labels.csv")
SAMPLE_RATE = PANNS_32K.sample_rate
CLASSES = 527


def load_labels() -> list[str]:
    with LABELS_FILE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [row["display_name"] for row in rows]


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class _FoldedConvBlock(nn.Module):
    """A _ConvBlock with its batch norms folded into the convolutions."""

    def __init__(self, block: _ConvBlock, convert: Callable[[nn.Conv2d], nn.Module]) -> None:
        super().__init__()
        self.conv1 = convert(folded(block.conv1, block.bn1))
        self.conv2 = convert(folded(block.conv2, block.bn2))

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(PannsNet):
    """Inference-only Cnn14; forward returns (embedding, clipwise tags).
    `spec` is the front end of the checkpoint (32 kHz unless told)."""

    def __init__(self, spec: FrontEnd = PANNS_32K) -> None:
        super().__init__(spec)
        channels = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(channels[i], channels[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, CLASSES)

    def fold_batch_norms(self, convert: Callable[[nn.Conv2d], nn.Module]) -> None:
        for i in range(1, 7):
            setattr(self, f"conv_block{i}", _FoldedConvBlock(getattr(self, f"conv_block{i}"), convert))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.log_mel(audio)  # [B, 1, T, mels]
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
        embedding = F.relu_(self.fc1(clip_pool(self.from_body(x))))
        return embedding.float(), torch.sigmoid(self.fc_audioset(embedding).float())


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


def panns_info(name: str, version: str, dim: int, sample_rate: int) -> ModelInfo:
    # 10 s windows: what PANNs were trained on (AudioSet clips).
    return ModelInfo(
        name=name,
        version=version,
        dim=dim,
        sample_rate=sample_rate,
        window_seconds=10.0,
        hop_seconds=5.0,
        min_seconds=1.0,
        produces_tags=True,
    )


CNN14_INFO = panns_info("panns-cnn14", "mAP=0.431", 2048, PANNS_32K.sample_rate)
CNN14_16K_INFO = panns_info("panns-cnn14-16k", "mAP=0.438", 2048, PANNS_16K.sample_rate)


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
        self.source = source or CHECKPOINTS[self.info.name]
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


class Cnn14Model(PannsModel):
    """Cnn14 at 32 kHz by default; `spec=PANNS_16K, info=CNN14_16K_INFO`
    (and the 16 kHz checkpoint) for panns-cnn14-16k."""

    architecture = Cnn14
    info = CNN14_INFO


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
