"""The table of models: adding a model is its module plus one table line.
A model defined here, registered by one entry, is offered by the config,
built by the registry and served by the embedder, with its own batching."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.common import config as cfg
from services.embedder.config import EmbedderConfig
from services.embedder.embedding import Embedder
from services.embedder.models import table
from services.embedder.models.base import Embeddings, ModelInfo, l2_normalise
from services.embedder.models.checkpoint import Checkpoint
from services.embedder.models.entry import Batching, ModelEntry
from services.embedder.registry import Registry, build_models
from tests.sounds import encode, sound

RATE = 8000


class BandEnergyModel:
    """Weights-free: the energy of a window's four quarters of the spectrum."""

    info = ModelInfo(
        name="band-energy-test",
        version="1",
        dim=4,
        sample_rate=RATE,
        window_seconds=1.0,
        hop_seconds=0.5,
        min_seconds=0.5,
    )

    def load(self) -> None:
        """Nothing to load."""

    def embed(self, windows: np.ndarray) -> Embeddings:
        power = np.abs(np.fft.rfft(windows, axis=1)) ** 2
        bands = np.stack([part.sum(axis=1) for part in np.array_split(power, 4, axis=1)], axis=1)
        return Embeddings(l2_normalise(bands))


ENTRY = ModelEntry(info=BandEnergyModel.info, build=lambda config: BandEnergyModel(), batching=Batching(max_batch=2))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> ModelEntry:
    """The one table line a new model needs."""
    monkeypatch.setitem(table.MODELS, ENTRY.name, ENTRY)
    return ENTRY


async def test_a_model_with_one_table_entry_embeds_through_the_registry(registered: ModelEntry) -> None:
    config = cfg.load(EmbedderConfig, environ={"AUDIOSEARCH_MODELS": f"{registered.name},spectral-v1"})
    registry = Registry(build_models(config), config.default_model)
    await registry.load_all()
    embedder = Embedder(registry, config)
    try:
        result = await embedder.embed(encode(sound(1, seconds=3.0, rate=44100), rate=44100), registered.name)
        assert (result.model.name, result.sample_rate) == (registered.name, 44100)
        assert [w.offset for w in result.windows] == [0.0, 0.5, 1.0, 1.5, 2.0]
        vectors = np.stack([w.vector for w in result.windows])
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        # Its own batching: five windows, at most two per model call.
        assert embedder.batchers[registered.name].calls == 3
    finally:
        await embedder.close()


def test_global_batch_settings_override_each_models_own(registered: ModelEntry) -> None:
    assert EmbedderConfig().batching(registered.name) == Batching(max_batch=2, wait_ms=5.0)
    assert EmbedderConfig(max_batch=16, batch_wait_ms=0.0).batching(registered.name) == Batching(16, 0.0)
    # A model outside the table (built by hand, as tests do) gets the defaults.
    assert EmbedderConfig().batching("not-in-the-table") == Batching()


def test_every_model_says_what_it_finds_and_what_its_score_means() -> None:
    # The one source of these words: the CLI, the HTTP API and the page read them from the model.
    for name, entry in table.MODELS.items():
        assert entry.info.purpose.endswith(".") and entry.info.score_meaning, name
    semantic = [e.info for e in table.MODELS.values() if e.checkpoint is not None]
    assert semantic and all("audiosearch fetch-weights" in info.purpose for info in semantic)


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"known: panns-cnn14, .*spectral-v1"):
        build_models(EmbedderConfig(models=("nope",)))


def test_weights_live_in_the_weights_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    weighted = ModelEntry(
        info=BandEnergyModel.info,
        build=lambda config: BandEnergyModel(),
        checkpoint=Checkpoint("band.pth", "https://example.invalid/band.pth", "0" * 32, 1, "Band energy"),
    )
    monkeypatch.setitem(table.MODELS, weighted.name, weighted)
    assert weighted.name in table.downloadable() and "spectral-v1" not in table.downloadable()
    config = cfg.load(EmbedderConfig, environ={"AUDIOSEARCH_WEIGHTS_DIR": str(tmp_path)})
    assert config.checkpoint_path(weighted.name) == tmp_path / "band.pth"
    # The older per-model settings: unset, they follow the directory; set, they win.
    assert config.cnn14_checkpoint == tmp_path / "Cnn14_mAP=0.431.pth"
    own = cfg.load(
        EmbedderConfig, environ={"AUDIOSEARCH_WEIGHTS_DIR": str(tmp_path), "AUDIOSEARCH_CNN14_CHECKPOINT": "/w/c.pth"}
    )
    assert own.checkpoint_path("panns-cnn14") == Path("/w/c.pth")
    mirrored = EmbedderConfig(cnn14_url="http://mirror/c.pth", cnn14_md5="1" * 32).checkpoint("panns-cnn14")
    assert (mirrored.url, mirrored.md5) == ("http://mirror/c.pth", "1" * 32)


def test_reading_the_table_and_config_imports_no_torch() -> None:
    code = "import sys, services.embedder.config, services.embedder.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
