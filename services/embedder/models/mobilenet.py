"""PANNs MobileNetV1 (Kong et al. 2020): 1024-d embeddings plus 527 AudioSet
tags from `MobileNetV1_mAP=0.389.pth`, about 4.8 M parameters against
Cnn14's 80 M, for machines where Cnn14 is too slow.

Written out like Cnn14 (no `panns_inference`, which does not ship this
network anyway), on the same 32 kHz front end. The layer layout follows the
official `pytorch/models.py`: each block downsamples with an average pool
after its 3x3 convolution rather than a strided convolution, and the
Sequential indices (conv 0, pool 1, bn 2, relu 3, ...) are the checkpoint's
parameter names, so its state dict loads strictly."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from services.embedder.models.folding import fold_sequential
from services.embedder.models.panns import CLASSES, PannsModel
from services.embedder.models.panns_frontend import PANNS_32K, FrontEnd, PannsNet, clip_pool
from services.embedder.models.panns_specs import MOBILENETV1_INFO

# (in, out, pool) per block; the first is a full 3x3 convolution, the rest
# depthwise-separable. Five 2x pools: 64 mels end as 2 bins, 1001 frames as 31.
LAYOUT = (
    (1, 32, 2),
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    *((512, 512, 1),) * 5,
    (512, 1024, 2),
    (1024, 1024, 1),
)


def _conv_bn(cin: int, cout: int, pool: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
        nn.AvgPool2d(pool),  # kept at pool 1 too: it holds index 1 of the checkpoint's names
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _conv_dw(cin: int, cout: int, pool: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False),  # depthwise
        nn.AvgPool2d(pool),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),  # pointwise
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(PannsNet):
    """Inference-only MobileNetV1; forward returns (embedding, clipwise tags)."""

    def __init__(self, spec: FrontEnd = PANNS_32K) -> None:
        super().__init__(spec)
        first, *rest = LAYOUT
        self.features = nn.Sequential(_conv_bn(*first), *(_conv_dw(*block) for block in rest))
        self.fc1 = nn.Linear(1024, 1024)
        self.fc_audioset = nn.Linear(1024, CLASSES)

    def fold_batch_norms(self, convert: Callable[[nn.Conv2d], nn.Module]) -> None:
        self.features = nn.Sequential(*(fold_sequential(block, convert) for block in self.features))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(self.log_mel(audio))  # [B, 1024, T/32, mels/32]
        embedding = F.relu_(self.fc1(clip_pool(self.from_body(x))))
        return embedding.float(), torch.sigmoid(self.fc_audioset(embedding).float())


class MobileNetV1Model(PannsModel):
    architecture = MobileNetV1
    info = MOBILENETV1_INFO
