"""`make eval-copies`: the copy detector measured through the real product.

The four services start in this process as the tests start them (the
production `build()` of each, port 0, Milvus Lite and SQLite in a temporary
folder). A library is created with `--model` (fingerprint-v1 by default) and
the indexed soundtracks go in through the gateway's InsertAudioFromPath;
every query is a WAV upload to the gateway's SearchAudio with min_score 0,
so what is measured is the model's own decision, as a client gets it:
`score`, `item_range`/`query_range`, `speed`/`pitch` (0 when the model does
not estimate them) and the response's `min_score`. Queries are cut and
distorted in a worker process and sent `--workers` at a time.

Corpus: the game soundtracks of eval/fetch_corpus.sh (about 11 h). Whole
tracks are split, seeded: about `--held-out-hours` held out (never indexed),
the rest indexed (`--library-hours` caps it); tracks that share audio stay
on one side of the split (SHARED_AUDIO).

Measured:
- per distortion (eval/distortions.py COPIES), seeded 5 s excerpts of indexed
  tracks (the source span is 5 s x the distortion's speed, so every query
  lasts 5 s; the same picks for every distortion): top-1 (the first result
  is the source item at the right offset within 1 s, or holds the very same
  passage elsewhere: a loop the track repeats, a copy in another item, told
  by comparing the two stretches of audio) and recall@10; phone-in-a-room
  and a few other key distortions also at 3 and 10 s;
- the estimated speed and pitch against the truth, where the model gives them;
- false positives: excerpts of held-out tracks of 3, 5, 10, 30, 60 and 300 s
  and the whole held-out tracks, distortions taken in turn: the share of
  queries that get any result;
- negatives (noise, tones, a sweep, silence, clicks; 5 s, 60 s, 600 s): every
  one must get no result;
- the vector store's size per hour indexed (the search service's Milvus Lite
  folder once the stack has stopped, after its last flush), the median and
  p90 time of a 5 s query (the clean 5 s queries, sent one at a time), and
  for calibrating a threshold the scores of correct results and the
  unthresholded scores of false positives: each false-positive query of up
  to 10 s, the first `--raw-long` of each longer length and each negative
  of up to 60 s is sent a second time with min_score -1.

Writes eval/results/copies-<model>.json and .md (copies-<model>-quick.* with
--quick)."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import io
import json
import logging
import multiprocessing
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "stubs"))

from audiosearch.gateway.v1 import gateway_pb2 as pb  # noqa: E402
from audiosearch.gateway.v1 import gateway_pb2_grpc  # noqa: E402

from eval.distortions import COPIES, _pink  # noqa: E402
from services.catalog import __main__ as catalog_main  # noqa: E402
from services.catalog.config import CatalogConfig  # noqa: E402
from services.common import config as cfg  # noqa: E402
from services.common import server  # noqa: E402
from services.common.channels import LOCAL_SUBCHANNELS  # noqa: E402
from services.common.chunks import byte_messages  # noqa: E402
from services.embedder import __main__ as embedder_main  # noqa: E402
from services.embedder.config import EmbedderConfig  # noqa: E402
from services.gateway import __main__ as gateway_main  # noqa: E402
from services.gateway.config import GatewayConfig  # noqa: E402
from services.search import __main__ as search_main  # noqa: E402
from services.search.config import SearchConfig  # noqa: E402

LIBRARY = "copies"
TOP_K = 10
OFFSET_TOLERANCE = 1.0  # s
SAME_PASSAGE = 0.9  # passage_similarity from which a result holds the query's passage
SPEED_TOLERANCE = 0.01  # relative
RPC_TIMEOUT = 900.0
FP_LENGTHS = (3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
NEGATIVE_KINDS = ("white", "pink", "brown", "sine_1k", "tones", "sweep", "silence", "clicks")
NEGATIVE_LENGTHS = (5.0, 60.0, 600.0)
NEGATIVE_RATE = 16000
# Distortions also measured with 3 s and 10 s queries (phone-in-a-room at 10 s is a target).
KEY_DISTORTIONS = ("clean", "pink_10dB", "phone_in_room", "speed_1.08")
# The targets the copy detector is judged on: (label, distortions, length, minimum top-1).
TOP1_TARGETS = (
    (
        "clean, gain, 16 kHz, MP3, reverb, telephone, low-pass 3 kHz, stretch ±10%",
        (
            "clean",
            "gain_-12dB",
            "gain_+6dB_clip",
            "resample_16k",
            "mp3",
            "reverb",
            "telephone",
            "lowpass_3k",
            "stretch_0.90",
            "stretch_1.10",
        ),
        "5s",
        0.98,
    ),
    ("noise 10 dB (white, pink)", ("white_10dB", "pink_10dB"), "5s", 0.95),
    ("noise 5 dB (white, pink)", ("white_5dB", "pink_5dB"), "5s", 0.85),
    ("phone in a room, 5 s", ("phone_in_room",), "5s", 0.90),
    ("phone in a room, 10 s", ("phone_in_room",), "10s", 0.98),
    ("speed ±3%", ("speed_0.97", "speed_1.03"), "5s", 0.95),
    ("speed ±8%", ("speed_0.92", "speed_1.08"), "5s", 0.90),
    ("speed ±15%", ("speed_0.85", "speed_1.15"), "5s", 0.80),
    ("pitch ±1 semitone", ("pitch_-1st", "pitch_+1st"), "5s", 0.90),
)
MAX_FALSE_POSITIVE_RATE = 0.01
MAX_STORE_MB_PER_HOUR = 8.0

# The corpus


@dataclasses.dataclass
class Track:
    path: Path
    name: str  # relative to the corpus
    package: str
    family: str  # variants of one piece share it
    duration: float
    item_id: int = 0


# Tracks that share audio stay on one side of the split: a held-out excerpt
# of one would rightly find the other. Variants by name (a remaster
# `_enhanced`, `-old`, `_sd`, `_remake`), and pairs found by matching every
# track's fingerprint-v1 landmarks against every other's (a dense run of
# time-consistent matches, far above the chance level of unrelated tracks):
# widelands' ingame_14 is its menu, two pairs of freedroidrpg tracks and two
# supertuxkart jingles share a passage, and warzone2100's tracks reuse each
# other's passages throughout, so that package is one family.
VARIANT = re.compile(r"(_enhanced|-old|_sd|_remake)$")
SHARED_AUDIO = {
    "widelands-data/menu": "widelands-data/ingame_14",
    "freedroidrpg-data/hellfortresstwo": "freedroidrpg-data/hellfortressentrance",
    "freedroidrpg-data/techbattle": "freedroidrpg-data/ambientbattle",
    "supertuxkart-data/race_win_theme": "supertuxkart-data/lose_theme",
}
ONE_FAMILY_PACKAGES = {"warzone2100-music"}


def load_tracks(corpus: Path) -> list[Track]:
    """The soundtracks: music/<package>/..., extremetuxracer's music and
    frozen-bubble's three tracks."""
    paths = sorted(p for p in (corpus / "music").rglob("*") if p.suffix.lower() in {".ogg", ".opus"})
    paths += sorted((corpus / "extremetuxracer").glob("*.ogg")) + sorted((corpus / "frozen-bubble").glob("*zik*.ogg"))
    tracks = []
    for path in paths:
        rel = path.relative_to(corpus)
        package = rel.parts[1] if rel.parts[0] == "music" else rel.parts[0]
        info = sf.info(str(path))
        if info.duration < 1.0:
            continue
        family = f"{package}/{VARIANT.sub('', path.stem.lower())}"
        family = package if package in ONE_FAMILY_PACKAGES else SHARED_AUDIO.get(family, family)
        tracks.append(Track(path, str(rel), package, family, float(info.duration)))
    return tracks


