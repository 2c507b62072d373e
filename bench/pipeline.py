"""The whole pipeline on this machine (`make bench`), each figure a ratio to
a baseline measured in the same run:

- indexing: files per second through `audiosearch index` against the four
  services started by `audiosearch serve`'s own supervisor, against two
  sequential pipelines with the model loaded once (decode -> embed ->
  Milvus insert -> SQL insert): the script users write by hand, with
  panns_inference (bench/handrolled.py), and our own code called in-process
  (bench/inprocess.py);
- search: p50 and p99 latency of a 5 s query through the gateway at 10k and
  100k indexed windows, against the same search called in-process on the
  same data;
- memory: each service's peak RSS (VmHWM) while indexing a one-hour file,
  against its own peak before the upload.

Model: panns-cnn14 with a checkpoint in the official format and seeded
random weights (speed and memory do not depend on the values). The library
holds the real sonic-pi samples; the search sizes are reached with
synthetic items of 100 windows each (random non-negative unit vectors, as
Cnn14's ReLU embeddings are), inserted straight into the same stores.

    python bench/pipeline.py SAMPLES_DIR OUT.json [--parts indexing,search,memory]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CACHE,
    cnn14_checkpoint,
    cpu_seconds,
    descendants,
    figure,
    merge_results,
    peak_rss_mib,
    stack_env,
    start_stack,
)
from inprocess import LocalStack, open_local

from services.common import config as cfg
from services.embedder.audio import resample
from services.embedder.config import EmbedderConfig
from services.search.contract import WindowVector

LIBRARY, MODEL, DIM = "bench", "panns-cnn14", 2048
AUDIO = {".flac", ".wav", ".ogg"}
SYNTHETIC_WINDOWS_PER_ITEM = 100
QUERY_SECONDS = 5.0
T = TypeVar("T")


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO)


def embedder_config(checkpoint: Path) -> EmbedderConfig:
    return cfg.load(EmbedderConfig, environ={}, models=(MODEL,), cnn14_checkpoint=checkpoint, cnn14_download=False)


def cli(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"audiosearch {' '.join(args)} failed ({out.returncode}): {out.stdout[-2000:]}{out.stderr[-2000:]}"
        )
    return json.loads(out.stdout)


# Indexing


async def index_in_process(local: LocalStack, files: list[Path]) -> float:
    await local.gateway.create_library(LIBRARY, MODEL)
    start = time.perf_counter()
    created = 0
    for path in files:
        _, new = await local.gateway.insert(LIBRARY, path.read_bytes(), path.name, str(path.resolve()))
        created += new
    seconds = time.perf_counter() - start
    assert created == len(files), f"in-process indexing created {created} of {len(files)}"
    return seconds


def index_through_services(
    work: Path, env: dict[str, str], files_dir: Path, n_files: int, jobs: int
) -> tuple[float, dict[str, float]]:
    """Seconds to index, and the CPU seconds each process spent on it."""
    stack = start_stack(work, env)
    try:

        def cpu() -> dict[str, float]:
            return {
                name: sum(cpu_seconds(pid) for pid in [p.pid, *descendants(p.pid)])
                for name, p in stack.processes.items()
            }

        gateway = {"AUDIOSEARCH_GATEWAY": stack.addresses["gateway"]}
        before, cli_before = cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        doc = cli(gateway, "index", str(files_dir), "--library", LIBRARY, "--model", MODEL, "--jobs", str(jobs))
        seconds = time.perf_counter() - start
        after, cli_after = cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        stack.stop()
    assert doc["added"] == n_files and not doc["failed"], doc
    spent = {name: after[name] - before[name] for name in after}
    spent["cli"] = cli_after.ru_utime + cli_after.ru_stime - cli_before.ru_utime - cli_before.ru_stime
    return seconds, spent


def isolated(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in a fresh process: Milvus Lite keeps its data dir locked
    until the process that opened it exits, and the services open it next."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def local_indexing(data_dir: Path, checkpoint: Path, samples: Path) -> float:
    """Seconds to index `samples` in-process, one file after another."""

    async def go() -> float:
        local = await open_local(data_dir, embedder_config(checkpoint))
        try:
            return await index_in_process(local, audio_files(samples))
        finally:
            await local.close()

    return asyncio.run(go())


def handrolled_indexing(data_dir: Path, checkpoint: Path, samples: Path) -> float:
    from handrolled import index_handrolled

    return index_handrolled(audio_files(samples), data_dir, checkpoint)


def bench_indexing(samples: Path, work: Path, checkpoint: Path) -> dict[str, dict]:
    files = audio_files(samples)
    script = len(files) / isolated(handrolled_indexing, work / "handrolled", checkpoint, samples)
    print(f"hand-rolled sequential script (panns_inference): {script:.2f} files/s", flush=True)
    same_code = len(files) / isolated(local_indexing, work / "local", checkpoint, samples)
    print(f"our code in-process, sequential: {same_code:.2f} files/s", flush=True)
    figures = {}
    for jobs in (4, 8):
        seconds, spent = index_through_services(
            work / f"services-{jobs}", stack_env(checkpoint), samples, len(files), jobs
        )
        rate = len(files) / seconds
        per_file = ", ".join(f"{name} {1000 * cpu / len(files):.0f}" for name, cpu in spent.items())
        print(f"services, --jobs {jobs}: {rate:.2f} files/s; CPU ms per file: {per_file}", flush=True)
        what = (
            f"{len(files)} files ({samples.name}) via `audiosearch index --jobs {jobs}` against `audiosearch serve`; "
            f"CPU ms per file: {per_file}"
        )
        figures[f"indexing_files_per_second_jobs_{jobs}"] = figure(
            rate,
            script,
            "files/s",
            f"{what}; baseline: a sequential script (soundfile/soxr, panns_inference fp32, Milvus Lite, SQLite; "
            "bench/handrolled.py), model loaded once",
        )
        figures[f"indexing_files_per_second_jobs_{jobs}_vs_same_code_in_process"] = figure(
            rate, same_code, "files/s", f"{what}; baseline: our own code in-process, sequential (bench/inprocess.py)"
        )
    return figures


# Search


def queries(files: list[Path], count: int = 8) -> list[tuple[str, bytes]]:
    """5 s excerpts (from 0.5 s in) of the longest real recordings, as WAV at
    their own rate, with the name of the file each came from."""
    import io

    longest = sorted(files, key=lambda p: -sf.info(p).duration)[:count]
    out = []
    for path in longest:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        clip = samples[int(0.5 * rate) : int((0.5 + QUERY_SECONDS) * rate)]
        buffer = io.BytesIO()
        sf.write(buffer, clip, rate, format="WAV", subtype="PCM_16")
        out.append((path.name, buffer.getvalue()))
    return out


def windows_in(local: LocalStack) -> int:
    return sum(s.vectors for s in local.store.stats(LIBRARY))


def add_synthetic(local: LocalStack, target_windows: int, seed: int) -> None:
    """Items of 100 windows each (500 s at the 5 s hop), through the same
    catalog and vector-store code the services run, until the library holds
    `target_windows` windows. Vectors go in 1000 at a time."""
    from services.catalog.records import NewItem

    rng = np.random.default_rng(seed)
    missing, n, rows = target_windows - windows_in(local), 0, []
    while missing > 0:
        count = min(SYNTHETIC_WINDOWS_PER_ITEM, missing)
        digest = hashlib.sha256(f"synthetic-{seed}-{n}".encode()).hexdigest()
        item, _ = local.catalog.reserve_item(NewItem(LIBRARY, digest, f"synthetic-{seed}-{n:05d}.flac"))
        vectors = np.abs(rng.standard_normal((count, DIM), dtype=np.float32))
        vectors *= rng.random((count, DIM), dtype=np.float32) < 0.3  # sparse, like ReLU outputs
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows += [WindowVector(item.id, w, 5.0 * w, vectors[w]) for w in range(count)]
        if len(rows) >= 1000 or count == missing:
            local.store.upsert(LIBRARY, MODEL, DIM, rows)
            rows = []
        local.catalog.mark_ready(item.id, (), 5.0 * count + 5.0, 44100, 2)
        missing -= count
        n += 1
    local.store.flush()
    assert windows_in(local) >= target_windows


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


async def search_in_process(
    local: LocalStack, qs: list[tuple[str, bytes]], rounds: int
) -> tuple[list[float], list[list[int]]]:
    """Latencies, and the ranked item ids of each query (last round)."""
    for _, data in qs[:2]:  # warm-up
        await local.gateway.search(LIBRARY, 10, data)
    latencies, rankings = [], []
    for _ in range(rounds):
        rankings = []
        for _, data in qs:
            start = time.perf_counter()
            ranking = await local.gateway.search(LIBRARY, 10, data)
            latencies.append(time.perf_counter() - start)
            rankings.append([r.item.id for r in ranking.results])
    return latencies, rankings


def search_through_gateway(
    address: str, qs: list[tuple[str, bytes]], rounds: int
) -> tuple[list[float], list[list[int]]]:
    import grpc
    from audiosearch.gateway.v1 import gateway_pb2 as pb
    from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
    gateway = pb_grpc.GatewayServiceStub(channel)

    def search(data: bytes) -> pb.SearchAudioResponse:
        params = pb.SearchParams(library=LIBRARY, top_k=10)
        requests = [pb.SearchAudioRequest(params=params, chunk=data[: 1 << 20])]
        requests += [pb.SearchAudioRequest(chunk=data[i : i + (1 << 20)]) for i in range(1 << 20, len(data), 1 << 20)]
        return gateway.SearchAudio(iter(requests), timeout=120)

    for _, data in qs[:2]:  # warm-up: channels, the embedder's first call
        search(data)
    latencies, rankings = [], []
    for _ in range(rounds):
        rankings = []
        for _, data in qs:
            start = time.perf_counter()
            response = search(data)
            latencies.append(time.perf_counter() - start)
            rankings.append([r.item.id for r in response.results])
    channel.close()
    return latencies, rankings


def local_search(
    data_dir: Path, checkpoint: Path, samples: Path, size: int, rounds: int
) -> tuple[list[float], list[list[int]], int]:
    """Fills the library to `size` windows (indexing `samples` first if the
    indexing part did not), then times the search in-process."""

    async def go() -> tuple[list[float], list[list[int]], int]:
        local = await open_local(data_dir, embedder_config(checkpoint))
        try:
            if LIBRARY not in {s.library for s in local.store.stats()}:
                await index_in_process(local, audio_files(samples))
            print(f"filling to {size} windows ...", flush=True)
            add_synthetic(local, size, seed=size)
            latencies, rankings = await search_in_process(local, queries(audio_files(samples)), rounds)
            return latencies, rankings, windows_in(local)
        finally:
            await local.close()

    return asyncio.run(go())


def bench_search(samples: Path, work: Path, checkpoint: Path) -> dict[str, dict]:
    """Reuses the in-process indexing's data dir (the real samples)."""
    data_dir = work / "local"
    qs = queries(audio_files(samples))
    figures: dict[str, dict] = {}
    for size, rounds in ((10_000, 5), (100_000, 5)):
        inproc, inproc_rankings, windows = isolated(local_search, data_dir, checkpoint, samples, size, rounds)
        stack = start_stack(data_dir, stack_env(checkpoint, AUDIOSEARCH_REPAIR_ON_START="false"))
        try:
            served, served_rankings = search_through_gateway(stack.addresses["gateway"], qs, rounds)
        finally:
            stack.stop()
        (p50, p99), (base50, base99) = percentiles(served), percentiles(inproc)
        same = sum(a == b for a, b in zip(served_rankings, inproc_rankings, strict=True))
        print(
            f"{windows} windows: gateway p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms; in-process p50 "
            f"{base50 * 1000:.0f} ms p99 {base99 * 1000:.0f} ms; same ranking for {same} of {len(qs)} queries",
            flush=True,
        )
        note = (
            f"{len(served)} searches ({rounds} rounds of {len(qs)} real 5 s excerpts), top_k 10, {windows} windows; "
            f"the gateway and in-process rankings are identical for {same} of {len(qs)} queries"
        )
        key = f"{size // 1000}k"
        figures[f"search_p50_seconds_{key}_windows"] = figure(p50, base50, "s", note)
        figures[f"search_p99_seconds_{key}_windows"] = figure(p99, base99, "s", note)
    return figures


