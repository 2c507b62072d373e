"""`spectral-v1`: a deterministic, weights-free audio descriptor, so the
whole system runs offline.

Per window (2 s, hop 0.5 s, audio resampled to 16 kHz) it computes a
48-band log-mel spectrogram (60-7600 Hz, so it survives resampling down to
16 kHz) and three blocks that are invariant to gain (log-domain shifts
cancel) and tolerant of small time shifts (they average over the window):

1. spectral envelope: mean log energy per band, centred over bands;
2. dynamics: standard deviation over time per band;
3. modulation spectrum: for 8 groups of bands, the magnitude spectrum of
   the energy trajectory (0.4-12.5 Hz, 12 log-spaced bins) - rhythm and
   texture, independent of where in the window events fall.

Each block is centred and L2-normalised (so a dot product is a
correlation), weighted, concatenated and normalised again: 192 dims."""

from __future__ import annotations

import itertools

import numpy as np

from services.embedder.models.base import Embeddings, ModelInfo, l2_normalise
from services.embedder.models.entry import ModelEntry
from services.embedder.models.melscale import mel_filterbank

RATE = 16_000
N_FFT = 512
HOP = 160  # 10 ms frames
BANDS = 48
GROUPS = 8
MOD_FFT = 256
MOD_BINS = 12
WEIGHTS = (1.0, 0.8, 1.0)


class SpectralModel:
    info = ModelInfo(
        name="spectral-v1",
        version="1",
        dim=BANDS * 2 + GROUPS * MOD_BINS,
        sample_rate=RATE,
        window_seconds=2.0,
        hop_seconds=0.5,
        min_seconds=0.1,
        purpose='"Sounds like this": recordings with a similar timbre and spectrum. Works offline, no weights needed.',
        score_meaning="spectral similarity, -1 to 1: higher sounds more alike",
    )

    def __init__(self) -> None:
        self._mel = mel_filterbank(RATE, N_FFT, BANDS, 60.0, 7600.0).T.astype(np.float32)  # [freq, bands]
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
        # Roughly log-spaced edges over modulation bins 1..32 (0.4-12.5 Hz at 100 fps).
        self._mod_edges = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 26, 33)

    def load(self) -> None:
        """Nothing to load: the descriptor has no weights."""

    def _logmel(self, window: np.ndarray) -> np.ndarray:
        if len(window) < N_FFT:
            window = np.pad(window, (0, N_FFT - len(window)))
        frames = np.lib.stride_tricks.sliding_window_view(window, N_FFT)[::HOP]
        power = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
        mel = power @ self._mel  # [frames, bands]
        # Floor relative to the loudest bin keeps the feature gain-invariant.
        floor = max(float(mel.max()) * 1e-8, 1e-20)
        return np.log10(np.maximum(mel, floor))

    def _describe(self, window: np.ndarray) -> np.ndarray:
        logmel = self._logmel(window)
        envelope = logmel.mean(axis=0)
        dynamics = logmel.std(axis=0)
        grouped = logmel.reshape(len(logmel), GROUPS, BANDS // GROUPS).mean(axis=2)
        trajectory = grouped - grouped.mean(axis=0)
        spectrum = np.abs(np.fft.rfft(trajectory, n=MOD_FFT, axis=0))  # [mod bins, groups]
        edges = self._mod_edges
        modulation = np.stack([spectrum[a:b].mean(axis=0) for a, b in itertools.pairwise(edges)])
        modulation = np.log1p(modulation)
        blocks = [envelope, dynamics, modulation.T.ravel()]
        out = []
        for block, weight in zip(blocks, WEIGHTS, strict=True):
            centred = block - block.mean()
            out.append(weight * centred / max(float(np.linalg.norm(centred)), 1e-9))
        return np.concatenate(out)

    def embed(self, windows: np.ndarray) -> Embeddings:
        vectors = np.stack([self._describe(w) for w in windows]).astype(np.float32)
        return Embeddings(l2_normalise(vectors))


ENTRY = ModelEntry(info=SpectralModel.info, build=lambda config: SpectralModel(), offered_by_default=True)
