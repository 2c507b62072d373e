"""PANNs Cnn14 (Kong et al. 2020), 2048-d embeddings plus 527 AudioSet tags,
at 32 kHz (`Cnn14_mAP=0.431.pth`) or 16 kHz (`Cnn14_16k_mAP=0.438.pth`):
one network, parameterised by its front end.

The network is written out here instead of importing `panns_inference`,
whose import downloads a labels file (leaving a 0-byte file offline) and
whose loader can truncate a checkpoint. Parameter names match the official
checkpoint, so its state dict (under 'model') loads strictly; a test proves
the output equals `panns_inference.models.Cnn14` for the same weights.

Loading and embedding are `panns.PannsModel`'s; the models' declarations
(info, checkpoint) are in `panns_specs`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from services.embedder.models.folding import folded
from services.embedder.models.panns import CLASSES, PannsModel
from services.embedder.models.panns_frontend import PANNS_32K, FrontEnd, PannsNet, clip_pool
from services.embedder.models.panns_specs import CNN14_INFO


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


class Cnn14Model(PannsModel):
    """Cnn14 at 32 kHz by default; `spec=PANNS_16K, info=CNN14_16K_INFO`
    (and the 16 kHz checkpoint) for panns-cnn14-16k."""

    architecture = Cnn14
    info = CNN14_INFO
