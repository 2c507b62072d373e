"""The log-mel front end every PANNs network shares: torchlibrosa's STFT
and mel filterbank, with parameter names of the official checkpoints
(`spectrogram_extractor`, `logmel_extractor`, `bn0`), so their state dicts
load strictly. The networks differ only in what follows `log_mel`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from services.embedder.models.melscale import mel_filterbank


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """What a checkpoint was trained on; its STFT and mel weights follow
    from it, so a wrong spec fails the strict load by shape (n_fft) or
    gives wrong numbers (rates), never silently loads."""

    sample_rate: int
    n_fft: int
    hop: int
    mels: int
    fmin: float
    fmax: float


# Both hop 10 ms and 64 mels: 10 s is 1001 frames either way.
PANNS_32K = FrontEnd(sample_rate=32000, n_fft=1024, hop=320, mels=64, fmin=50, fmax=14000)
PANNS_16K = FrontEnd(sample_rate=16000, n_fft=512, hop=160, mels=64, fmin=50, fmax=8000)


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
        window = self.hann(n_fft)
        bins = n_fft // 2 + 1
        angle = -2 * np.pi * np.outer(np.arange(n_fft), np.arange(bins)) / n_fft
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_real.weight.data = torch.tensor((np.cos(angle) * window[:, None]).T[:, None, :], dtype=torch.float32)
        self.conv_imag.weight.data = torch.tensor((np.sin(angle) * window[:, None]).T[:, None, :], dtype=torch.float32)
        for p in self.parameters():
            p.requires_grad = False
        self.register_buffer("window", torch.tensor(window, dtype=torch.float32), persistent=False)

    @staticmethod
    def hann(n_fft: int) -> np.ndarray:
        return np.hanning(n_fft + 1)[:-1]  # periodic Hann

    def rebuild_window(self) -> None:
        """The window is derived, not stored in checkpoints: recomputed after
        a load into a network built on the meta device."""
        self.window = torch.tensor(self.hann(self.n_fft), dtype=torch.float32, device=self.conv_real.weight.device)

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
    def __init__(self, spec: FrontEnd = PANNS_32K) -> None:
        super().__init__()
        weights = mel_filterbank(spec.sample_rate, spec.n_fft, spec.mels, spec.fmin, spec.fmax).T
        self.melW = nn.Parameter(torch.tensor(weights), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(torch.matmul(x, self.melW), min=1e-10))


class PannsNet(nn.Module):
    """Base of the PANNs networks: builds the front end under the official
    names and normalises its output; subclasses add the layers after it."""

    def __init__(self, spec: FrontEnd) -> None:
        super().__init__()
        self.spec = spec
        self.spectrogram_extractor = _Spectrogram(spec.n_fft, spec.hop)
        self.logmel_extractor = _LogMel(spec)
        self.bn0 = nn.BatchNorm2d(spec.mels)
        self.channels_last = False  # set by `cnn14.accelerate`
        # The convolutions' dtype once cast for CPU inference (`cpu_form`);
        # float32 means "as loaded", where autocast picks the precision.
        self.body_dtype = torch.float32
        self.mkldnn = False  # convolutions prepacked for oneDNN (`cpu_form`)

    def rebuild_buffers(self) -> None:
        """Recomputes what checkpoints do not store (after a meta-device build)."""
        self.spectrogram_extractor.stft.rebuild_window()

    def fold_batch_norms(self, convert: Callable[[nn.Conv2d], nn.Module]) -> None:
        """Replaces each convolution + batch norm pair by `convert` of the one
        convolution equal to both, layer by layer, so that only one layer's
        weights exist twice at any time."""
        raise NotImplementedError

    def cpu_form(self, dtype: torch.dtype, prepack: bool = True) -> None:
        """For the CPU: batch norms folded, and the convolutions' weights
        converted once, to `dtype`, and with `prepack` (where oneDNN is
        there, for fp32 and bf16) into oneDNN's own blocked layout. A plain
        convolution reorders its weights on every call (150 MB of them for
        Cnn14 in bf16): prepacking took one 0.5 s clip from 93 ms to 59 ms
        here, and the small-input path of `_SmallInputConv` to 20 ms. The
        front end and the fully connected layers stay fp32."""
        from torch.utils import mkldnn

        use_mkldnn = prepack and torch.backends.mkldnn.is_available() and dtype in (torch.float32, torch.bfloat16)
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            use_mkldnn = False  # oneDNN's bf16 needs AVX-512; a plain bf16 convolution still runs

        def convert(conv: nn.Conv2d) -> nn.Module:
            if use_mkldnn and _SmallInputConv.suits(conv):
                return _SmallInputConv(conv, dtype)
            if use_mkldnn:  # its inputs and outputs are oneDNN tensors: see to_body, from_body
                return mkldnn.MkldnnConv2d(conv, dtype)
            return conv.to(dtype=dtype, memory_format=torch.channels_last)

        self.fold_batch_norms(convert)
        self.mkldnn, self.body_dtype = use_mkldnn, dtype

    def to_body(self, x: torch.Tensor) -> torch.Tensor:
        if self.mkldnn:
            return x.contiguous().to_mkldnn(self.body_dtype)
        return x if self.body_dtype == torch.float32 else x.to(self.body_dtype)

    def from_body(self, x: torch.Tensor) -> torch.Tensor:
        if self.mkldnn:
            return x.to_dense().float()
        return x if self.body_dtype == torch.float32 else x.float()

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> batch-normalised log mels [B, 1, frames, mels]."""
        # The front end stays fp32 under autocast: a power spectrum and its
        # log lose too much in 8 mantissa bits; the convolutions do not.
        with torch.autocast(audio.device.type, enabled=False):
            x = self.logmel_extractor(self.spectrogram_extractor(audio.float()))
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.channels_last and not self.mkldnn:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.to_body(x)


