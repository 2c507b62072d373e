"""The PANNs models' declarations (Kong et al. 2020, Zenodo record
3987831): their info and their checkpoints. Imports no torch and nothing
that reads the table, so the networks (`cnn14`, `mobilenet`), their
runtime (`panns`) and their table entries (`panns_entries`) all take them
from here."""

from __future__ import annotations

from services.embedder.models.base import ModelInfo
from services.embedder.models.checkpoint import Checkpoint

ZENODO = "https://zenodo.org/record/3987831/files"


def panns_info(name: str, version: str, dim: int, sample_rate: int, variant: str) -> ModelInfo:
    # `variant`: how this network differs from Cnn14, for its purpose ("" for Cnn14).
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
        purpose=(
            f"Semantic similarity{variant}: the same kind of sound (a dog bark, a siren, applause), "
            "with automatic tags. Needs its weights (audiosearch fetch-weights)."
        ),
        score_meaning="embedding similarity, -1 to 1: higher is more the same kind of sound",
    )


# The sample rates are the front ends' (panns_frontend); PannsModel refuses a mismatch.
CNN14_INFO = panns_info("panns-cnn14", "mAP=0.431", 2048, 32000, "")
CNN14_16K_INFO = panns_info("panns-cnn14-16k", "mAP=0.438", 2048, 16000, " at 16 kHz")
MOBILENETV1_INFO = panns_info("panns-mobilenetv1", "mAP=0.389", 1024, 32000, ", a smaller and faster network")

CNN14_CHECKPOINT = Checkpoint(
    filename="Cnn14_mAP=0.431.pth",
    url=f"{ZENODO}/Cnn14_mAP%3D0.431.pth?download=1",
    md5="541141fa2ee191a88f24a3219fff024e",
    size=327_428_481,
    description="PANNs Cnn14 (AudioSet mAP 0.431)",
    setting="cnn14_checkpoint",
    url_setting="cnn14_url",
    md5_setting="cnn14_md5",
)
CNN14_16K_CHECKPOINT = Checkpoint(
    filename="Cnn14_16k_mAP=0.438.pth",
    url=f"{ZENODO}/Cnn14_16k_mAP%3D0.438.pth?download=1",
    md5="362fc5ff18f1d6ad2f6d464b45893f2c",
    # An estimate, not the published size (unknown to us): Cnn14's
    # 327,428,481 bytes less the smaller front end, 803,840 floats fewer
    # (STFT kernels 2x257x512 instead of 2x513x1024, melW 257x64 instead
    # of 513x64) = 3,215,360 bytes. Pickle overhead may differ slightly.
    size=324_213_121,
    description="PANNs Cnn14 16 kHz (AudioSet mAP 0.438)",
    setting="cnn14_16k_checkpoint",
)
MOBILENETV1_CHECKPOINT = Checkpoint(
    filename="MobileNetV1_mAP=0.389.pth",
    url=f"{ZENODO}/MobileNetV1_mAP%3D0.389.pth?download=1",
    md5="a419303e1c88aa1b9d2ac3811563d371",
    size=23_639_473,
    description="PANNs MobileNetV1 (AudioSet mAP 0.389)",
    setting="mobilenetv1_checkpoint",
)
# A PannsModel's default source, by model name.
CHECKPOINTS = {
    CNN14_INFO.name: CNN14_CHECKPOINT,
    CNN14_16K_INFO.name: CNN14_16K_CHECKPOINT,
    MOBILENETV1_INFO.name: MOBILENETV1_CHECKPOINT,
}
