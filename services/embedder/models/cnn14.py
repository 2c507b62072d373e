"""PANNs Cnn14 (Kong et al. 2020), 2048-d embeddings plus 527 AudioSet tags.

The network is written out here instead of importing `panns_inference`,
whose import downloads a labels file (leaving a 0-byte file offline) and
whose loader can truncate a checkpoint. Parameter names match the official
checkpoint, so its state dict (under 'model') loads strictly; a test proves
the output equals `panns_inference.models.Cnn14` for the same weights."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from services.embedder.models.base import Embeddings, ModelInfo, ModelUnavailable, l2_normalise
from services.embedder.models.checkpoint import CHECKPOINTS, Checkpoint, ensure_checkpoint
from services.embedder.models.melscale import mel_filterbank

log = logging.getLogger(__name__)

LABELS_FILE = Path(__file__).with_name("audioset_labels.csv")
SAMPLE_RATE, WINDOW, HOP, MELS, FMIN, FMAX, CLASSES = 32000, 1024, 320, 64, 50, 14000, 527


def load_labels() -> list[str]:
    with LABELS_FILE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [row["display_name"] for row in rows]


class _Stft(nn.Module):
    """STFT of torchlibrosa's layout: reflect-padded, centred, periodic Hann.

    The official checkpoint stores it as two convolutions with windowed DFT
    kernels (`conv_real`, `conv_imag`); they are kept so that the checkpoint
    loads strictly, but the transform runs as an FFT: the same numbers (to
    float rounding) at a fraction of the cost, which on a GPU was 40% of the
    whole network's time as a convolution."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
        bins = n_fft // 2 + 1
        angle = -2 * np.pi * np.outer(np.arange(n_fft), np.arange(bins)) / n_fft
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_real.weight.data = torch.tensor((np.cos(angle) * window[:, None]).T[:, None, :], dtype=torch.float32)
        self.conv_imag.weight.data = torch.tensor((np.sin(angle) * window[:, None]).T[:, None, :], dtype=torch.float32)
        for p in self.parameters():
            p.requires_grad = False
        self.register_buffer("window", torch.tensor(window, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = torch.stft(
            x, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True
        )  # [B, bins, frames]; the kernels' sign convention makes imag the negative of the FFT's
        spec = spec.transpose(1, 2)[:, None]  # [B, 1, frames, bins]
        return spec.real, -spec.imag


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.stft = _Stft(n_fft, hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(x)
        return real**2 + imag**2  # [B, 1, frames, bins]


class _LogMel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        weights = mel_filterbank(SAMPLE_RATE, WINDOW, MELS, FMIN, FMAX).T
        self.melW = nn.Parameter(torch.tensor(weights), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(torch.matmul(x, self.melW), min=1e-10))


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


class Cnn14(nn.Module):
    """Inference-only Cnn14; forward returns (embedding, clipwise tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.spectrogram_extractor = _Spectrogram(WINDOW, HOP)
        self.logmel_extractor = _LogMel()
        self.bn0 = nn.BatchNorm2d(MELS)
        channels = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(channels[i], channels[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, CLASSES)
        self.channels_last = False  # set by `accelerate`

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The front end stays fp32 under autocast: a power spectrum and its
        # log lose too much in 8 mantissa bits; the convolutions do not.
        with torch.autocast(audio.device.type, enabled=False):
            x = self.logmel_extractor(self.spectrogram_extractor(audio.float()))  # [B, 1, T, mels]
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
        x = torch.mean(x, dim=3)
        x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
        embedding = F.relu_(self.fc1(x))
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
    fp32 >= 0.9999 on real audio; 1.9x the fp32 throughput on this 2-core
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


class Cnn14Model:
    info = ModelInfo(
        name="panns-cnn14",
        version="mAP=0.431",
        dim=2048,
        sample_rate=SAMPLE_RATE,
        window_seconds=10.0,
        hop_seconds=5.0,
        min_seconds=1.0,
        produces_tags=True,
    )

    def __init__(
        self,
        checkpoint: Path,
        download: bool,
        device: str = "auto",
        source: Checkpoint = CHECKPOINTS["panns-cnn14"],
        precision: str = "auto",
        compile: str = "auto",
    ) -> None:
        self.checkpoint, self.download, self.device_name, self.source = checkpoint, download, device, source
        self.precision_name, self.compile_name = precision, compile
        self.labels = load_labels()
        self._net: nn.Module | None = None
        self._device = torch.device("cpu")
        self.precision = "fp32"

    def load(self) -> None:
        path = ensure_checkpoint(self.source, self.checkpoint, self.download)
        self._device = resolve_device(self.device_name)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same remedy
            raise ModelUnavailable(
                f"could not read the Cnn14 checkpoint {path}: {exc}; delete it and download again"
            ) from None
        state = state.get("model", state) if isinstance(state, dict) else state
        net = Cnn14()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelUnavailable(f"{path} is not a Cnn14 checkpoint: {str(exc)[:300]}") from None
        self.precision = resolve_precision(self.precision_name, self._device)
        compiled = self.compile_name == "true" or (self.compile_name == "auto" and self._device.type == "cuda")
        self._net = accelerate(net, self._device, compiled)
        # Warm-up: the first call pays for cuDNN's algorithm search and for
        # compilation, not the first user.
        run(self._net, np.zeros((2, SAMPLE_RATE), dtype=np.float32), self._device, self.precision)
        log.info(
            "loaded Cnn14 from %s on %s (%s%s)", path, self._device, self.precision, ", compiled" if compiled else ""
        )

    @torch.inference_mode()
    def embed(self, windows: np.ndarray) -> Embeddings:
        if self._net is None:
            raise ModelUnavailable("Cnn14 is not loaded")
        embedding, tags = run(self._net, windows, self._device, self.precision)
        return Embeddings(l2_normalise(embedding.numpy()), tags.numpy())


def accelerate(net: Cnn14, device: torch.device, compiled: bool = False) -> nn.Module:
    """Inference form of the network on `device`: eval mode, channels-last
    memory (what cuDNN's tensor-core convolutions want, and 24% faster with
    oneDNN on this 2-core AVX2 CPU at batch 8), and optionally compiled with
    torch.compile (one graph for every batch size; on an H100 it raised
    throughput 1.5x, measured by `make bench-gpu`; on the CPU it gained 6%
    for a minute of compiling, so "auto" leaves it off there)."""
    net = net.to(device).eval().to(memory_format=torch.channels_last)
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


_staging: dict[torch.device, _Staging] = {}


@torch.inference_mode()
def run(net: nn.Module, windows: np.ndarray, device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, tags) on the CPU, as fp32, for a batch of windows. One
    caller at a time per device (the embedder's batcher has one model thread)."""
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if device.type == "cuda":
        batch = _staging.setdefault(device, _Staging()).to_device(windows, device)
    else:
        batch = torch.from_numpy(windows)
    dtype = PRECISIONS[precision]
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        embedding, tags = net(batch)
    return embedding.cpu(), tags.cpu()