def split(tracks: list[Track], held_hours: float, library_hours: float, seed: int) -> tuple[list, list]:
    """Seeded: whole families held out until `held_hours` (a family of more
    than half that is always indexed), then tracks indexed until
    `library_hours` (0: all the rest)."""
    families: dict[str, list[Track]] = {}
    for t in tracks:
        families.setdefault(t.family, []).append(t)
    order = sorted(families)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    held: list[Track] = []
    rest: list[Track] = []
    for name in order:
        group = families[name]
        small = sum(t.duration for t in group) <= held_hours * 3600 / 2
        if small and sum(t.duration for t in held) < held_hours * 3600:
            held += group
        else:
            rest += group
    library: list[Track] = []
    for t in rest:
        if not library_hours or sum(x.duration for x in library) < library_hours * 3600:
            library.append(t)
    return library, held


# Queries, rendered in worker processes (the services hold this one's GIL)


@dataclasses.dataclass(frozen=True)
class Query:
    kind: str  # "copy", "fp", "whole", "negative"
    length: float  # nominal query length (s); 0 for a whole track
    distortion: str
    seed: int
    path: str = ""
    start: float = 0.0  # in the source track (s)
    source_seconds: float = 0.0  # span read from the source; 0: to the end
    item_id: int = 0  # the expected item (copies)
    negative: str = ""


def wav_bytes(y: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV, as an upload would be; a signal that would clip is
    scaled down first (a gain change, not a distortion of its own)."""
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 1.0:
        y = y / peak
    buf = io.BytesIO()
    sf.write(buf, y, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def negative_signal(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * NEGATIVE_RATE)
    t = np.arange(n) / NEGATIVE_RATE
    if kind == "white":
        y = rng.standard_normal(n)
    elif kind == "pink":
        y = _pink(n, rng)
    elif kind == "brown":
        y = np.cumsum(rng.standard_normal(n))
        y -= np.convolve(y, np.ones(1601) / 1601, mode="same")  # drift removed (below ~10 Hz)
    elif kind == "sine_1k":
        y = np.sin(2 * np.pi * 1000 * t)
    elif kind == "tones":  # a "melody" of pure tones, 0.25-1 s each
        y = np.zeros(n)
        at = 0
        while at < n:
            span = int(rng.uniform(0.25, 1.0) * NEGATIVE_RATE)
            f = 110 * 2 ** (rng.integers(0, 48) / 12)
            y[at : at + span] = np.sin(2 * np.pi * f * np.arange(min(span, n - at)) / NEGATIVE_RATE)
            at += span
    elif kind == "sweep":  # logarithmic, 50 Hz to 7 kHz
        f0, f1 = 50.0, 7000.0
        k = np.log(f1 / f0) / max(seconds, 1e-9)
        y = np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    elif kind == "silence":
        y = np.zeros(n)
    elif kind == "clicks":  # 4 clicks a second
        y = np.zeros(n)
        y[:: NEGATIVE_RATE // 4] = 1.0
    else:
        raise ValueError(kind)
    peak = float(np.max(np.abs(y))) or 1.0
    return (0.5 * y / peak).astype(np.float32)


def render(q: Query) -> tuple[bytes, float]:
    """The query's WAV bytes and duration."""
    rng = np.random.default_rng(q.seed)
    if q.kind == "negative":
        y = negative_signal(q.negative, q.length, rng)
        return wav_bytes(y, NEGATIVE_RATE), len(y) / NEGATIVE_RATE
    with sf.SoundFile(q.path) as f:
        rate = f.samplerate
        a = round(q.start * rate)
        f.seek(a)
        frames = round(q.source_seconds * rate) if q.source_seconds else -1
        x = f.read(frames, dtype="float32", always_2d=True).mean(axis=1)
    y, out_rate = COPIES[q.distortion](x, rate, rng)
    return wav_bytes(np.asarray(y, dtype=np.float32), out_rate), len(y) / out_rate


def log_spectrogram(path: str, start: float, seconds: float) -> np.ndarray:
    with sf.SoundFile(path) as f:
        rate = f.samplerate
        f.seek(max(0, round(start * rate)))
        x = f.read(round(seconds * rate), dtype="float32", always_2d=True).mean(axis=1)
    x = soxr.resample(x, rate, 8000)
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
    return np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-3)