class _SmallInputConv(nn.Module):
    """A wide convolution (>= 1024 input channels: Cnn14's last layers) that
    also keeps its weights as one plain matrix. oneDNN's kernels are slow on
    a small input there: for one short clip, Cnn14's last block sees 1 x 2
    positions and took 46 ms, where unfolding the input and one matrix
    product takes 9 ms (measured at 2 threads, bf16). Above `SMALL`
    positions (batch x height x width) oneDNN is faster, so it runs then.
    The price is those layers' weights twice: 66 M of Cnn14's 81 M
    parameters, +132 MB in bf16."""

    MIN_CHANNELS = 1024
    SMALL = 64

    @classmethod
    def suits(cls, conv: nn.Conv2d) -> bool:
        """Wide, and a plain "same" convolution (what the unfold path computes)."""
        kh, kw = conv.kernel_size
        return (
            conv.in_channels >= cls.MIN_CHANNELS
            and conv.groups == 1
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.padding == (kh // 2, kw // 2)
        )

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype) -> None:
        from torch.utils import mkldnn

        super().__init__()
        self.packed = mkldnn.MkldnnConv2d(conv, dtype)
        self.kernel, self.padding = conv.kernel_size, conv.padding
        self.register_buffer("matrix", conv.weight.detach().to(dtype).reshape(conv.out_channels, -1).contiguous())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.to(dtype)[:, None].contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: a oneDNN tensor [B, C, H, W]
        batch, _, height, width = x.shape
        if batch * height * width > self.SMALL:
            return self.packed(x)
        columns = F.unfold(x.to_dense(), self.kernel, padding=self.padding)  # [B, C * kh * kw, H * W]
        y = torch.matmul(self.matrix, columns) + self.bias
        return y.reshape(batch, -1, height, width).to_mkldnn()


def clip_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, frames, freq] -> [B, C]: mean over frequency, then max plus
    mean over time, as every PANNs network pools before its fc1."""
    x = torch.mean(x, dim=3)
    return torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
