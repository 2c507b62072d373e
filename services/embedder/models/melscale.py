"""Slaney-style mel filterbank (the librosa default: slaney mel scale,
area-normalised triangles), in numpy so no audio library is needed."""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log = hz >= _MIN_LOG_HZ
    mel[log] = _MIN_LOG_MEL + np.log(hz[log] / _MIN_LOG_HZ) / _LOGSTEP
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log = mel >= _MIN_LOG_MEL
    hz[log] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel[log] - _MIN_LOG_MEL))
    return hz


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] weights."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_freqs = mel_to_hz(np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]
    return weights.astype(np.float32)
