"""Our Cnn14 against the reference implementation, and the checkpoint
loading and download rules, with checkpoints generated in the official
format ({'model': state_dict})."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from services.embedder.models.base import ModelUnavailable
from services.embedder.models.checkpoint import Checkpoint, download, ensure_checkpoint
from services.embedder.models.cnn14 import Cnn14, Cnn14Model
from services.embedder.models.panns import load_labels
from services.embedder.models.table import checkpoints
from tests.reference_models import import_panns, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "Cnn14_mAP=0.431.pth")


@pytest.fixture(scope="module")
def reference_module(tmp_path_factory):  # type: ignore[no-untyped-def]
    """panns_inference.models, imported without its side effects (HOME in a
    temporary folder, os.system forbidden: see tests/reference_models.py)."""
    module = import_panns(tmp_path_factory.mktemp("home"))
    assert importlib.import_module("panns_inference.config").classes_num == 527
    return module


def test_labels_file_has_the_527_audioset_classes() -> None:
    labels = load_labels()
    assert len(labels) == 527 and labels[0] == "Speech" and labels[137] == "Music"
    assert labels[1] == "Male speech, man speaking"


def test_same_embedding_as_panns_inference(reference_module, checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    ref = reference_module.Cnn14(
        sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527
    )
    ref.load_state_dict(state, strict=True)
    ours = Cnn14()
    ours.load_state_dict(state, strict=True)
    ref.eval()
    ours.eval()
    audio = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 48000)).astype(np.float32))
    with torch.no_grad():
        expected = ref(audio)
        embedding, tags = ours(audio)
    torch.testing.assert_close(embedding, expected["embedding"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tags, expected["clipwise_output"], rtol=1e-4, atol=1e-5)


def test_front_end_matches_torchlibrosa_at_init(reference_module) -> None:  # type: ignore[no-untyped-def]
    """Our freshly built STFT kernels and mel filters equal the reference's,
    so the architecture is right even before weights are loaded."""
    ref = reference_module.Cnn14(32000, 1024, 320, 64, 50, 14000, 527).state_dict()
    ours = Cnn14().state_dict()
    assert set(ours) == set(ref)
    for key in (
        "spectrogram_extractor.stft.conv_real.weight",
        "spectrogram_extractor.stft.conv_imag.weight",
        "logmel_extractor.melW",
    ):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-6)


def test_model_loads_checkpoint_and_embeds(checkpoint: Path) -> None:
    model = Cnn14Model(checkpoint, download=False, device="cpu")
    model.load()
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, (3, 32000)).astype(np.float32)
    out = model.embed(audio)
    assert out.vectors.shape == (3, 2048)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)
    assert out.tag_scores is not None and out.tag_scores.shape == (3, 527)
    assert checkpoint.stat().st_size > 300_000_000  # untouched


def test_missing_weights_say_what_to_do(tmp_path: Path) -> None:
    model = Cnn14Model(tmp_path / "nope.pth", download=False)
    with pytest.raises(ModelUnavailable) as info:
        model.load()
    message = str(info.value)
    assert str(tmp_path / "nope.pth") in message and checkpoints()["panns-cnn14"].md5 in message
    assert "spectral-v1" in message and "zenodo" in message
    assert not (tmp_path / "nope.pth").exists()


def test_wrong_or_empty_files_are_reported_not_replaced(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.touch()
    with pytest.raises(ModelUnavailable, match="empty"):
        Cnn14Model(empty, download=True).load()
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"fc1.weight": torch.zeros(2, 2)}}, wrong)
    size = wrong.stat().st_size
    with pytest.raises(ModelUnavailable, match="not a Cnn14 checkpoint"):
        Cnn14Model(wrong, download=True).load()
    assert wrong.stat().st_size == size
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ModelUnavailable, match="could not read"):
        Cnn14Model(garbage, download=True).load()
    assert garbage.read_bytes() == b"not a pickle"


def test_cuda_device_is_not_silently_ignored() -> None:
    from services.embedder.models.panns import resolve_device

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ModelUnavailable, match="CUDA"):
            resolve_device("cuda:1")


def test_download_checks_md5_and_never_clobbers(file_server, tmp_path: Path, checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    root, base = file_server
    payload = b"pretend weights " * 1000
    (root / "w.pth").write_bytes(payload)
    good = Checkpoint("w.pth", f"{base}/w.pth", hashlib.md5(payload).hexdigest(), len(payload), "test weights")
    target = tmp_path / "cache" / "w.pth"
    assert ensure_checkpoint(good, target, allow_download=True) == target
    assert target.read_bytes() == payload

    bad = Checkpoint("w.pth", f"{base}/w.pth", "0" * 32, len(payload), "test weights")
    other = tmp_path / "cache2" / "w.pth"
    with pytest.raises(ModelUnavailable, match="md5"):
        ensure_checkpoint(bad, other, allow_download=True)
    assert not other.exists() and list(other.parent.iterdir()) == []  # no partial file left

    # A file that exists is used as is, never re-downloaded or truncated.
    target.write_bytes(b"user's own file")
    assert ensure_checkpoint(good, target, allow_download=True) == target
    assert target.read_bytes() == b"user's own file"
    # Even when it appears while a download runs.
    download(good.url, good.md5, target)
    assert target.read_bytes() == b"user's own file"

    with pytest.raises(ModelUnavailable, match="could not download"):
        ensure_checkpoint(Checkpoint("x", f"{base}/missing.pth", "0" * 32, 1, "x"), tmp_path / "x.pth", True)


def test_downloaded_official_format_checkpoint_serves(file_server, tmp_path: Path, checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    root, base = file_server
    os.symlink(checkpoint, root / checkpoint.name)
    md5 = hashlib.md5(checkpoint.read_bytes()).hexdigest()
    source = Checkpoint(checkpoint.name, f"{base}/{checkpoint.name}", md5, checkpoint.stat().st_size, "Cnn14")
    model = Cnn14Model(tmp_path / "dl" / checkpoint.name, download=True, device="cpu", source=source)
    model.load()
    assert model.embed(np.zeros((1, 32000), dtype=np.float32)).vectors.shape == (1, 2048)


def test_our_module_never_imports_panns_inference() -> None:
    import subprocess

    code = "import services.embedder.models.cnn14, sys; print('panns_inference' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
