"""Embedder throughput on this machine's CPU (`make bench`): 10 s clips per
second through the embedder service's own path (decode, windowing, dynamic
batching, Cnn14 in its CPU inference form), at concurrency 1 and 8, each as
a ratio to the reference `panns_inference.AudioTagging.inference` called
once per clip, measured in the same run on the same clips and weights. The
default precision ("auto": bf16 where the CPU has native bf16) and fp32 are
both measured, with the cosine between our embeddings and the reference's
for every clip. Weights: a checkpoint in the official format with seeded
random values (speed does not depend on them)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from common import cnn14_checkpoint, figure, merge_results  # noqa: E402

from services.common import config as cfg  # noqa: E402
from services.embedder.config import EmbedderConfig  # noqa: E402
from services.embedder.embedding import Embedder  # noqa: E402
from services.embedder.registry import Registry, build_models  # noqa: E402
from tests.reference_models import audio_tagging  # noqa: E402
from tests.sounds import encode  # noqa: E402

RATE = 32000


def reference_rate(tagger, clips: np.ndarray) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    tagger.inference(clips[:1])  # warm-up
    start, out = time.perf_counter(), []
    for clip in clips:
        out.append(tagger.inference(clip[None, :])[1][0])
    return len(clips) / (time.perf_counter() - start), np.stack(out)


async def our_rate(embedder: Embedder, files: list[bytes], concurrency: int) -> tuple[float, np.ndarray]:
    await embedder.embed(files[0], "panns-cnn14")  # warm-up
    results: dict[int, np.ndarray] = {}
    queue = list(range(len(files)))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            result = await embedder.embed(files[i], "panns-cnn14", window=10.0, hop=10.0)
            results[i] = np.asarray(result.windows[0].vector)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(files) / (time.perf_counter() - start), np.stack([results[i] for i in range(len(files))])


async def main(clips_file: str, out: str) -> int:
    clips = np.load(clips_file)
    checkpoint = cnn14_checkpoint()
    # panns_inference re-downloads a checkpoint under 300 MB; ours is full size.
    tagger = audio_tagging(Path(tempfile.mkdtemp(prefix="bench-")) / "home", checkpoint)
    reference, ref_vectors = reference_rate(tagger, clips)
    ref_vectors = ref_vectors / np.linalg.norm(ref_vectors, axis=1, keepdims=True)
    files = [encode(c, rate=RATE) for c in clips]
    figures = {}
    for precision in ("auto", "fp32"):
        config = cfg.load(
            EmbedderConfig,
            environ={},
            models=("panns-cnn14",),
            cnn14_checkpoint=checkpoint,
            cnn14_download=False,
            precision=precision,
        )
        registry = Registry(build_models(config), config.default_model)
        await registry.load_all()
        used = registry.slots["panns-cnn14"].model.precision  # type: ignore[attr-defined]
        embedder = Embedder(registry, config)
        prefix = "embedder" if precision == "auto" else "embedder_fp32"
        cosines = []
        for concurrency in (1, 8):
            rate, vectors = await our_rate(embedder, files, concurrency)
            figures[f"{prefix}_clips_per_second_concurrency_{concurrency}"] = figure(
                rate, reference, "clips/s", f"{len(clips)} real 10 s clips, {used}; baseline: panns_inference, fp32"
            )
            cosines.append(float((vectors * ref_vectors).sum(axis=1).min()))
        await embedder.close()
        figures[f"{prefix}_min_cosine_to_reference"] = {"value": min(cosines), "unit": "cosine", "note": used}
    doc = merge_results(Path(out), figures)
    print(json.dumps({k: doc["figures"][k] for k in figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1], sys.argv[2])))
