"""fingerprint-v1: determinism, robustness, and a calibrated threshold,
on a synthetic piece of music (notes with harmonics, drums, a bass line)."""

from __future__ import annotations

import numpy as np
import pytest

from eval.distortions import DISTORTIONS
from services.embedder.audio import resample
from services.embedder.models.fingerprint import FingerprintModel
from services.gateway.ports import Hit
from services.gateway.voting import vote
from tests.sounds import music

RATE = 22050  # tests.sounds.music


def similarity(a, b) -> float:  # type: ignore[no-untyped-def]
    _, ia, ib = np.intersect1d(a.indices, b.indices, return_indices=True)
    return float(np.dot(a.values[ia], b.values[ib]))


@pytest.fixture(scope="module")
def indexed():  # type: ignore[no-untyped-def]
    model = FingerprintModel()
    track = music(1, 60.0)
    vectors, offsets = model.embed_signal(resample(track, RATE, 8000), 2.0, 0.5)
    return model, track, vectors, offsets


def best_window(model, vectors, offsets, clip):  # type: ignore[no-untyped-def]
    """(offset of the query in the track, score), by the gateway's voting."""
    query, query_offsets = model.embed_signal(resample(clip, RATE, 8000), 2.0, 0.5, query=True)
    hits = [[Hit(1, i, offsets[i], similarity(q, v)) for i, v in enumerate(vectors)] for q in query]
    (match,) = vote(hits, query_offsets, 2.0, 0.5, len(clip) / RATE).values()
    return match.offset, match.evidence


def test_deterministic_sparse_and_normalised(indexed) -> None:  # type: ignore[no-untyped-def]
    model, track, vectors, offsets = indexed
    again, _ = model.embed_signal(resample(track, RATE, 8000), 2.0, 0.5)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(vectors, again, strict=True))
    assert offsets[:3] == [0.0, 0.5, 1.0] and len(vectors) == len(offsets)
    for v in vectors:
        assert np.all(np.diff(v.indices.astype(np.int64)) > 0) and int(v.indices.max()) < model.info.dim
        assert np.linalg.norm(v.values) == pytest.approx(1.0, rel=1e-5)
    silent, _ = model.embed_signal(np.zeros(8000 * 3, dtype=np.float32), 2.0, 0.5)
    assert all(len(v.indices) == 0 for v in silent)


@pytest.mark.parametrize(
    "distortion",
    ["clean", "gain_-12dB", "gain_+6dB_clip", "resample_16k", "mp3", "vorbis_low", "white_10dB", "pink_10dB"],
)
def test_excerpt_finds_its_window_under_distortion(indexed, distortion: str) -> None:  # type: ignore[no-untyped-def]
    model, track, vectors, offsets = indexed
    start = 23.37  # not on the window grid
    clip = track[int(start * RATE) : int((start + 5) * RATE)]
    clip, rate = DISTORTIONS[distortion](clip, RATE, np.random.default_rng(0))
    assert rate == RATE
    offset, score = best_window(model, vectors, offsets, clip)
    assert abs(offset - start) <= 0.5
    assert score > model.info.min_evidence


def test_unrelated_audio_stays_below_the_threshold(indexed) -> None:  # type: ignore[no-untyped-def]
    model, _, vectors, offsets = indexed
    other = music(2, 5.0)  # same style, different notes
    _, score = best_window(model, vectors, offsets, other)
    assert score < model.info.min_evidence


def test_long_signals_in_blocks_match_one_pass(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import services.embedder.models.fingerprint as fp

    model = FingerprintModel()
    audio = resample(music(7, 150.0), RATE, 8000)
    blocked, offsets = model.embed_signal(audio, 2.0, 0.5)
    monkeypatch.setattr(fp, "BLOCK_SECONDS", 10_000)
    whole, _ = model.embed_signal(audio, 2.0, 0.5)
    agreement = [similarity(a, b) for a, b in zip(blocked, whole, strict=True)]
    # Identical far from block borders; near them only the peak budget differs.
    assert np.median(agreement) > 0.99 and min(agreement) > 0.7
    assert len(offsets) == len(whole)
