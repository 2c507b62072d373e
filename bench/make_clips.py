"""Cuts real recordings into 10 s clips at 32 kHz (looped when shorter) and
saves them as one float32 array, the input of bench/gpu_cnn14.py's accuracy
check: `python bench/make_clips.py samples/sonic-pi bench/.cache/clips.npy`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.embedder.audio import resample

RATE, SECONDS, CLIPS = 32000, 10, 24


def main(source: str, target: str) -> int:
    files = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in {".flac", ".wav", ".ogg"})
    clips = []
    for path in np.random.default_rng(3).permutation(files):
        x, rate = sf.read(path, dtype="float32", always_2d=True)
        x = resample(x.mean(axis=1), rate, RATE)
        if len(x) < RATE * 3:
            continue
        clips.append(np.resize(x, RATE * SECONDS).astype(np.float32))
        if len(clips) == CLIPS:
            break
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    np.save(target, np.stack(clips))
    print(f"{len(clips)} clips of {SECONDS} s from {source} -> {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
