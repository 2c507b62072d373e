"""GPU throughput and accuracy of the Cnn14 embedder (`make bench-gpu`, or on
a GPU machine: `python bench/gpu_cnn14.py AUDIO.npy`).

Weights: a checkpoint in the official format with seeded random values
(the real one cannot be fetched here); speed does not depend on the values,
and the fp32-vs-bf16 cosine is measured on real audio through the same
network. Prints one JSON document: the card, 10 s clips per second for the
fp32 baseline and the production path (bf16 autocast, channels-last,
pinned staging, then also torch.compile) at each batch size, the best as a ratio to fp32, the
fraction of the card's dense bf16 peak at 42.2 GFLOP per clip, and the
minimum cosine between fp32 and production embeddings."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.embedder.models.cnn14 import Cnn14
from services.embedder.models.panns import accelerate, run
from services.embedder.models.panns_frontend import PANNS_32K
from tests.reference_models import random_cnn14

GFLOP_PER_CLIP = 42.2
# Dense bf16 tensor-core peaks (TFLOP/s), by the name torch reports.
PEAKS = {"H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H200": 989.4, "A100": 312.0, "L4": 121.0}
CLIP = 10 * PANNS_32K.sample_rate


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def clips_per_second(net: Cnn14, device: torch.device, precision: str, batch: int, seconds: float = 3.0) -> float:
    windows = np.random.default_rng(0).standard_normal((batch, CLIP), dtype=np.float32) * 0.1
    for _ in range(3):  # warm-up: cuDNN picks its algorithms
        run(net, windows, device, precision)
    torch.cuda.synchronize()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(net, windows, device, precision)  # results come back to the host: included
        done += batch
    return done / (time.perf_counter() - start)


def main() -> int:
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    audio = np.load(sys.argv[1]) if len(sys.argv) > 1 else None
    fp32 = random_cnn14().to(device).eval()
    fast = accelerate(random_cnn14(), device)
    compiled = accelerate(random_cnn14(), device, compiled=True)
    out: dict = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "clips_per_second": {}}
    for batch in (32, 64, 128, 256, 512):
        out["clips_per_second"][str(batch)] = {
            "fp32": clips_per_second(fp32, device, "fp32", batch),
            "bf16_channels_last": clips_per_second(fast, device, "bf16", batch),
            "bf16_channels_last_compiled": clips_per_second(compiled, device, "bf16", batch),
        }
        print(json.dumps({batch: out["clips_per_second"][str(batch)]}), flush=True)
    best_batch, best = max(
        ((b, v["bf16_channels_last_compiled"]) for b, v in out["clips_per_second"].items()), key=lambda x: x[1]
    )
    baseline = max(v["fp32"] for v in out["clips_per_second"].values())
    peak = peak_for(out["card"])
    out["best"] = {
        "batch": int(best_batch),
        "clips_per_second": best,
        "fp32_best_clips_per_second": baseline,
        "ratio_to_fp32": best / baseline,
        "hours_of_audio_per_second": best * 10 / 3600,
        "tflops": best * GFLOP_PER_CLIP / 1000,
        "fraction_of_bf16_peak": best * GFLOP_PER_CLIP / 1000 / peak if peak else None,
    }
    if audio is not None:
        a = run(fp32, audio, device, "fp32")[0].numpy()
        b = run(compiled, audio, device, "bf16")[0].numpy()
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        out["cosine_bf16_vs_fp32"] = {"min": float(cos.min()), "mean": float(cos.mean()), "clips": len(cos)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
