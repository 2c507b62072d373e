"""The first search after a restart, against the second.

    python bench/restart.py SAMPLES_DIR OUT.json

Indexes SAMPLES_DIR (the weights-free default model) through a real
multi-process stack (`audiosearch serve`'s supervisor), stops it, starts it
again on the same data, and times the first searches once it reports
SERVING. The search service loads every collection and the embedder its
models before they say SERVING, so the first search should cost about what
the second does: the figure is the first's seconds with the second's as the
baseline (target: a ratio of at most 2). Also reported: how long the
restart took until every service was SERVING, against the first start on
an empty data dir."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import figure, merge_results, start_stack
from bench.pipeline import audio_files, cli

LIBRARY = "restart"
SEARCHES = 5


def main(samples: Path, out: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    files = audio_files(samples)
    env = {"AUDIOSEARCH_CNN14_DOWNLOAD": "false", "AUDIOSEARCH_LOG_LEVEL": "WARNING"}
    source = max(files, key=lambda f: sf.info(f).duration)
    audio, rate = sf.read(source, dtype="float32")
    query = work / "query.wav"
    sf.write(query, audio[len(audio) // 3 : len(audio) // 3 + 5 * rate], rate)

    began = time.perf_counter()
    stack = start_stack(work / "data", env)
    fresh = time.perf_counter() - began
    try:
        gateway = {"AUDIOSEARCH_GATEWAY": stack.addresses["gateway"]}
        indexed = cli(gateway, "index", str(samples), "--library", LIBRARY)
        print(f"indexed {indexed['added']} files with {indexed['model']}", flush=True)
    finally:
        stack.stop()

    began = time.perf_counter()
    stack = start_stack(work / "data", env)
    started = time.perf_counter() - began
    try:
        gateway = {"AUDIOSEARCH_GATEWAY": stack.addresses["gateway"]}
        seconds = []
        for _ in range(SEARCHES):
            t = time.perf_counter()
            results = cli(gateway, "search", str(query), "--library", LIBRARY, "--top-k", "3")
            seconds.append(time.perf_counter() - t)
            assert results[0]["name"] == source.name, results
    finally:
        stack.stop()
    times = ", ".join(f"{s:.2f}" for s in seconds)
    print(f"first start {fresh:.1f} s; restart until SERVING {started:.1f} s; searches (s): {times}")
    note = (
        f"{indexed['added']} files ({indexed['model']}); 5 s query through `audiosearch search` (a new CLI "
        "process each time); baseline: the second search of the same run"
    )
    merge_results(
        out,
        {
            "first_search_after_restart_seconds": figure(seconds[0], seconds[1], "s", note),
            "restart_until_serving_seconds": figure(
                started,
                fresh,
                "s",
                "a start on the indexed data until every service is SERVING (collections loaded and warmed); "
                "baseline: the first start, on an empty data dir",
            ),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
