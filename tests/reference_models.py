"""Tooling for tests and benchmarks around PANNs: checkpoints in the
official format with seeded random weights (the real one lives on Zenodo,
out of reach here), and `panns_inference` imported without its import-time
side effects (its package __init__ runs `wget` for a labels CSV into
~/panns_data, leaving a 0-byte file offline)."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import torch
from torch import nn

from services.embedder.models.cnn14 import Cnn14
from services.embedder.models.mobilenet import MobileNetV1
from services.embedder.models.panns import LABELS_FILE
from services.embedder.models.panns_frontend import PANNS_16K, PANNS_32K, FrontEnd

Net = TypeVar("Net", bound=nn.Module)

# The PANNs variants by model name: (network, front end).
NETWORKS: dict[str, tuple[type[nn.Module], FrontEnd]] = {
    "panns-cnn14": (Cnn14, PANNS_32K),
    "panns-cnn14-16k": (Cnn14, PANNS_16K),
    "panns-mobilenetv1": (MobileNetV1, PANNS_32K),
}


def _seeded(build: Callable[[], Net], seed: int) -> Net:
    torch.manual_seed(seed)
    net = build()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return net


def random_network(model: str = "panns-cnn14", seed: int = 0) -> nn.Module:
    """The named PANNs network with seeded random weights and batch-norm
    statistics that are not 0/1, as a trained network's are."""
    architecture, spec = NETWORKS[model]
    return _seeded(lambda: architecture(spec), seed)


def random_cnn14(seed: int = 0, spec: FrontEnd = PANNS_32K) -> Cnn14:
    """Cnn14 (32 kHz unless `spec` says otherwise) with random weights, as `random_network`."""
    return _seeded(lambda: Cnn14(spec), seed)


def save_checkpoint(path: Path, seed: int = 0, model: str = "panns-cnn14") -> Path:
    """The official layout: {'model': state_dict, 'iteration': n}, for the
    named variant (Cnn14 at 32 kHz unless told)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": random_network(model, seed).state_dict(), "iteration": 0}, path)
    return path


@contextlib.contextmanager
def _sandboxed_home(home: Path) -> Iterator[None]:
    (home / "panns_data").mkdir(parents=True, exist_ok=True)
    shutil.copy(LABELS_FILE, home / "panns_data" / "class_labels_indices.csv")
    saved = {k: os.environ.get(k) for k in ("HOME", "MPLBACKEND", "MPLCONFIGDIR")}
    os.environ.update(HOME=str(home), MPLBACKEND="Agg", MPLCONFIGDIR=str(home / "mpl"))
    real_system = os.system

    def no_system(cmd: str) -> int:
        raise RuntimeError(f"panns_inference tried to run {cmd!r}")

    os.system = no_system  # type: ignore[assignment]
    try:
        yield
    finally:
        os.system = real_system  # type: ignore[assignment]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def import_panns(home: Path, name: str = "panns_inference.models") -> ModuleType:
    """A panns_inference module, imported with HOME pointing at `home` (which
    gets our copy of the labels file) and os.system forbidden, so nothing is
    fetched or written to the real home."""
    with _sandboxed_home(home):
        return importlib.import_module(name)


def audio_tagging(home: Path, checkpoint: Path) -> object:
    """panns_inference.AudioTagging on the CPU, for `checkpoint` (at least
    300 MB, or it would try to download the real one)."""
    with _sandboxed_home(home):
        module = importlib.import_module("panns_inference")
        return module.AudioTagging(checkpoint_path=str(checkpoint), device="cpu")