def passage_similarity(source: str, start: float, found: str, found_start: float, seconds: float) -> float:
    """How alike the query's source passage and the audio a result points
    at are (Pearson correlation of their log spectrograms, the best within
    +-OFFSET_TOLERANCE): about 1 when the result holds the same passage, a
    loop repeated within the track or a copy of it in another item."""
    a = log_spectrogram(source, start, seconds)
    lo = max(0.0, found_start - OFFSET_TOLERANCE)
    b = log_spectrogram(found, lo, seconds + 2 * OFFSET_TOLERANCE)
    if len(a) < 4 or len(b) < len(a):
        return 0.0
    best = -1.0
    for shift in range(len(b) - len(a) + 1):
        best = max(best, float(np.corrcoef(a.ravel(), b[shift : shift + len(a)].ravel())[0, 1]))
    return best


# The stack


@dataclasses.dataclass
class Stack:
    servers: dict[str, server.RunningServer]
    channel: grpc.aio.Channel
    gateway: gateway_pb2_grpc.GatewayServiceStub
    search_dir: Path


async def start_stack(tmp: Path, model: str, corpus: Path) -> Stack:
    """As tests/conftest.py does: each service's production build(), port 0."""
    base = {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 5.0}
    data, search_dir = tmp / "data", tmp / "search"
    servers: dict[str, server.RunningServer] = {}
    catalog_config = cfg.load(CatalogConfig, environ={}, data_dir=data, **base)
    servers["catalog"] = await server.start(await catalog_main.build(catalog_config), catalog_config)
    search_config = cfg.load(SearchConfig, environ={}, data_dir=search_dir, **base)
    servers["search"] = await server.start(await search_main.build(search_config), search_config)
    embedder_config = cfg.load(
        EmbedderConfig,
        environ={},
        data_dir=data,
        models=(model,),
        default_model=model,
        cnn14_download=False,
        **base,
    )
    servers["embedder"] = await server.start(await embedder_main.build(embedder_config), embedder_config)
    gateway_config = cfg.load(
        GatewayConfig,
        environ={},
        data_dir=data,
        embedder_addr=servers["embedder"].address,
        search_addr=servers["search"].address,
        catalog_addr=servers["catalog"].address,
        allowed_roots=(str(corpus.resolve()),),
        **base,
    )
    servers["gateway"] = await server.start(await gateway_main.build(gateway_config), gateway_config)
    options = [LOCAL_SUBCHANNELS, ("grpc.max_receive_message_length", 64 << 20)]
    channel = grpc.aio.insecure_channel(servers["gateway"].address, options=options)
    return Stack(servers, channel, gateway_pb2_grpc.GatewayServiceStub(channel), search_dir)


async def stop_stack(stack: Stack) -> None:
    await stack.channel.close()
    for name in ("gateway", "embedder", "search", "catalog"):
        await stack.servers[name].stop()


def du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def create_library(stack: Stack, model: str) -> pb.Library:
    for _ in range(120):  # the model may still be loading
        try:
            response = await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name=LIBRARY, model=model))
            return response.library
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(1.0)
    raise RuntimeError(f"model {model} did not become available")


async def index(stack: Stack, library: list[Track], workers: int) -> tuple[list[Track], list[str]]:
    """InsertAudioFromPath for each track; returns those in and the failures."""
    gate = asyncio.Semaphore(workers)
    failures: list[str] = []
    done = 0
    total_hours = sum(t.duration for t in library) / 3600
    began = time.monotonic()

    async def insert(track: Track) -> None:
        nonlocal done
        async with gate:
            try:
                response = await stack.gateway.InsertAudioFromPath(
                    pb.InsertAudioFromPathRequest(library=LIBRARY, path=str(track.path.resolve()), name=track.name),
                    timeout=RPC_TIMEOUT,
                )
                track.item_id = response.item.id
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{track.name}: {exc.code().name} {exc.details()}")
            done += 1
            if done % 20 == 0 or done == len(library):
                print(
                    f"  indexed {done}/{len(library)} tracks ({total_hours:.2f} h) in {time.monotonic() - began:.0f} s",
                    flush=True,
                )

    await asyncio.gather(*(insert(t) for t in library))
    return [t for t in library if t.item_id], failures


@dataclasses.dataclass
class Answer:
    query: Query
    duration: float
    seconds: float  # the RPC's wall time
    results: list  # [(item_id, score, evidence, item_start, query_start, speed, pitch)]
    min_score: float = 0.0
    min_evidence: float = 0.0
    error: str = ""
    raw: list | None = None  # the same query with min_score -1 (unthresholded)


def result_tuple(r: pb.SearchResult) -> tuple:
    return (
        r.item.id,
        round(r.score, 6),
        round(r.evidence, 6),
        round(r.item_range.start_seconds, 3),
        round(r.query_range.start_seconds, 3),
        round(r.speed, 6),
        round(r.pitch, 6),
    )


