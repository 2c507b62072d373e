"""The PANNs variants besides Cnn14 at 32 kHz: Cnn14 at 16 kHz and
MobileNetV1. Each is checked against an independent reference for the same
weights (panns_inference for Cnn14_16k; for MobileNetV1, which
panns_inference 0.1.1 does not ship, a reference built here from torchlibrosa
layers as the official code builds it), loaded from a checkpoint generated in
the official format, and served through the registry and the embedder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from services.common import config as cfg
from services.common.errors import FailedPrecondition
from services.embedder.config import EmbedderConfig
from services.embedder.embedding import Embedder
from services.embedder.models.base import ModelUnavailable
from services.embedder.models.cnn14 import Cnn14, Cnn14Model
from services.embedder.models.mobilenet import MobileNetV1, MobileNetV1Model
from services.embedder.models.panns_frontend import PANNS_16K, PANNS_32K
from services.embedder.models.panns_specs import CNN14_16K_INFO
from services.embedder.models.table import MODELS, checkpoints
from services.embedder.registry import Registry, build_models
from tests.reference_models import import_panns, random_network, save_checkpoint
from tests.sounds import encode, sound

CHECKPOINTS = checkpoints()
FRONT_END = ("spectrogram_extractor.", "logmel_extractor.")


@pytest.fixture(scope="module")
def reference_module(tmp_path_factory):  # type: ignore[no-untyped-def]
    """panns_inference.models without its import-time side effects."""
    return import_panns(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def cnn14_16k_checkpoint(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    name = CHECKPOINTS["panns-cnn14-16k"].filename
    return save_checkpoint(tmp_path_factory.mktemp("ckpt16k") / name, seed=1, model="panns-cnn14-16k")


@pytest.fixture(scope="module")
def mobilenet_checkpoint(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    name = CHECKPOINTS["panns-mobilenetv1"].filename
    return save_checkpoint(tmp_path_factory.mktemp("ckptmn") / name, seed=2, model="panns-mobilenetv1")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def noise(rows: int, samples: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-0.5, 0.5, (rows, samples)).astype(np.float32))


def payload_bytes(net: nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in net.state_dict().values())


# --- Cnn14 at 16 kHz -------------------------------------------------------


def test_cnn14_16k_same_as_panns_inference(reference_module, cnn14_16k_checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    state = weights(cnn14_16k_checkpoint)
    ref = reference_module.Cnn14(
        sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527
    )
    ref.load_state_dict(state, strict=True)
    ours = Cnn14(PANNS_16K)
    ours.load_state_dict(state, strict=True)
    ref.eval()
    ours.eval()
    audio = noise(2, 24000)
    with torch.no_grad():
        expected = ref(audio)
        embedding, tags = ours(audio)
    assert embedding.shape == (2, 2048) and tags.shape == (2, 527)
    torch.testing.assert_close(embedding, expected["embedding"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tags, expected["clipwise_output"], rtol=1e-4, atol=1e-5)


def test_cnn14_16k_front_end_matches_torchlibrosa_at_init(reference_module) -> None:  # type: ignore[no-untyped-def]
    ref = reference_module.Cnn14(16000, 512, 160, 64, 50, 8000, 527).state_dict()
    ours = Cnn14(PANNS_16K).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}
    assert ours["spectrogram_extractor.stft.conv_real.weight"].shape == (257, 1, 512)
    assert ours["logmel_extractor.melW"].shape == (257, 64)
    for key in (
        "spectrogram_extractor.stft.conv_real.weight",
        "spectrogram_extractor.stft.conv_imag.weight",
        "logmel_extractor.melW",
    ):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-6)


def test_the_16k_size_estimate_is_cnn14s_less_the_smaller_front_end() -> None:
    """The published size of Cnn14_16k is unknown to us; the estimate in
    CHECKPOINTS is Cnn14's published size less the tensor bytes the 16 kHz
    front end saves (same keys, so the same pickle overhead)."""
    saved = payload_bytes(Cnn14(PANNS_32K)) - payload_bytes(Cnn14(PANNS_16K))
    assert saved == 4 * (2 * 513 * 1024 + 513 * 64 - 2 * 257 * 512 - 257 * 64) == 3_215_360
    assert CHECKPOINTS["panns-cnn14-16k"].size == CHECKPOINTS["panns-cnn14"].size - saved


# --- MobileNetV1 -----------------------------------------------------------


class ReferenceMobileNetV1(nn.Module):
    """MobileNetV1 as audioset_tagging_cnn's pytorch/models.py defines it,
    built from torchlibrosa's layers (convolution STFT, librosa mel filters);
    inference only, so without SpecAugmentation, mixup and dropout."""

    def __init__(self) -> None:
        from torchlibrosa.stft import LogmelFilterBank, Spectrogram

        super().__init__()
        self.spectrogram_extractor = Spectrogram(
            n_fft=1024,
            hop_length=320,
            win_length=1024,
            window="hann",
            center=True,
            pad_mode="reflect",
            freeze_parameters=True,
        )
        self.logmel_extractor = LogmelFilterBank(
            sr=32000,
            n_fft=1024,
            n_mels=64,
            fmin=50,
            fmax=14000,
            ref=1.0,
            amin=1e-10,
            top_db=None,
            freeze_parameters=True,
        )
        self.bn0 = nn.BatchNorm2d(64)

        def conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inp, oup, 3, 1, 1, bias=False), nn.AvgPool2d(stride), nn.BatchNorm2d(oup), nn.ReLU()
            )

        def conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inp, inp, 3, 1, 1, groups=inp, bias=False),
                nn.AvgPool2d(stride),
                nn.BatchNorm2d(inp),
                nn.ReLU(),
                nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
                nn.ReLU(),
            )

        self.features = nn.Sequential(
            conv_bn(1, 32, 2),
            conv_dw(32, 64, 1),
            conv_dw(64, 128, 2),
            conv_dw(128, 128, 1),
            conv_dw(128, 256, 2),
            conv_dw(256, 256, 1),
            conv_dw(256, 512, 2),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 1024, 2),
            conv_dw(1024, 1024, 1),
        )
        self.fc1 = nn.Linear(1024, 1024, bias=True)
        self.fc_audioset = nn.Linear(1024, 527, bias=True)

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.logmel_extractor(self.spectrogram_extractor(audio))
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = torch.mean(self.features(x), dim=3)
        x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
        x = F.relu(self.fc1(x))
        return {"embedding": x, "clipwise_output": torch.sigmoid(self.fc_audioset(x))}


def test_mobilenet_has_the_official_parameter_names_and_shapes() -> None:
    ours = {k: tuple(v.shape) for k, v in MobileNetV1().state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in ReferenceMobileNetV1().state_dict().items()}
    # Spelled out too: the Sequential indices are the names in the checkpoint.
    assert ours["features.0.0.weight"] == (32, 1, 3, 3)
    assert ours["features.0.2.running_mean"] == (32,)
    assert ours["features.1.0.weight"] == (32, 1, 3, 3)  # depthwise
    assert ours["features.1.2.weight"] == (32,)
    assert ours["features.1.4.weight"] == (64, 32, 1, 1)  # pointwise
    assert ours["features.1.5.running_var"] == (64,)
    assert ours["features.12.0.weight"] == (512, 1, 3, 3)
    assert ours["features.13.4.weight"] == (1024, 1024, 1, 1)
    assert ours["fc1.weight"] == (1024, 1024) and ours["fc_audioset.weight"] == (527, 1024)
    assert ours["spectrogram_extractor.stft.conv_real.weight"] == (513, 1, 1024)
    assert not any(k.startswith("features.") and k.split(".")[2] in ("1", "3", "6") for k in ours)  # pools, ReLUs
    assert len([k for k in ours if k.startswith("features.")]) == 14 * 12 - 6  # 5 keys per BN, 1 per conv


def test_mobilenet_size_agrees_with_the_published_checkpoint() -> None:
    """The published file is 23,639,473 bytes. Its tensors, if the layout
    is right, leave ~185 bytes of pickle per entry, as Cnn14's published
    327,428,481 bytes leave ~179 for its own entries; a block too many or
    too few would be off by kilobytes to megabytes."""
    net, cnn14 = MobileNetV1(), Cnn14()
    per_entry = (CHECKPOINTS["panns-mobilenetv1"].size - payload_bytes(net)) / len(net.state_dict())
    cnn14_per_entry = (CHECKPOINTS["panns-cnn14"].size - payload_bytes(cnn14)) / len(cnn14.state_dict())
    assert 150 < cnn14_per_entry < 210 and abs(per_entry - cnn14_per_entry) < 15


def test_mobilenet_same_as_the_torchlibrosa_reference(mobilenet_checkpoint: Path) -> None:
    state = weights(mobilenet_checkpoint)
    ref = ReferenceMobileNetV1().eval()
    ref.load_state_dict(state, strict=True)
    ours = MobileNetV1().eval()
    ours.load_state_dict(state, strict=True)
    audio = noise(2, 48000, seed=3)
    with torch.no_grad():
        expected = ref(audio)
        embedding, tags = ours(audio)
    assert embedding.shape == (2, 1024) and tags.shape == (2, 527)
    assert (embedding > 0).any(dim=1).all()  # a real comparison, not of zeros
    torch.testing.assert_close(embedding, expected["embedding"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tags, expected["clipwise_output"], rtol=1e-4, atol=1e-5)


def test_mobilenet_front_end_matches_torchlibrosa_at_init() -> None:
    ours, ref = MobileNetV1().state_dict(), ReferenceMobileNetV1().state_dict()
    for key in ("spectrogram_extractor.stft.conv_real.weight", "logmel_extractor.melW"):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-6)


def test_mobilenet_has_4_8_million_learned_parameters() -> None:
    """The paper's 4.8 M counts what is learned, not the fixed STFT and mel
    weights the checkpoint also stores."""
    learned = sum(p.numel() for n, p in MobileNetV1().named_parameters() if not n.startswith(FRONT_END))
    assert 4_700_000 <= learned <= 4_900_000


# --- loading, serving, messages, downloads ----------------------------------


def test_mobilenet_model_loads_and_embeds(mobilenet_checkpoint: Path) -> None:
    model = MobileNetV1Model(mobilenet_checkpoint, download=False, device="cpu", precision="fp32")
    assert model.info.name == "panns-mobilenetv1" and model.info.dim == 1024 and model.info.sample_rate == 32000
    model.load()
    out = model.embed(np.random.default_rng(1).uniform(-0.3, 0.3, (2, 32000)).astype(np.float32))
    assert out.vectors.shape == (2, 1024)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)
    assert out.tag_scores is not None and out.tag_scores.shape == (2, 527)
    assert ((out.tag_scores >= 0) & (out.tag_scores <= 1)).all()
    # The same numbers as the bare network in fp32 (the model adds only device/precision handling).
    net = random_network("panns-mobilenetv1", seed=2).eval()
    with torch.no_grad():
        direct = net(torch.from_numpy(np.random.default_rng(1).uniform(-0.3, 0.3, (2, 32000)).astype(np.float32)))[0]
    direct_unit = direct.numpy() / np.linalg.norm(direct.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(out.vectors, direct_unit, rtol=1e-4, atol=1e-6)


def test_cnn14_16k_model_loads_and_embeds(cnn14_16k_checkpoint: Path) -> None:
    model = Cnn14Model(
        cnn14_16k_checkpoint, download=False, device="cpu", precision="fp32", spec=PANNS_16K, info=CNN14_16K_INFO
    )
    assert model.source == CHECKPOINTS["panns-cnn14-16k"]
    model.load()
    out = model.embed(np.random.default_rng(1).uniform(-0.3, 0.3, (1, 16000)).astype(np.float32))
    assert out.vectors.shape == (1, 2048) and out.tag_scores is not None and out.tag_scores.shape == (1, 527)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)


def test_a_front_end_that_disagrees_with_the_info_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16000"):
        Cnn14Model(tmp_path / "x.pth", download=False, spec=PANNS_16K)  # 32 kHz info


def test_another_variants_checkpoint_is_reported_by_name(
    cnn14_16k_checkpoint: Path, mobilenet_checkpoint: Path
) -> None:
    with pytest.raises(ModelUnavailable, match=r"(?s)not a Cnn14 checkpoint: .*size mismatch"):
        Cnn14Model(cnn14_16k_checkpoint, download=False, device="cpu").load()  # 16 kHz file as the 32 kHz model
    with pytest.raises(ModelUnavailable, match=r"not a Cnn14 \(16 kHz\) checkpoint"):
        Cnn14Model(mobilenet_checkpoint, False, "cpu", spec=PANNS_16K, info=CNN14_16K_INFO).load()
    with pytest.raises(ModelUnavailable, match="not a MobileNetV1 checkpoint"):
        MobileNetV1Model(cnn14_16k_checkpoint, download=False, device="cpu").load()


def test_every_checkpoint_has_a_path_setting_defaulting_to_its_file() -> None:
    fields = {f.name: f for f in dataclasses.fields(EmbedderConfig)}
    for name, ckpt in CHECKPOINTS.items():
        assert name in MODELS
        assert getattr(EmbedderConfig(), ckpt.setting).name == ckpt.filename, name
        assert fields[ckpt.setting].type in (Path, "Path")
    # The variants are opt-in: no new download by default.
    assert EmbedderConfig().models == ("panns-cnn14", "fingerprint-v1", "fingerprint-v2", "spectral-v1")


def test_variant_settings_come_from_the_environment(tmp_path: Path) -> None:
    config = cfg.load(
        EmbedderConfig,
        {
            "AUDIOSEARCH_MODELS": "panns-cnn14,panns-mobilenetv1,panns-cnn14-16k,fingerprint-v1",
            "AUDIOSEARCH_CNN14_16K_CHECKPOINT": str(tmp_path / "a.pth"),
            "AUDIOSEARCH_MOBILENETV1_CHECKPOINT": str(tmp_path / "b.pth"),
            "AUDIOSEARCH_CNN14_DOWNLOAD": "false",
        },
    )
    models = {m.info.name: m for m in build_models(config)}
    assert list(models) == ["panns-cnn14", "panns-mobilenetv1", "panns-cnn14-16k", "fingerprint-v1"]
    assert models["panns-cnn14-16k"].checkpoint == tmp_path / "a.pth"  # type: ignore[attr-defined]
    assert models["panns-mobilenetv1"].checkpoint == tmp_path / "b.pth"  # type: ignore[attr-defined]
    assert not any(getattr(m, "download", False) for m in models.values())
    assert models["panns-cnn14-16k"].info.sample_rate == 16000 and models["panns-mobilenetv1"].info.dim == 1024
    assert isinstance(models["panns-mobilenetv1"], MobileNetV1Model)


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("panns-cnn14", "AUDIOSEARCH_CNN14_CHECKPOINT"),
        ("panns-cnn14-16k", "AUDIOSEARCH_CNN14_16K_CHECKPOINT"),
        ("panns-mobilenetv1", "AUDIOSEARCH_MOBILENETV1_CHECKPOINT"),
    ],
)
async def test_missing_weights_name_the_right_setting(tmp_path: Path, name: str, variable: str) -> None:
    setting = CHECKPOINTS[name].setting
    config = cfg.load(
        EmbedderConfig, environ={}, models=(name, "spectral-v1"), cnn14_download=False, **{setting: tmp_path / "no.pth"}
    )
    registry = Registry(build_models(config), config.default_model)
    await registry.load_all()
    embedder = Embedder(registry, config)
    try:
        with pytest.raises(FailedPrecondition) as info:
            await embedder.embed(encode(sound(1, seconds=1.0)), name)
    finally:
        await embedder.close()
    message = str(info.value)
    ckpt = CHECKPOINTS[name]
    assert variable in message and "AUDIOSEARCH_CNN14_DOWNLOAD=true" in message
    assert ckpt.md5 in message and ckpt.filename in message and str(tmp_path / "no.pth") in message
    others = {c.setting for c in CHECKPOINTS.values()} - {setting}
    assert not any(cfg.env_name(s) in message for s in others)
    assert not (tmp_path / "no.pth").exists()


async def test_variants_embed_through_the_embedder_service(
    tmp_path: Path, cnn14_16k_checkpoint: Path, mobilenet_checkpoint: Path
) -> None:
    config = cfg.load(
        EmbedderConfig,
        environ={},
        data_dir=tmp_path,
        models=("panns-cnn14-16k", "panns-mobilenetv1", "fingerprint-v1"),
        cnn14_16k_checkpoint=cnn14_16k_checkpoint,
        mobilenetv1_checkpoint=mobilenet_checkpoint,
        cnn14_download=False,
        device="cpu",
        precision="fp32",
        batch_wait_ms=1.0,
    )
    registry = Registry(build_models(config), config.default_model)
    await registry.load_all()
    embedder = Embedder(registry, config)
    try:
        assert {s.info.name: s.available for s in embedder.models()} == {
            "panns-cnn14-16k": True,
            "panns-mobilenetv1": True,
            "fingerprint-v1": True,
        }
        # "auto" still means Cnn14 at 32 kHz or the weights-free default, never a variant by surprise.
        assert registry.default_name == "fingerprint-v1"
        data = encode(sound(4, seconds=3.0, rate=48000), rate=48000)  # resampled to each model's rate
        for name, dim in (("panns-cnn14-16k", 2048), ("panns-mobilenetv1", 1024)):
            result = await embedder.embed(data, name, top_tags=3)
            assert (result.model.name, result.model.dim, result.sample_rate) == (name, dim, 48000)
            assert len(result.windows) == 1 and result.windows[0].duration == pytest.approx(3.0)
            vector = np.asarray(result.windows[0].vector)
            assert vector.shape == (dim,) and np.linalg.norm(vector) == pytest.approx(1.0, rel=1e-5)
            assert len(result.tags) == 3 and all(0 <= score <= 1 for _, score in result.tags)
    finally:
        await embedder.close()


def test_mobilenet_downloads_with_an_md5_check(file_server, tmp_path: Path, mobilenet_checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    root, base = file_server
    (root / mobilenet_checkpoint.name).symlink_to(mobilenet_checkpoint)
    official = CHECKPOINTS["panns-mobilenetv1"]
    url = f"{base}/{mobilenet_checkpoint.name}"

    wrong = dataclasses.replace(official, url=url)  # the official md5 is not our random weights'
    target = tmp_path / "bad" / official.filename
    with pytest.raises(ModelUnavailable, match="md5"):
        MobileNetV1Model(target, download=True, device="cpu", source=wrong).load()
    assert list(target.parent.iterdir()) == []  # nothing half-written left

    md5 = hashlib.md5(mobilenet_checkpoint.read_bytes()).hexdigest()
    source = dataclasses.replace(official, url=url, md5=md5)
    target = tmp_path / "dl" / official.filename
    model = MobileNetV1Model(target, download=True, device="cpu", source=source)
    model.load()
    assert target.read_bytes() == mobilenet_checkpoint.read_bytes()
    assert model.embed(np.zeros((1, 32000), dtype=np.float32)).vectors.shape == (1, 1024)


def test_fetch_weights_takes_a_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mobilenet_checkpoint: Path
) -> None:
    from services.cli.main import main

    monkeypatch.setenv("AUDIOSEARCH_MOBILENETV1_CHECKPOINT", str(mobilenet_checkpoint))
    assert main(["fetch-weights", "--model", "panns-mobilenetv1", "--json"]) == 0  # present: nothing fetched
    assert json.loads(capsys.readouterr().out) == {"model": "panns-mobilenetv1", "path": str(mobilenet_checkpoint)}
    assert main(["fetch-weights", "--model", "spectral-v1", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "INVALID_ARGUMENT"  # --json: on stdout


def test_the_variants_never_import_panns_inference_or_torchlibrosa() -> None:
    code = (
        "import sys, services.embedder.models.mobilenet, services.embedder.models.panns_frontend, "
        "services.embedder.models.cnn14; print(any(m.split('.')[0] in ('panns_inference', 'torchlibrosa') "
        "for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