# Memory


def hour_file(samples: Path) -> Path:
    """An hour of the real samples end to end (shuffled, each once per pass,
    with short gaps), as 44.1 kHz stereo 16-bit FLAC. Made once."""
    path = CACHE / "one-hour.flac"
    if path.exists():
        return path
    rate, total = 44100, 3600 * 44100
    rng = np.random.default_rng(7)
    files = audio_files(samples)
    decoded = []
    for p in files:
        x, r = sf.read(p, dtype="float32", always_2d=True)
        x = x if x.shape[1] == 2 else np.repeat(x[:, :1], 2, axis=1)
        decoded.append(np.stack([resample(x[:, c], r, rate) for c in range(2)], axis=1))
    tmp = path.with_suffix(".part.flac")
    written = 0
    with sf.SoundFile(tmp, "w", rate, 2, "PCM_16", format="FLAC") as out:
        while written < total:
            for i in rng.permutation(len(decoded)):
                gap = np.zeros((int(rng.uniform(0.05, 0.5) * rate), 2), dtype=np.float32)
                for block in (decoded[i], gap):
                    block = block[: total - written]
                    out.write(np.clip(block, -1, 1))
                    written += len(block)
                if written >= total:
                    break
    tmp.rename(path)
    return path


def bench_memory(samples: Path, work: Path, checkpoint: Path) -> tuple[dict[str, dict], dict[str, str]]:
    path = hour_file(samples)
    info = sf.info(path)
    folder = work / "hour"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / path.name).symlink_to(path)
    stack = start_stack(work / "memory", stack_env(checkpoint))
    try:

        def peaks() -> dict[str, float]:
            out = {}
            for name, process in stack.processes.items():
                pids = [process.pid, *descendants(process.pid)]
                out[name] = sum(peak_rss_mib(pid) for pid in pids)
            return out

        before = peaks()
        start = time.perf_counter()
        doc = cli({"AUDIOSEARCH_GATEWAY": stack.addresses["gateway"]}, "index", str(folder), "--library", LIBRARY)
        seconds = time.perf_counter() - start
        after = peaks()
    finally:
        stack.stop()
    assert doc["added"] == 1 and not doc["failed"], doc
    print(f"one-hour file indexed in {seconds:.0f} s; peak RSS MiB before {before}, during {after}", flush=True)
    note = (
        f"{path.name}: {info.duration:.0f} s, {info.samplerate} Hz, {info.channels} ch FLAC, "
        f"{path.stat().st_size / 2**20:.0f} MiB, indexed in {seconds:.0f} s; baseline: the same process's peak "
        "before the upload (start-up and model load)"
    )
    figures = {f"one_hour_file_peak_rss_mib_{name}": figure(after[name], before[name], "MiB", note) for name in after}
    figures["one_hour_file_peak_rss_mib_all_services"] = figure(
        sum(after.values()), sum(before.values()), "MiB", "sum of the four services' peaks"
    )
    return figures, {"one_hour_file": note}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--parts", default="indexing,search,memory")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    checkpoint = cnn14_checkpoint()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    figures: dict[str, dict] = {}
    notes: dict[str, str] = {}
    if "indexing" in parts:
        figures |= bench_indexing(args.samples, work, checkpoint)
    if "search" in parts:
        figures |= bench_search(args.samples, work, checkpoint)
    if "memory" in parts:
        more, more_notes = bench_memory(args.samples, work, checkpoint)
        figures |= more
        notes |= more_notes
    doc = merge_results(args.out, figures, notes)
    print(json.dumps({k: doc["figures"][k] for k in figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