class Runner:
    """Renders queries in worker processes and sends them, `workers` at a time."""

    def __init__(self, stack: Stack, pool: concurrent.futures.Executor, workers: int) -> None:
        self.stack, self.pool, self.workers = stack, pool, workers
        self.thresholds: set[tuple[float, float]] = set()  # (min_score, min_evidence) the responses gave

    async def search(self, wav: bytes, min_score: float) -> tuple[pb.SearchAudioResponse, float]:
        params = pb.SearchParams(library=LIBRARY, top_k=TOP_K, min_score=min_score)
        began = time.perf_counter()
        response = await self.stack.gateway.SearchAudio(
            byte_messages(params, wav, lambda p, c: pb.SearchAudioRequest(params=p, chunk=c)), timeout=RPC_TIMEOUT
        )
        return response, time.perf_counter() - began

    async def ask(self, q: Query, raw: bool, wav: tuple[bytes, float] | None = None) -> Answer:
        loop = asyncio.get_running_loop()
        data, duration = wav or await loop.run_in_executor(self.pool, render, q)
        try:
            response, seconds = await self.search(data, 0.0)
        except grpc.aio.AioRpcError as exc:
            return Answer(q, duration, 0.0, [], error=f"{exc.code().name}: {exc.details()}")
        self.thresholds.add((round(response.min_score, 6), round(response.min_evidence, 6)))
        answer = Answer(
            q,
            duration,
            seconds,
            [result_tuple(r) for r in response.results],
            response.min_score,
            response.min_evidence,
        )
        if raw:
            with contextlib.suppress(grpc.aio.AioRpcError):
                unthresholded, _ = await self.search(data, -1.0)
                answer.raw = [result_tuple(r) for r in unthresholded.results]
        return answer

    async def run(self, queries: list[Query], raw: bool = False) -> list[Answer]:
        gate = asyncio.Semaphore(self.workers)

        async def one(q: Query) -> Answer:
            async with gate:
                return await self.ask(q, raw)

        return list(await asyncio.gather(*(one(q) for q in queries)))

    async def same_passage(self, answers: list[Answer], paths: dict[int, str]) -> set[int]:
        """Answers whose first result is not the source at the query's
        offset but holds the same passage there: a loop the track repeats,
        or a copy of the passage in another item."""
        loop = asyncio.get_running_loop()
        suspects = [i for i, a in enumerate(answers) if a.results and not exact(a) and a.results[0][0] in paths]
        similarity = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self.pool,
                    passage_similarity,
                    answers[i].query.path,
                    answers[i].query.start,
                    paths[answers[i].results[0][0]],
                    item_offset(answers[i].results[0]),
                    answers[i].query.source_seconds,
                )
                for i in suspects
            )
        )
        return {i for i, sim in zip(suspects, similarity, strict=True) if sim >= SAME_PASSAGE}

    async def run_sequential(self, queries: list[Query]) -> list[Answer]:
        """Rendered first, then sent one at a time: their RPC times are the latency."""
        loop = asyncio.get_running_loop()
        rendered = await asyncio.gather(*(loop.run_in_executor(self.pool, render, q) for q in queries))
        return [await self.ask(q, False, wav) for q, wav in zip(queries, rendered, strict=True)]


# Query sets


def copy_queries(library: list[Track], length: float, n: int, distortion: str, seed: int) -> list[Query]:
    """n seeded excerpts of indexed tracks; the same picks for every
    distortion of one length (longer tracks get proportionally more)."""
    longest = max(d.speed for d in COPIES.values())
    eligible = [t for t in library if t.duration >= length * longest + 1.0]
    rng = np.random.default_rng([seed, int(length * 10)])
    weights = np.array([t.duration for t in eligible])
    speed = COPIES[distortion].speed
    out = []
    for i in range(n):
        t = eligible[rng.choice(len(eligible), p=weights / weights.sum())]
        start = float(rng.uniform(0, t.duration - length * longest - 0.5))
        out.append(
            Query(
                "copy",
                length,
                distortion,
                seed=int(rng.integers(1 << 31)) + i,
                path=str(t.path),
                start=start,
                source_seconds=length * speed,  # the query lasts `length` s
                item_id=t.item_id,
            )
        )
    return out


def false_positive_queries(held: list[Track], length: float, n: int, seed: int) -> list[Query]:
    """n excerpts of held-out tracks (whole tracks when length is 0),
    spread over the tracks, the distortions taken in turn."""
    names = list(COPIES)
    rng = np.random.default_rng([seed, 7, int(length * 10)])
    if length == 0:
        return [
            Query("whole", 0.0, names[i % len(names)], seed=int(rng.integers(1 << 31)), path=str(t.path))
            for i, t in enumerate(held[:n])
        ]
    out = []
    for i in range(n):
        name = names[i % len(names)]
        need = length * COPIES[name].speed
        eligible = [t for t in held if t.duration >= need + 0.5]
        if not eligible:
            continue
        t = eligible[i % len(eligible)]
        out.append(
            Query(
                "fp",
                length,
                name,
                seed=int(rng.integers(1 << 31)),
                path=str(t.path),
                start=float(rng.uniform(0, t.duration - need)),
                source_seconds=need,
            )
        )
    return out


def negative_queries(lengths: tuple[float, ...], seed: int) -> list[Query]:
    return [
        Query("negative", length, "clean", seed=seed + i, negative=kind)
        for i, (kind, length) in enumerate((k, n) for n in lengths for k in NEGATIVE_KINDS)
    ]


# Measures


