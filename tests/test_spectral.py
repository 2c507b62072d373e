"""The weights-free spectral-v1 model: deterministic, normalised, robust to
gain and resampling, and discriminative."""

from __future__ import annotations

import numpy as np

from services.embedder.audio import resample
from services.embedder.models.spectral import SpectralModel
from tests.sounds import sound


def embed(samples: np.ndarray, rate: int = 44100) -> np.ndarray:
    model = SpectralModel()
    window = resample(samples, rate, 16000)[: 2 * 16000]
    return model.embed(window[None, :]).vectors[0]


def test_deterministic_and_normalised() -> None:
    a, b = embed(sound(1)), embed(sound(1))
    assert np.array_equal(a, b)
    assert a.shape == (SpectralModel.info.dim,)
    assert np.linalg.norm(a) == np.float32(1.0) or abs(np.linalg.norm(a) - 1) < 1e-5


def test_invariant_to_gain_and_robust_to_resampling() -> None:
    x = sound(3)
    ref = embed(x)
    assert ref @ embed(x * 0.05) > 0.999  # -26 dB
    down = resample(resample(x, 44100, 16000), 16000, 44100)
    assert ref @ embed(down) > 0.98


def test_same_sound_beats_every_other_sound() -> None:
    vectors = np.stack([embed(sound(seed)) for seed in range(12)])
    for seed in range(12):
        shifted = sound(seed)[2205:]  # 50 ms later: windows never align exactly
        query = embed(shifted)
        scores = vectors @ query
        assert int(np.argmax(scores)) == seed, scores