def quantiles(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.array(values)
    return {
        "n": len(values),
        "min": float(v.min()),
        "p01": float(np.quantile(v, 0.01)),
        "p05": float(np.quantile(v, 0.05)),
        "p10": float(np.quantile(v, 0.10)),
        "median": float(np.median(v)),
        "max": float(v.max()),
    }


def item_offset(result: tuple) -> float:
    """Where in the item the query's start lies, by the result's own
    mapping (item time = speed x query time + offset; speed 1 when the
    model gives none)."""
    _, _, _, item_start, query_start, speed, _ = result
    return item_start - (speed or 1.0) * query_start


def offset_error(a: Answer) -> float:
    return abs(item_offset(a.results[0]) - a.query.start)


def exact(a: Answer) -> bool:
    """The first result is the source item, at the query's offset."""
    return bool(a.results) and a.results[0][0] == a.query.item_id and offset_error(a) <= OFFSET_TOLERANCE


def copy_measures(answers: list[Answer], same: set[int], names: dict[int, str]) -> dict:
    """`same`: indices of answers whose first result holds the query's
    passage elsewhere (Runner.same_passage), counted as correct."""
    d = COPIES[answers[0].query.distortion]
    top1 = recall = any_item = 0
    offset_errors, scores, speed_err, pitch_err = [], [], [], []
    misses = []
    errors = [a.error for a in answers if a.error]
    for i, a in enumerate(answers):
        ids = [r[0] for r in a.results]
        if a.query.item_id in ids or i in same:
            recall += 1
        any_item += bool(ids) and ids[0] == a.query.item_id
        if not exact(a) and i not in same:
            best = a.results[0] if a.results else None
            misses.append(
                {
                    "query": f"{names.get(a.query.item_id)} @{a.query.start:.2f}s",
                    "first": None
                    if best is None
                    else f"{names.get(best[0], best[0])} @{item_offset(best):.2f}s score {best[1]:.4g}",
                    "error": a.error or None,
                }
            )
            continue
        top1 += 1
        best = a.results[0]
        if exact(a):
            offset_errors.append(offset_error(a))
        scores.append(best[1])
        if best[5]:
            speed_err.append(best[5] / d.speed - 1)
        if best[6]:
            pitch_err.append(best[6] / d.pitch - 1)
    n = len(answers)
    return {
        "queries": n,
        "top1": top1 / n,
        "recall@10": recall / n,
        "top1_item_any_offset": any_item / n,
        "true_speed": d.speed,
        "true_pitch": d.pitch,
        "offset_error_median_s": statistics.median(offset_errors) if offset_errors else None,
        "speed_estimates": len(speed_err),
        "speed_abs_error_median": statistics.median(abs(e) * d.speed for e in speed_err) if speed_err else None,
        "speed_within_1pct": sum(abs(e) <= SPEED_TOLERANCE for e in speed_err) / len(speed_err) if speed_err else None,
        "pitch_abs_error_median": statistics.median(abs(e) * d.pitch for e in pitch_err) if pitch_err else None,
        "pitch_within_1pct": sum(abs(e) <= SPEED_TOLERANCE for e in pitch_err) / len(pitch_err) if pitch_err else None,
        "correct_scores": quantiles(scores),
        "correct_elsewhere": len(same),  # the same passage at another offset or in another item
        "misses": misses[:10],
        "errors": errors[:5],
        "error_count": len(errors),
    }


def false_positive_measures(answers: list[Answer], names: dict[int, str]) -> dict:
    served = [a for a in answers if a.results]
    raw_top = [a.raw[0][1] for a in answers if a.raw]
    raw_evidence = [a.raw[0][2] for a in answers if a.raw]
    errors = [a.error for a in answers if a.error]
    return {
        "queries": len(answers),
        "with_results": len(served),
        "rate": len(served) / len(answers) if answers else None,
        "max_served_score": max((a.results[0][1] for a in served), default=None),
        "unthresholded_top_score": quantiles(raw_top),
        "unthresholded_top_evidence": quantiles(raw_evidence),
        "max_unthresholded_score": max(raw_top, default=None),
        "unthresholded_p99": float(np.quantile(raw_top, 0.99)) if raw_top else None,
        "max_unthresholded_evidence": max(raw_evidence, default=None),
        "served": [
            {
                "query": f"{Path(a.query.path).name} @{a.query.start:.1f}s {a.query.distortion}",
                "item": names.get(a.results[0][0], a.results[0][0]),
                "item_offset_s": round(item_offset(a.results[0]), 2),
                "score": a.results[0][1],
                "evidence": a.results[0][2],
            }
            for a in served[:10]
        ],
        "error_count": len(errors),
        "errors": errors[:5],
    }


def targets(report: dict, model_has_speed: bool) -> list[dict]:
    rows = []
    copies = report["copies"]
    for label, names, length, minimum in TOP1_TARGETS:
        per = copies.get(length, {})
        values = {n: per[n]["top1"] for n in names if n in per}
        if not values:
            continue
        worst = min(values.values())
        rows.append(
            {
                "measure": f"{length} top-1: {label}",
                "value": worst,
                "detail": ", ".join(f"{n} {v:.3f}" for n, v in values.items()),
                "target": f">= {minimum}",
                "pass": worst >= minimum,
            }
        )
    within = [
        (per["speed_within_1pct"], per["speed_estimates"])
        for per in copies.get("5s", {}).values()
        if per.get("speed_estimates")
    ]
    if model_has_speed and within:
        estimates = sum(n for _, n in within)
        share = sum(f * n for f, n in within) / estimates
        rows.append(
            {
                "measure": "estimated speed within ±1% of the truth (correct 5 s results)",
                "value": share,
                "detail": f"{estimates} estimates",
                "target": ">= 0.95 of them (this eval's reading)",
                "pass": share >= 0.95,
            }
        )
    else:
        rows.append(
            {
                "measure": "estimated speed within ±1% of the truth",
                "value": None,
                "detail": "the model reports no speed",
                "target": ">= 0.95 of correct results",
                "pass": False,
            }
        )
    fp = report["false_positives"]
    worst = max((v["rate"] for v in fp.values() if v["rate"] is not None), default=None)
    rows.append(
        {
            "measure": "false positives, held-out excerpts and whole tracks",
            "value": worst,
            "detail": ", ".join(f"{k} {v['rate']:.3f}" for k, v in fp.items() if v["rate"] is not None)
            + "".join(f"; {v['error_count']} {k} queries failed" for k, v in fp.items() if v["error_count"]),
            "target": f"<= {MAX_FALSE_POSITIVE_RATE} at every length",
            "pass": worst is not None and worst <= MAX_FALSE_POSITIVE_RATE,
        }
    )
    neg = report["negatives"]
    rows.append(
        {
            "measure": "negatives (noise, tones, sweep, silence, clicks) with a result",
            "value": neg["with_results"],
            "detail": f"of {neg['queries']}",
            "target": "0",
            "pass": neg["with_results"] == 0,
        }
    )
    store = report["store"]
    rows.append(
        {
            "measure": "vector store MB per hour indexed",
            "value": store["mb_per_hour"],
            "detail": f"{store['mb']:.1f} MB for {store['hours']:.2f} h",
            "target": f"<= {MAX_STORE_MB_PER_HOUR}",
            "pass": store["mb_per_hour"] <= MAX_STORE_MB_PER_HOUR,
        }
    )
    t = report["query_time"]
    rows.append(
        {
            "measure": "median query time, 5 s query (s)",
            "value": t["median_s"],
            "detail": f"p90 {fmt(t['p90_s'])} s over {t['queries']} queries sent one at a time",
            "target": "reported",
            "pass": None,
        }
    )
    return rows


def fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(results: dict) -> str:
    m = results["meta"]
    lines = [
        f"# Copy detection through the product: {m['model']} ({m['date']}, commit {m['commit']})",
        "",
        f"{'Quick run. ' if m['quick'] else ''}Library {m['library_tracks']} tracks, {m['library_hours']:.2f} h; "
        f"held out {m['held_out_tracks']} tracks, {m['held_out_hours']:.2f} h (never indexed). Seed {m['seed']}; "
        f"{m['workers']} client(s) at a time; indexed in {m['index_seconds']:.0f} s; whole run {m['seconds']:.0f} s. "
        "Every query is a WAV upload to SearchAudio with min_score 0 (the model's own decision); top-1 means the "
        f"first result is the source item at the right offset (within {OFFSET_TOLERANCE:.0f} s).",
        "",
        "## Targets",
        "",
        "| measure | value | target | pass | detail |",
        "|---|---|---|---|---|",
    ]
    for row in results["targets"]:
        verdict = {True: "yes", False: "**no**", None: "-"}[row["pass"]]
        lines.append(f"| {row['measure']} | {fmt(row['value'])} | {row['target']} | {verdict} | {row['detail']} |")
    for length, per in results["copies"].items():
        n = next(iter(per.values()))["queries"]
        lines += [
            "",
            f"## {length} queries ({n} per distortion)",
            "",
            "| distortion | speed | pitch | top-1 | recall@10 | source first (any offset) | same passage elsewhere "
            "| median offset error (s) | speed error (median) | speed within 1% | pitch within 1% "
            "| correct score p05 / median |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, d in per.items():
            sc = d["correct_scores"]
            score = "-" if sc is None else f"{sc['p05']:.3f} / {sc['median']:.3f}"
            lines.append(
                f"| {name} | {d['true_speed']:.4g} | {d['true_pitch']:.4g} | {d['top1']:.3f} | {d['recall@10']:.3f} | "
                f"{d['top1_item_any_offset']:.3f} | {d['correct_elsewhere']} | {fmt(d['offset_error_median_s'])} | "
                f"{fmt(d['speed_abs_error_median'], 4)} | {fmt(d['speed_within_1pct'])} | "
                f"{fmt(d['pitch_within_1pct'])} | {score} |"
            )
    lines += [
        "",
        "## False positives (held-out recordings; distortions in turn)",
        "",
        "| length | queries | with a result | rate | max served score | unthresholded top score p99 / max "
        "| unthresholded top evidence max |",
        "|---|---|---|---|---|---|---|",
    ]
    for length, f in results["false_positives"].items():
        raw = f["unthresholded_top_score"]
        raw_text = "-" if raw is None else f"{f['unthresholded_p99']:.3f} / {raw['max']:.3f}"
        lines.append(
            f"| {length} | {f['queries']} | {f['with_results']} | {fmt(f['rate'])} | {fmt(f['max_served_score'])} | "
            f"{raw_text} | {fmt(f['max_unthresholded_evidence'])} |"
        )
    neg = results["negatives"]
    lines += [
        "",
        f"## Negatives: {neg['with_results']} of {neg['queries']} got a result",
        "",
        "| signal | " + " | ".join(f"{x:.0f} s" for x in NEGATIVE_LENGTHS) + " |",
        "|---|" + "---|" * len(NEGATIVE_LENGTHS),
    ]
    for kind in NEGATIVE_KINDS:
        cells = []
        for length in NEGATIVE_LENGTHS:
            entry = neg["by_signal"].get(f"{kind}_{length:.0f}s")
            cells.append("-" if entry is None else entry)
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    s, t = results["store"], results["query_time"]
    lines += [
        "",
        f"Vector store: {s['mb']:.1f} MB for {s['hours']:.2f} h indexed = **{s['mb_per_hour']:.2f} MB per hour** "
        f"({s['vectors']} vectors). Query time of a 5 s query (one at a time): median {fmt(t['median_s'])} s, "
        f"p90 {fmt(t['p90_s'])} s; with {m['workers']} at a time: median {fmt(t['concurrent_median_s'])} s. "
        f"Indexing ran at {m['index_realtime']:.0f}x real time.",
    ]
    if m["index_failures"]:
        lines += ["", f"Tracks that failed to index: {m['index_failures']}"]
    lines += ["", f"Held out: {', '.join(m['held_out'])}", ""]
    return "\n".join(lines) + "\n"


async def measure_copies(runner: Runner, library: list[Track], names: list[str], args: argparse.Namespace) -> dict:
    """Top-1 and recall@10 per distortion and length; the clean 5 s queries
    go first, one at a time: their RPC times are the latency figures."""
    lengths = {5.0: names}
    for extra in (float(x) for x in args.extra_lengths.split(",") if x):
        lengths[extra] = [n for n in names if n in KEY_DISTORTIONS]
    out: dict = {"copies": {}, "latency": [], "concurrent": []}
    names_by_id = {t.item_id: t.name for t in library}
    paths = {t.item_id: str(t.path) for t in library}
    for length, chosen in lengths.items():
        key = f"{length:.0f}s"
        per: dict = {}
        for name in chosen:
            queries = copy_queries(library, length, args.queries, name, args.seed)
            t = time.monotonic()
            if length == 5.0 and name == "clean":
                answers = await runner.run_sequential(queries)
                out["latency"] = [a.seconds for a in answers if not a.error]
            else:
                answers = await runner.run(queries)
                if length == 5.0:
                    out["concurrent"] += [a.seconds for a in answers if not a.error]
            d = per[name] = copy_measures(answers, await runner.same_passage(answers, paths), names_by_id)
            speed = "" if d["speed_within_1pct"] is None else f" speed±1% {d['speed_within_1pct']:.2f}"
            errors = f" {d['error_count']} errors" if d["error_count"] else ""
            print(
                f"  {key} {name:26s} top1 {d['top1']:.3f} r@10 {d['recall@10']:.3f}{speed}{errors} "
                f"({time.monotonic() - t:.0f} s)",
                flush=True,
            )
        out["copies"][key] = per
    return out


async def measure_false_positives(
    runner: Runner, held: list[Track], names: dict[int, str], args: argparse.Namespace
) -> dict:
    """Held-out excerpts of each length, then whole held-out tracks."""
    counts = {3.0: args.fp_queries, 5.0: args.fp_queries, 10.0: args.fp_queries}
    counts |= {30.0: args.fp_queries_30, 60.0: args.fp_queries_60, 300.0: args.fp_queries_300}
    out = {}
    for length in (*FP_LENGTHS, 0.0):
        n = counts[length] if length else (args.whole_tracks or len(held))
        queries = false_positive_queries(held, length, n, args.seed)
        if not queries:
            continue
        key = f"{length:.0f}s" if length else "whole tracks"
        t = time.monotonic()
        # The unthresholded second query for every short one, for the first few long ones.
        k = 0 if args.no_raw else len(queries) if 0 < length <= 10 else args.raw_long
        answers = await runner.run(queries[:k], raw=True) + await runner.run(queries[k:])
        f = out[key] = false_positive_measures(answers, names)
        errors = f" {f['error_count']} errors" if f["error_count"] else ""
        print(
            f"  false positives {key}: {f['with_results']}/{f['queries']} with a result{errors} "
            f"(unthresholded top score max {fmt(f['max_unthresholded_score'])}) ({time.monotonic() - t:.0f} s)",
            flush=True,
        )
    return out


async def measure_negatives(runner: Runner, args: argparse.Namespace) -> dict:
    """Noise, tones, a sweep, silence and clicks: each must get nothing."""
    t = time.monotonic()
    queries = negative_queries(args.negative_lengths, args.seed)
    # The unthresholded second query only up to 60 s: a 600 s one costs as much as an hour of 5 s queries.
    answers = await runner.run([q for q in queries if q.length <= 60], raw=not args.no_raw)
    answers += await runner.run([q for q in queries if q.length > 60])
    by_signal = {}
    for a in answers:
        label = f"{len(a.results)} results" if a.results else "none"
        if a.error:
            label = "error " + a.error.split(":")[0]
        by_signal[f"{a.query.negative}_{a.query.length:.0f}s"] = label
    out = {
        "queries": len(answers),
        "with_results": sum(bool(a.results) for a in answers),
        "errors": sum(bool(a.error) for a in answers),
        "by_signal": by_signal,
        "max_served_score": max((a.results[0][1] for a in answers if a.results), default=None),
        "max_unthresholded_score": max((a.raw[0][1] for a in answers if a.raw), default=None),
    }
    print(f"  negatives: {out['with_results']}/{len(answers)} with a result ({time.monotonic() - t:.0f} s)", flush=True)
    return out


async def evaluate(args: argparse.Namespace, tmp: Path) -> dict:
    began = time.monotonic()
    corpus = Path(args.corpus)
    tracks = load_tracks(corpus)
    if not tracks:
        raise SystemExit(f"no soundtracks under {corpus}: run `make eval` (or bash eval/fetch_corpus.sh {corpus})")
    library, held = split(tracks, args.held_out_hours, args.library_hours, args.seed)
    print(
        f"{len(tracks)} soundtracks, {sum(t.duration for t in tracks) / 3600:.2f} h: "
        f"{len(library)} to index ({sum(t.duration for t in library) / 3600:.2f} h), "
        f"{len(held)} held out ({sum(t.duration for t in held) / 3600:.2f} h)",
        flush=True,
    )
    names = [n for n in args.distortions.split(",") if n]
    unknown = set(names) - set(COPIES)
    if unknown:
        raise SystemExit(f"unknown distortions {sorted(unknown)}; known: {', '.join(COPIES)}")
    # Spawned, not forked: the stack runs gRPC threads in this process.
    pool = concurrent.futures.ProcessPoolExecutor(args.render_workers, mp_context=multiprocessing.get_context("spawn"))
    stack = await start_stack(tmp, args.model, corpus)
    phases: dict[str, float] = {}
    try:
        lib = await create_library(stack, args.model)
        t = time.monotonic()
        library, failures = await index(stack, library, args.workers)
        phases["index"] = time.monotonic() - t
        hours = sum(x.duration for x in library) / 3600
        print(f"{args.model}: {hours:.2f} h indexed in {phases['index']:.0f} s", flush=True)
        runner = Runner(stack, pool, args.workers)
        # The search service seals what was written once writes pause (FLUSH_AFTER, 1 s); searches
        # before that (or while Milvus Lite indexes the sealed data) are much slower. Warm up until
        # a query gets through.
        await asyncio.sleep(3.0)
        for _ in range(10):
            (warm,) = await runner.run(copy_queries(library, 5.0, 1, "clean", args.seed + 1))
            if not warm.error:
                break
            print(f"  warming up: {warm.error[:80]}", flush=True)
        t = time.monotonic()
        copies = await measure_copies(runner, library, names, args)
        phases["copies"] = time.monotonic() - t
        t = time.monotonic()
        false_positives = await measure_false_positives(runner, held, {t.item_id: t.name for t in library}, args)
        phases["false_positives"] = time.monotonic() - t
        t = time.monotonic()
        negatives = await measure_negatives(runner, args)
        phases["negatives"] = time.monotonic() - t
        stats = await stack.gateway.Stats(pb.StatsRequest())
        vectors = next((s.vectors for s in stats.libraries if s.name == LIBRARY), 0)
    finally:
        pool.shutdown(cancel_futures=True)
        await stop_stack(stack)  # the search service flushes as it closes
    size = du_bytes(stack.search_dir)
    latency, concurrent_times = copies["latency"], copies["concurrent"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout  # noqa: S607
    report = {
        "meta": {
            "model": args.model,
            "library": {"model": lib.model, "dim": lib.dim, "window_s": lib.window_seconds, "hop_s": lib.hop_seconds},
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": commit.strip() or "unknown",
            "seed": args.seed,
            "quick": args.quick,
            "workers": args.workers,
            "library_tracks": len(library),
            "library_hours": hours,
            "held_out_tracks": len(held),
            "held_out_hours": sum(t.duration for t in held) / 3600,
            "held_out": [t.name for t in held],
            "index_seconds": phases["index"],
            "index_realtime": hours * 3600 / phases["index"],
            "index_failures": failures,
            "phase_seconds": phases,
            "seconds": time.monotonic() - began,
            "args": {k: v for k, v in vars(args).items() if k != "negative_lengths"},
        },
        "thresholds_applied": [{"min_score": a, "min_evidence": b} for a, b in sorted(runner.thresholds)],
        "copies": copies["copies"],
        "false_positives": false_positives,
        "negatives": negatives,
        "store": {
            "bytes": size,
            "mb": size / 1e6,
            "hours": hours,
            "mb_per_hour": size / 1e6 / hours,
            "vectors": vectors,
        },
        "query_time": {
            "queries": len(latency),
            "median_s": statistics.median(latency) if latency else None,
            "p90_s": float(np.quantile(latency, 0.9)) if latency else None,
            "concurrent_median_s": statistics.median(concurrent_times) if concurrent_times else None,
            "concurrent_p90_s": float(np.quantile(concurrent_times, 0.9)) if concurrent_times else None,
        },
    }
    has_speed = any(d.get("speed_estimates") for per in report["copies"].values() for d in per.values())
    report["targets"] = targets(report, has_speed)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="eval/.cache/corpus")
    parser.add_argument("--model", default="fingerprint-v1")
    parser.add_argument("--out", default="eval/results")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quick", action="store_true", help="a 1 h library and 10 queries per distortion")
    parser.add_argument("--queries", type=int, help="per distortion and length (40; --quick 10)")
    parser.add_argument("--fp-queries", type=int, help="held-out excerpts of 3, 5 and 10 s, each (100; --quick 20)")
    parser.add_argument("--fp-queries-30", type=int, help="of 30 s (40; --quick 6)")
    parser.add_argument("--fp-queries-60", type=int, help="of 60 s (20; --quick 3)")
    parser.add_argument("--fp-queries-300", type=int, help="of 300 s (6; --quick 1)")
    parser.add_argument("--whole-tracks", type=int, help="whole held-out tracks queried (all; --quick 2)")
    parser.add_argument("--held-out-hours", type=float, help="(1.0; --quick 0.5)")
    parser.add_argument("--library-hours", type=float, help="0: every track not held out (0; --quick 1.0)")
    parser.add_argument("--distortions", default=",".join(COPIES), help="a comma-separated subset of COPIES")
    parser.add_argument("--extra-lengths", default="3,10", help=f"query lengths for {', '.join(KEY_DISTORTIONS)}")
    parser.add_argument("--negative-lengths", help="seconds (5,60,600; --quick 5,60)")
    parser.add_argument("--no-raw", action="store_true", help="skip the unthresholded second queries")
    parser.add_argument("--raw-long", type=int, default=10, help="false positives of 30 s and more sent unthresholded")
    parser.add_argument("--workers", type=int, default=2, help="queries in flight at once")
    parser.add_argument("--render-workers", type=int, default=1, help="processes that cut and distort queries")
    args = parser.parse_args()
    full = {"queries": 40, "fp_queries": 100, "fp_queries_30": 40, "fp_queries_60": 20, "fp_queries_300": 6}
    full |= {"whole_tracks": 0, "held_out_hours": 1.0, "library_hours": 0.0, "negative_lengths": "5,60,600"}
    quick = {"queries": 10, "fp_queries": 20, "fp_queries_30": 6, "fp_queries_60": 3, "fp_queries_300": 1}
    quick |= {"whole_tracks": 2, "held_out_hours": 0.5, "library_hours": 1.0, "negative_lengths": "5,60"}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.negative_lengths = tuple(float(x) for x in args.negative_lengths.split(",") if x)
    results = run(evaluate, args)
    report(results, Path(args.out), f"copies-{args.model}{'-quick' if args.quick else ''}", markdown)
    return 0


def run(evaluate: Callable[[argparse.Namespace, Path], Awaitable[dict]], args: argparse.Namespace) -> dict:
    """`evaluate(args, a temporary folder)`, with the services' logs quiet."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Milvus Lite's in-process server answers pymilvus' AllocTimestamp with UNIMPLEMENTED and logs it.
    logging.getLogger("grpc._server").addFilter(lambda r: "Method not implemented" not in r.getMessage())
    with tempfile.TemporaryDirectory(prefix="audiosearch-eval-") as tmp:
        return asyncio.run(evaluate(args, Path(tmp)))


def report(results: dict, out: Path, stem: str, markdown: Callable[[dict], str]) -> None:
    """Writes `out/stem`.json and .md, and prints the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out / stem}.json and .md in {results['meta']['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
