"""The landmark fingerprint's cost curve (`make bench`, `make bench-fingerprint`):
what searching a fingerprint-v2 library costs at 1, 10 and 100 hours of
indexed audio, each figure against a brute-force in-memory inverted index
answering the same queries on the same data in the same run.

    python bench/fingerprint_scale.py OUT.json [--hours 1,10,100] [--milvus-up-to 10]
        [--queries 50] [--source DIR]

`make bench` (and `make bench-fingerprint`) runs --hours 1,10,100
--milvus-up-to 10 --queries 20: Milvus Lite at 1 h and 10 h, the 100 h
level on the brute-force index alone, since Milvus Lite's memory and search
time grow about linearly with the library (its sparse index is Python: at
10 h about 1.2 GB and 10 s a query here, so 100 h would need over 10 GB and
hours). About 15 minutes on 2 CPUs, plus 4 to decode the corpus once.

The library. Real music, decoded with soundfile, mono, resampled to the
model's rate (services.embedder.audio.resample; cached once decoded under
bench/.cache/fingerprint-audio): the eval corpus's soundtracks
(eval/.cache/corpus, as eval/copies.py lists them), else the sonic-pi
samples (`make samples`), else /tmp/music/x (a development fallback only).
A few tracks (whole families of variants) are held out, never indexed. The
rest, seeded-shuffled, are indexed as they are first, then in further
passes as transformed copies that fingerprint as distinct content: time
reversed, resampled by 3 or more semitones up or down (2**(k/12), beyond
every speed and pitch hypothesis of the model's queries), mixed with another track (itself
reversed every other pass), and combinations (reversed and shifted), until
the library holds the hours asked for. The levels are prefixes of one
seeded sequence, so 10 h holds the 1 h library and 100 h the 10 h one.
Every item is fingerprinted for real (FingerprintV2Model.embed_signal, one
process per CPU); none reuses another's vectors.

Each level's items go into a real Milvus Lite collection through the
search service's MilvusStore (upsert 1000 segments at a time, then flush);
the same segment vectors go to the baseline, a separate process holding
every landmark in flat numpy arrays sorted by hash.

The queries, the same at every level: 5 s excerpts, half of them clean
excerpts of recordings indexed at the smallest level (the hit path; top-1
is the source item with confidence >= the model's min_confidence at the
right offset), half of held-out recordings and of noise (the miss path; a
result there is a false positive). Each is timed over the whole path the
gateway runs: embed -> search (top_k per query vector) -> candidates ->
fetch those items' hit windows -> decide (services/gateway/landmarks.py),
first against Milvus (MilvusStore.search / .get), then against the
baseline (the same embed, candidates and decide, its own search and fetch).

Measured per level: index MiB (du of the Milvus Lite directory after the
flush; the baseline: its arrays' bytes), MiB per hour, p50/p99 latency,
top-1 of the in-library queries, the false-positive rate of the others,
peak RSS (VmHWM) of this process (Milvus Lite runs in it) and of the
baseline's, and what the build took. The key target: p50 at the largest
level / p50 at the smallest (<= 2 at 100 h / 1 h); no threshold is
enforced here."""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, ROOT, figure, merge_results, peak_rss_mib
from services.common.vectors import Sparse
from services.embedder.audio import resample
from services.embedder.models.fingerprint_v2 import FingerprintV2Model, hypotheses
from services.gateway import landmarks
from services.search.contract import Store, WindowVector
from services.search.milvus import MilvusStore

MODEL = FingerprintV2Model()
INFO = MODEL.info
RATE = INFO.sample_rate
KEY = INFO.name.replace("-", "_")
LIBRARY = "fingerprint-scale"
SOURCES = (ROOT / "eval" / ".cache" / "corpus", ROOT / "samples" / "sonic-pi", Path("/tmp/music/x"))
AUDIO = {".flac", ".wav", ".ogg", ".opus", ".mp3"}
AUDIO_CACHE = CACHE / "fingerprint-audio"
QUERY_SECONDS = 5.0
UPSERT_BATCH = 1000
HELD_OUT_SHARE, HELD_OUT_MAX_SECONDS = 0.05, 1800.0
T = TypeVar("T")


def min_shift() -> int:
    """The smallest resampling, in semitones and at least 3, beyond every
    (speed, pitch) hypothesis the model queries with, with twice the slope
    decide() searches around one as a margin (its least-squares refit goes
    a little further: 3 semitones, 0.84 against a widest hypothesis of
    0.85, was still found as a copy): a copy shifted this far is new
    content to the fingerprint, not a copy it would find."""
    widest = max(max(h.speed, 1 / h.speed, h.pitch, 1 / h.pitch) for h in hypotheses())
    widest *= 1 + 2 * landmarks.SLOPE_SPAN
    k = 3
    while 2 ** (k / 12) <= widest:
        k += 1
    return k


MIN_SHIFT = min_shift()


# The real recordings


@dataclasses.dataclass(frozen=True)
class Track:
    path: str
    name: str
    family: str  # variants of one piece (a remaster, an -old) share it
    duration: float


def list_tracks(source: Path) -> list[Track]:
    """The eval corpus's soundtracks as eval/copies.py lists them, else
    every audio file of at least 1 s under `source`. Runs in a worker, so
    the eval's imports stay out of the measured process."""
    if (source / "music").is_dir():
        from eval.copies import load_tracks

        return [Track(str(t.path), t.name, t.family, t.duration) for t in load_tracks(source)]
    out = []
    for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO):
        try:
            duration = sf.info(str(path)).duration
        except RuntimeError:
            continue
        if duration >= 1.0:
            out.append(Track(str(path), str(path.relative_to(source)), path.stem.lower(), float(duration)))
    return out


def gateway_defaults() -> tuple[int, int]:
    """The gateway's hits per query vector and candidates decided on (read
    in a worker: the gateway's imports stay out of the measured process)."""
    from services.gateway import ranking

    return ranking.LANDMARK_HITS, ranking.LANDMARK_CANDIDATES


def pick_source(explicit: Path | None) -> Path:
    for candidate in [explicit] if explicit else SOURCES:
        if candidate and candidate.is_dir() and any(p.suffix.lower() in AUDIO for p in candidate.rglob("*")):
            return candidate
    raise SystemExit(f"no audio under {explicit or ', '.join(map(str, SOURCES))}: run `make samples`")


def split(tracks: list[Track], seed: int) -> tuple[list[Track], list[Track]]:
    """(library, held out): whole families, seeded; held out until 5% of
    the music or 30 minutes, whichever is less."""
    families: dict[str, list[Track]] = {}
    for t in tracks:
        families.setdefault(t.family, []).append(t)
    order = sorted(families)
    np.random.default_rng(seed).shuffle(order)
    budget = min(HELD_OUT_SHARE * sum(t.duration for t in tracks), HELD_OUT_MAX_SECONDS)
    library: list[Track] = []
    held: list[Track] = []
    for name in order:
        if len(order) > 1 and sum(t.duration for t in held) < budget:
            held += families[name]
        else:
            library += families[name]
    return library, held


@functools.cache
def cache_path(path: str) -> Path:
    """Keyed by the file's content: a corpus fetched again is still cached."""
    with open(path, "rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    return AUDIO_CACHE / f"{digest[:32]}-{RATE}.npy"


def decode(path: str) -> float:
    """Decodes `path` once into the cache (mono, the model's rate); returns
    the seconds it took, -1 when it was cached."""
    out = cache_path(path)
    if out.exists():
        return -1.0
    began = time.perf_counter()
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = resample(samples.mean(axis=1), rate, RATE).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.part.npy")
    np.save(tmp, audio)
    tmp.rename(out)
    return time.perf_counter() - began


def load(path: str) -> np.ndarray:
    decode(path)
    return np.load(cache_path(path), mmap_mode="r")


# The library: real recordings, then transformed copies


@dataclasses.dataclass(frozen=True)
class Part:
    track: Track
    reverse: bool = False
    semitones: int = 0  # resampled: 2**(k/12) times faster and higher

    def describe(self) -> str:
        what = [self.track.name]
        if self.semitones:
            what.append(f"{self.semitones:+d} st")
        if self.reverse:
            what.append("reversed")
        return " ".join(what)

    def duration(self) -> float:
        return self.track.duration * RATE / shifted_rate(self.semitones)


@dataclasses.dataclass(frozen=True)
class Variant:
    kind: str  # original, reversed, shifted, reversed+shifted, mix
    first: Part
    second: Part | None = None  # mixed in

    def describe(self) -> str:
        return self.first.describe() + (f" + {self.second.describe()}" if self.second else "")

    def duration(self) -> float:
        return min(self.first.duration(), self.second.duration()) if self.second else self.first.duration()


def shifted_rate(semitones: int) -> int:
    return round(RATE * 2 ** (semitones / 12))


def passes() -> Iterator[tuple[str, bool, int, int]]:
    """(kind, reverse, semitones, mix partner distance) of each pass over
    the library's tracks: as they are, reversed, then shifted by MIN_SHIFT,
    -MIN_SHIFT, MIN_SHIFT + 1, ... up to 12 semitones, each forward and
    reversed; then, only once those run out (a small source), mixes with
    ever further partners. A mix holds its first recording at 0 dB SNR,
    which the fingerprint is built to find: the queries' sources get a
    second true match, and their hashes longer posting lists (more search
    work, not less)."""
    yield "original", False, 0, 0
    yield "reversed", True, 0, 0
    for n in range(MIN_SHIFT, 13):
        for k in (n, -n):
            yield "shifted", False, k, 0
            yield "reversed+shifted", True, k, 0
    for m in itertools.count(1):
        yield "mix", False, 0, m


def variants(library: list[Track]) -> Iterator[Variant]:
    n = len(library)
    for kind, reverse, semitones, mix in passes():
        for i, track in enumerate(library):
            if mix:
                if n < 2:
                    continue
                partner = library[(i + 1 + (mix - 1) % (n - 1)) % n]  # never the track itself
                yield Variant(kind, Part(track), Part(partner, reverse=mix % 2 == 1))
            else:
                yield Variant(kind, Part(track, reverse, semitones))


def plan(library: list[Track], levels: Sequence[float]) -> tuple[list[Variant], list[int]]:
    """The variants, in order, and how many of them each level (hours) holds."""
    out: list[Variant] = []
    ends: list[int] = []
    total = 0.0
    generator = variants(library)
    for hours in levels:
        while total < hours * 3600:
            v = next(generator)
            out.append(v)
            total += v.duration()
        ends.append(len(out))
    return out, ends


def render_part(part: Part) -> np.ndarray:
    audio = np.asarray(load(part.track.path), dtype=np.float32)
    if part.semitones:
        # Read at a higher (lower) rate, played at the model's: faster and higher.
        audio = resample(audio, shifted_rate(part.semitones), RATE)
    if part.reverse:
        audio = audio[::-1]
    return np.ascontiguousarray(audio, dtype=np.float32)


def render(variant: Variant) -> np.ndarray:
    audio = render_part(variant.first)
    if variant.second is None:
        return audio
    other = render_part(variant.second)
    n = min(len(audio), len(other))

    def level(x: np.ndarray) -> np.ndarray:
        return x[:n] / max(float(np.sqrt(np.mean(np.square(x[:n], dtype=np.float64)))), 1e-6)

    mixed = level(audio) + level(other)  # equal loudness
    return (mixed * (0.9 / max(float(np.max(np.abs(mixed))), 1e-6))).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Segments:
    """An item's fingerprint as CSR arrays (cheap to pass between processes)."""

    duration: float
    offsets: np.ndarray  # float64, per segment
    indptr: np.ndarray  # int64, len(offsets) + 1
    indices: np.ndarray  # uint32
    values: np.ndarray  # float32
    cpu_seconds: float

    def vector(self, k: int) -> Sparse:
        a, b = self.indptr[k], self.indptr[k + 1]
        return Sparse(self.indices[a:b], self.values[a:b])


def fingerprint(variant: Variant) -> Segments:
    """Renders and fingerprints one item (in a worker process)."""
    began = time.process_time()
    audio = render(variant)
    embeddings, offsets = MODEL.embed_signal(audio, INFO.window_seconds, INFO.hop_seconds)
    vectors = embeddings.vectors
    lengths = np.array([len(v.indices) for v in vectors], dtype=np.int64)
    return Segments(
        len(audio) / RATE,
        np.asarray(offsets, dtype=np.float64),
        np.concatenate([[0], np.cumsum(lengths)]),
        np.concatenate([v.indices for v in vectors]).astype(np.uint32),
        np.concatenate([v.values for v in vectors]).astype(np.float32),
        time.process_time() - began,
    )


def model_speed(track: Track, seconds: float = 180.0) -> float:
    """Seconds of audio fingerprinted per CPU second, on `seconds` of a real track."""
    audio = np.asarray(load(track.path), dtype=np.float32)
    audio = np.tile(audio, int(np.ceil(seconds * RATE / max(len(audio), 1))))[: int(seconds * RATE)]
    MODEL.embed_signal(audio[: 10 * RATE], INFO.window_seconds, INFO.hop_seconds)  # warm-up
    began = time.process_time()
    MODEL.embed_signal(audio, INFO.window_seconds, INFO.hop_seconds)
    return seconds / max(time.process_time() - began, 1e-9)


def bounded(pool: concurrent.futures.Executor, fn: Callable[..., T], items: Iterable, depth: int) -> Iterator[T]:
    """pool.map in order, with at most `depth` results in flight, so that
    finished fingerprints never pile up in this (measured) process."""
    todo = iter(items)
    pending = collections.deque(pool.submit(fn, item) for item in itertools.islice(todo, depth))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(todo, 1):
            pending.append(pool.submit(fn, item))
        yield result


# The queries


@dataclasses.dataclass(frozen=True)
class Query:
    kind: str  # "hit" (an indexed recording, clean), "held-out", "noise"
    what: str
    audio: np.ndarray
    item_id: int = 0  # the expected item (hits)
    start: float = 0.0  # in it (s)


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    if kind == "white":
        y = rng.standard_normal(n)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        spectrum[0] = 0
        y = np.fft.irfft(spectrum, n)
    elif kind == "tones":  # a "melody" of pure tones, 0.25-1 s each
        y = np.zeros(n)
        at = 0
        while at < n:
            span = min(int(rng.uniform(0.25, 1.0) * RATE), n - at)
            y[at : at + span] = np.sin(2 * np.pi * 110 * 2 ** (rng.integers(0, 40) / 12) * np.arange(span) / RATE)
            at += span
    elif kind == "sweep":  # logarithmic, 50 Hz to 3.5 kHz
        k = np.log(3500 / 50) / (n / RATE)
        y = np.sin(2 * np.pi * 50 * (np.exp(k * t) - 1) / k)
    else:  # clicks, 4 a second
        y = np.zeros(n)
        y[:: RATE // 4] = 1.0
    return (0.5 * y / (np.max(np.abs(y)) or 1.0)).astype(np.float32)


def excerpt(track: Track, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    audio = load(track.path)
    n = int(QUERY_SECONDS * RATE)
    start = int(rng.integers(0, max(1, len(audio) - n - RATE))) if len(audio) > n + RATE else 0
    return np.array(audio[start : start + n], dtype=np.float32), start / RATE


def make_queries(indexed: list[tuple[int, Track]], held: list[Track], count: int, seed: int) -> list[Query]:
    """`count` 5 s queries: half clean excerpts of `indexed` (item id,
    recording), half misses, four in five of them excerpts of held-out
    recordings and the rest noise."""
    rng = np.random.default_rng(seed)
    n_hits = count // 2
    hits = []
    for i in rng.choice(len(indexed), size=n_hits, replace=n_hits > len(indexed)):
        item_id, track = indexed[int(i)]
        audio, start = excerpt(track, rng)
        hits.append(Query("hit", track.name, audio, item_id, start))
    n_misses = count - n_hits
    n_held = round(0.8 * n_misses) if held else 0
    misses = []
    for _ in range(n_held):
        track = held[int(rng.integers(len(held)))]
        audio, start = excerpt(track, rng)
        misses.append(Query("held-out", track.name, audio, 0, start))
    kinds = ("white", "pink", "tones", "sweep", "clicks")
    for j in range(n_misses - n_held):
        kind = kinds[j % len(kinds)]
        misses.append(Query("noise", kind, noise(kind, int(QUERY_SECONDS * RATE), rng)))
    order = rng.permutation(len(misses))
    # Alternately a hit and a miss: the warm-up and any prefix see both paths.
    out = [q for pair in itertools.zip_longest(hits, [misses[i] for i in order]) for q in pair if q is not None]
    return out


# The search path, the same for Milvus and the baseline

Hits = list[list[tuple[int, int, float]]]
# The gateway fetches the candidates' windows concurrently (asyncio.gather).
FETCHERS = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="fetch")


@dataclasses.dataclass(frozen=True)
class Answer:
    seconds: float
    stages: tuple[float, float, float, float]  # embed, search + candidates, fetch, decide
    item_id: int
    confidence: float
    offset: float
    landmarks: int
    windows: int  # fetched
    others: int  # results other than the best with confidence >= the model's min_confidence


def answer(
    audio: np.ndarray,
    search: Callable[[list[Sparse], int], Hits],
    fetch: Callable[[int, list[int]], list[tuple[float, Sparse]]],
    library_seconds: float,
    top_k: int,
    limit: int,
) -> Answer:
    """The gateway's landmark search (services/gateway/ranking.py: rank_landmarks):
    embed -> search -> candidates -> fetch the candidates' hit windows, all
    at once -> decide on the hypotheses the candidates were chosen for."""
    t0 = time.perf_counter()
    embeddings, offsets = MODEL.embed_signal(audio, INFO.window_seconds, INFO.hop_seconds, query=True)
    assert embeddings.hypotheses is not None
    t1 = time.perf_counter()
    decide_only = embeddings.decide_only or [False] * len(offsets)
    searched = [k for k, only in enumerate(decide_only) if not only]
    chosen = landmarks.candidates(
        search([embeddings.vectors[k] for k in searched], top_k), [embeddings.hypotheses[k] for k in searched], limit
    )
    t2 = time.perf_counter()
    fetched = list(FETCHERS.map(lambda i: fetch(i, chosen[i].windows), chosen))
    items = dict(zip(chosen, fetched, strict=True))
    t3 = time.perf_counter()
    query = [
        landmarks.QueryWindow(offset, vector, speed, pitch)
        for offset, vector, (speed, pitch) in zip(offsets, embeddings.vectors, embeddings.hypotheses, strict=True)
    ]
    tested = {i: c.hypotheses for i, c in chosen.items()}
    decisions = landmarks.decide(query, items, len(audio) / RATE, library_seconds, INFO.window_seconds, tested)
    t4 = time.perf_counter()
    best = decisions[0] if decisions else None
    return Answer(
        t4 - t0,
        (t1 - t0, t2 - t1, t3 - t2, t4 - t3),
        best.item_id if best else 0,
        best.confidence if best else 0.0,
        best.offset if best else 0.0,
        best.landmarks if best else 0,
        sum(len(c.windows) for c in chosen.values()),
        sum(d.confidence >= INFO.min_confidence for d in decisions[1:]),
    )


def answer_all(
    queries: list[Query], ask: Callable[[np.ndarray], Answer], warmup: int = 2
) -> tuple[list[Answer], float]:
    """The answers, after `warmup` untimed queries, and the share of a CPU
    this process got meanwhile (below 1: other work on the machine slowed
    it down)."""
    for q in queries[:warmup]:
        ask(q.audio)
    wall, cpu = time.perf_counter(), time.process_time()
    answers = [ask(q.audio) for q in queries]
    return answers, (time.process_time() - cpu) / (time.perf_counter() - wall)


# The baseline: every landmark in flat numpy arrays, sorted by hash


class InvertedIndex:
    """A brute-force in-memory inverted index: (hash, segment, value) of
    every landmark sorted by hash, plus each segment's own vector (CSR) to
    fetch. A query vector's score for a segment is the same inner product
    Milvus computes (sum over shared hashes of query value x stored value)."""

    def __init__(self) -> None:
        self._new: list[tuple[int, Segments]] = []
        self.items = np.zeros(0, dtype=np.int64)  # per segment
        self.windows = np.zeros(0, dtype=np.int64)
        self.offsets = np.zeros(0, dtype=np.float64)
        self.indptr = np.zeros(1, dtype=np.int64)
        self.indices = np.zeros(0, dtype=np.uint32)
        self.values = np.zeros(0, dtype=np.float32)
        self.keys = np.zeros(0, dtype=np.uint32)  # postings, by hash
        self.post_segment = np.zeros(0, dtype=np.uint32)
        self.post_value = np.zeros(0, dtype=np.float32)
        self.first: dict[int, int] = {}
        self.seconds = 0.0

    def add(self, item_id: int, segments: Segments) -> None:
        began = time.perf_counter()
        self._new.append((item_id, segments))
        self.seconds += time.perf_counter() - began

    def build(self) -> None:
        """Appends what was added and sorts the postings again."""
        began = time.perf_counter()
        n = len(self.items)
        for item_id, s in self._new:
            self.first[item_id] = n
            n += len(s.offsets)
        new = self._new
        self._new = []
        self.items = np.concatenate([self.items, *(np.full(len(s.offsets), i) for i, s in new)])
        self.windows = np.concatenate([self.windows, *(np.arange(len(s.offsets)) for _, s in new)])
        self.offsets = np.concatenate([self.offsets, *(s.offsets for _, s in new)])
        lengths = np.concatenate([np.diff(self.indptr), *(np.diff(s.indptr) for _, s in new)])
        self.indptr = np.concatenate([[0], np.cumsum(lengths)])
        self.indices = np.concatenate([self.indices, *(s.indices for _, s in new)])
        self.values = np.concatenate([self.values, *(s.values for _, s in new)])
        del new
        order = np.argsort(self.indices, kind="stable")
        self.keys = self.indices[order]
        self.post_value = self.values[order]
        self.post_segment = np.repeat(np.arange(len(lengths), dtype=np.uint32), lengths)[order]
        self.seconds += time.perf_counter() - began

    def nbytes(self) -> int:
        arrays = (self.items, self.windows, self.offsets, self.indptr, self.indices, self.values)
        return sum(a.nbytes for a in (*arrays, self.keys, self.post_segment, self.post_value))

    def search(self, vectors: list[Sparse], top_k: int) -> Hits:
        out: Hits = []
        for v in vectors:
            lo = np.searchsorted(self.keys, v.indices, side="left")
            hi = np.searchsorted(self.keys, v.indices, side="right")
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                out.append([])
                continue
            at = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
            segments, inverse = np.unique(self.post_segment[at], return_inverse=True)
            weights = self.post_value[at].astype(np.float64) * np.repeat(v.values.astype(np.float64), counts)
            scores = np.bincount(inverse, weights=weights)  # as Milvus sums: float64 products of float32 values
            k = min(top_k, len(scores))
            best = np.argpartition(-scores, k - 1)[:k]
            best = best[np.argsort(-scores[best], kind="stable")]
            out.append([(int(self.items[segments[b]]), int(self.windows[segments[b]]), float(scores[b])) for b in best])
        return out

    def fetch(self, item_id: int, windows: list[int]) -> list[tuple[float, Sparse]]:
        first = self.first[item_id]
        out = []
        for w in windows:
            s = first + w
            a, b = self.indptr[s], self.indptr[s + 1]
            out.append((float(self.offsets[s]), Sparse(self.indices[a:b], self.values[a:b])))
        return out


class MilvusPath:
    """Search and fetch through the search service's store (Milvus)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def search(self, vectors: list[Sparse], top_k: int) -> Hits:
        found = self.store.search(LIBRARY, INFO.name, INFO.dim, vectors, top_k)
        return [[(h.item_id, h.window, h.score) for h in per] for per in found]

    def fetch(self, item_id: int, windows: list[int]) -> list[tuple[float, Sparse]]:
        return [(w.offset, w.vector) for w in self.store.get(LIBRARY, item_id, windows)]  # type: ignore[misc]


def ask(index: InvertedIndex | MilvusPath, library_seconds: float, top_k: int, limit: int, audio: np.ndarray) -> Answer:
    return answer(audio, index.search, index.fetch, library_seconds, top_k, limit)


def baseline_process(conn: Connection, top_k: int, limit: int) -> None:
    """Serves the baseline in its own process: its memory is its own."""
    index = InvertedIndex()
    queries: list[Query] = []
    while True:
        message = conn.recv()
        command = message[0]
        if command == "add":
            index.add(message[1], message[2])
        elif command == "queries":
            queries = message[1]
        elif command == "build":
            index.build()
            conn.send((index.seconds, index.nbytes()))
        elif command == "search":
            conn.send(answer_all(queries, functools.partial(ask, index, message[1], top_k, limit)))
        elif command == "rss":
            conn.send(peak_rss_mib(os.getpid()))
        else:
            conn.close()
            return


# Measuring


def du_bytes(path: Path) -> int:
    """What `du` counts: allocated blocks."""
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(path) for f in files)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def score(queries: list[Query], answers: list[Answer]) -> tuple[float, float]:
    """(top-1 of the hits, false-positive rate of the misses)."""
    hits = [
        a.item_id == q.item_id and a.confidence >= INFO.min_confidence and abs(a.offset - q.start) <= 1.0
        for q, a in zip(queries, answers, strict=True)
        if q.kind == "hit"
    ]
    misses = [a.confidence >= INFO.min_confidence for q, a in zip(queries, answers, strict=True) if q.kind != "hit"]
    return sum(hits) / max(1, len(hits)), sum(misses) / max(1, len(misses))


@dataclasses.dataclass
class Level:
    hours: float
    items: int = 0
    seconds: float = 0.0  # indexed audio
    segments: int = 0
    landmarks: int = 0
    kinds: dict[str, float] = dataclasses.field(default_factory=dict)  # hours per kind
    build_wall: float = 0.0  # s, fingerprinting + upserts + flushes, cumulative
    fingerprint_cpu: float = 0.0
    upsert_seconds: float = 0.0
    baseline_build: float = 0.0
    index_bytes: int = 0
    baseline_bytes: int = 0
    ours: list[Answer] = dataclasses.field(default_factory=list)
    theirs: list[Answer] = dataclasses.field(default_factory=list)
    rss: float = 0.0
    baseline_rss: float = 0.0
    cpu_share: float = 0.0  # of this process while timing its searches
    baseline_cpu_share: float = 0.0
    load: float = 0.0  # the machine's 1-minute load average after the searches


def label(hours: float) -> str:
    return f"{hours:g}h".replace(".", "_")


def stage_p50(answers: list[Answer]) -> str:
    names = ("embed", "search", "fetch", "decide")
    stages = ", ".join(f"{n} {1000 * statistics.median(a.stages[i] for a in answers):.0f}" for i, n in enumerate(names))
    others = sum(a.others for a in answers)
    return f"{stages}; {statistics.median(a.windows for a in answers):.0f} windows fetched, {others} extra results"


def p50(answers: list[Answer]) -> float:
    return statistics.median(a.seconds for a in answers)


def report(levels: list[Level], queries: list[Query]) -> tuple[dict[str, dict], str]:
    """Figures for bench/results/latest.json, and the table printed at the end.
    A level measured on the baseline alone (--milvus-up-to) gets only its
    `..._bruteforce_...` figures, against the smallest level's."""
    figures: dict[str, dict] = {}
    n_hit = sum(q.kind == "hit" for q in queries)
    what = (
        f"{len(queries)} 5 s queries ({n_hit} clean excerpts of indexed recordings, {len(queries) - n_hit} of "
        "held-out recordings and noise), each timed over embed + search + candidates + fetch + decide"
    )
    first = levels[0]
    for lv in levels:
        tag = label(lv.hours)
        b50, b99 = percentiles([a.seconds for a in lv.theirs])
        b_top1, b_fp = score(queries, lv.theirs)
        size = f"{lv.seconds / 3600:.2f} h indexed ({lv.items} items, {lv.segments} segments, {lv.landmarks} landmarks)"
        hours = lv.seconds / 3600
        b_mib = lv.baseline_bytes / 2**20
        if not lv.ours:
            f50, f99 = percentiles([a.seconds for a in first.theirs])
            note = (
                f"{size}; Milvus not measured at this size (--milvus-up-to); {what}; the brute-force in-memory "
                f"inverted index (stage p50 ms: {stage_p50(lv.theirs)}; {lv.baseline_cpu_share:.2f} CPU s per s, "
                f"load average {lv.load:.1f}); baseline: the same at {first.seconds / 3600:.2f} h"
            )
            figures[f"{KEY}_bruteforce_search_p50_seconds_{tag}"] = figure(b50, f50, "s", note)
            figures[f"{KEY}_bruteforce_search_p99_seconds_{tag}"] = figure(b99, f99, "s", note)
            figures[f"{KEY}_bruteforce_top1_{tag}"] = figure(b_top1, score(queries, first.theirs)[0], "fraction", note)
            figures[f"{KEY}_bruteforce_index_mib_per_hour_{tag}"] = figure(
                b_mib / hours, first.baseline_bytes / 2**20 / (first.seconds / 3600), "MiB/h", size
            )
            figures[f"{KEY}_bruteforce_peak_rss_mib_{tag}"] = figure(
                lv.baseline_rss, first.baseline_rss, "MiB", f"{size}; VmHWM of the brute-force index's process"
            )
            continue
        o50, o99 = percentiles([a.seconds for a in lv.ours])
        top1, fp = score(queries, lv.ours)
        same = sum(a.item_id == b.item_id for a, b in zip(lv.ours, lv.theirs, strict=True))
        note = (
            f"{size}; {what}; Milvus Lite via MilvusStore (stage p50 ms: {stage_p50(lv.ours)}); baseline: a "
            f"brute-force in-memory inverted index, same decide (stage p50 ms: {stage_p50(lv.theirs)}); same top "
            f"item for {same} of {len(queries)} queries; CPU s per s each process got while timing: "
            f"{lv.cpu_share:.2f} and {lv.baseline_cpu_share:.2f} (load average {lv.load:.1f})"
        )
        figures[f"{KEY}_search_p50_seconds_{tag}"] = figure(o50, b50, "s", note)
        figures[f"{KEY}_search_p99_seconds_{tag}"] = figure(o99, b99, "s", note)
        mib = lv.index_bytes / 2**20
        figures[f"{KEY}_index_mib_{tag}"] = figure(
            mib, b_mib, "MiB", f"{size}; du of the Milvus Lite directory after flush; baseline: its arrays' bytes"
        )
        figures[f"{KEY}_index_mib_per_hour_{tag}"] = figure(mib / hours, b_mib / hours, "MiB/h", size)
        others = sum(a.others for q, a in zip(queries, lv.ours, strict=True) if q.kind == "hit")
        figures[f"{KEY}_top1_{tag}"] = figure(
            top1,
            b_top1,
            "fraction",
            f"{n_hit} clean 5 s excerpts of indexed recordings; {others} confident results besides the best in "
            "all (a transformed copy found as a copy would add some); baseline: brute force",
        )
        figures[f"{KEY}_false_positive_rate_{tag}"] = figure(
            fp, b_fp, "fraction", f"{len(queries) - n_hit} held-out excerpts and noise; baseline: brute force"
        )
        figures[f"{KEY}_peak_rss_mib_{tag}"] = figure(
            lv.rss,
            lv.baseline_rss,
            "MiB",
            f"{size}; VmHWM by the end of the level of this process (Milvus Lite runs in it); baseline: the "
            "brute-force index's process",
        )
        figures[f"{KEY}_index_build_seconds_{tag}"] = figure(
            lv.upsert_seconds,
            lv.baseline_build,
            "s",
            f"{size}; seconds in MilvusStore.upsert + flush, cumulative; baseline: the brute-force index's appends "
            f"and sorts; fingerprinting alongside: {lv.fingerprint_cpu:.0f} CPU s, wall {lv.build_wall:.0f} s",
        )
    for lo, hi, scaled in growth(levels):
        figures[f"{KEY}_search_p50_seconds_{label(hi.hours)}_over_{label(lo.hours)}"] = figure(
            p50(hi.ours),
            p50(lo.ours),
            "s",
            f"p50 at {hi.seconds / 3600:.1f} h against p50 at {lo.seconds / 3600:.2f} h (target: ratio <= 2); "
            f"the brute-force baseline's own ratio: {scaled:.2f}x",
        )
    if levels[-1] is not first:
        figures[f"{KEY}_bruteforce_search_p50_seconds_{label(levels[-1].hours)}_over_{label(first.hours)}"] = figure(
            p50(levels[-1].theirs),
            p50(first.theirs),
            "s",
            f"the brute-force in-memory index's p50 at {levels[-1].seconds / 3600:.1f} h against its p50 at "
            f"{first.seconds / 3600:.2f} h: how the fingerprint's own search path grows, apart from the store",
        )
    return figures, table(levels, queries)


def growth(levels: list[Level]) -> list[tuple[Level, Level, float]]:
    """(smallest, largest level measured through Milvus, the baseline's
    p50 ratio between them), if there are two such levels."""
    measured = [lv for lv in levels if lv.ours]
    if len(measured) < 2:
        return []
    lo, hi = measured[0], measured[-1]
    return [(lo, hi, p50(hi.theirs) / p50(lo.theirs))]


def table(levels: list[Level], queries: list[Query]) -> str:
    head = (
        f"{'level':>6} {'hours':>7} {'items':>6} {'segments':>9} {'landmarks':>10} {'index MiB':>9} {'MiB/h':>6} "
        f"{'build s':>7} | {'p50 s':>6} {'p99 s':>6} | {'base p50':>8} {'base p99':>8} | {'p50 ratio':>9} | "
        f"{'top-1':>9} | {'false pos':>9} | {'RSS MiB':>7} {'base RSS':>8}"
    )
    lines = [head, "-" * len(head)]
    for lv in levels:
        b50, b99 = percentiles([a.seconds for a in lv.theirs])
        b_top1, b_fp = score(queries, lv.theirs)
        if lv.ours:
            o50, o99 = percentiles([a.seconds for a in lv.ours])
            top1, fp = score(queries, lv.ours)
            mib = lv.index_bytes / 2**20
            ours = (
                f"{mib:9.1f} {mib / (lv.seconds / 3600):6.2f} {lv.build_wall:7.0f} | {o50:6.3f} {o99:6.3f} | "
                f"{b50:8.3f} {b99:8.3f} | {o50 / b50:8.2f}x | {top1:4.2f}/{b_top1:4.2f} | {fp:4.2f}/{b_fp:4.2f} | "
                f"{lv.rss:7.0f}"
            )
        else:
            ours = (
                f"{'-':>9} {'-':>6} {lv.build_wall:7.0f} | {'-':>6} {'-':>6} | {b50:8.3f} {b99:8.3f} | {'-':>9} | "
                f"{'-':>4}/{b_top1:4.2f} | {'-':>4}/{b_fp:4.2f} | {'-':>7}"
            )
        lines.append(
            f"{label(lv.hours):>6} {lv.seconds / 3600:7.2f} {lv.items:6d} {lv.segments:9d} {lv.landmarks:10d} "
            f"{ours} {lv.baseline_rss:8.0f}"
        )
    for lv in levels:
        milvus = f"Milvus: {stage_p50(lv.ours)}; " if lv.ours else "Milvus: not measured; "
        lines.append(
            f"{label(lv.hours)} stage p50 ms, {milvus}brute force: {stage_p50(lv.theirs)}; "
            f"CPU s per s while timing {lv.cpu_share:.2f} / {lv.baseline_cpu_share:.2f}, load average {lv.load:.1f}"
        )
    for lo, hi, scaled in growth(levels):
        ratio = p50(hi.ours) / p50(lo.ours)
        verdict = "meets" if ratio <= 2 else "misses"
        lines.append(
            f"p50 {label(hi.hours)} / p50 {label(lo.hours)}: {ratio:.2f}x ({verdict} the target of <= 2); "
            f"brute force: {scaled:.2f}x"
        )
    if levels[-1] is not levels[0]:
        lines.append(
            f"brute force alone, p50 {label(levels[-1].hours)} / p50 {label(levels[0].hours)}: "
            f"{p50(levels[-1].theirs) / p50(levels[0].theirs):.2f}x"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="results JSON, merged into")
    parser.add_argument("--hours", default="1,10,100", help="library sizes, comma-separated (default 1,10,100)")
    parser.add_argument(
        "--source",
        type=Path,
        help="folder of real music (default: the first of "
        + ", ".join(str(s.relative_to(ROOT)) if s.is_relative_to(ROOT) else str(s) for s in SOURCES)
        + " found)",
    )
    parser.add_argument("--queries", type=int, default=50, help="queries per level (half hits, half misses)")
    parser.add_argument("--top-k", type=int, help="hits per query vector (default: the gateway's LANDMARK_HITS)")
    parser.add_argument("--candidates", type=int, help="items decided on (default: the gateway's LANDMARK_CANDIDATES)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="fingerprinting processes")
    parser.add_argument(
        "--milvus-up-to",
        type=float,
        default=float("inf"),
        help="measure Milvus only at levels up to this many hours, larger ones on the brute-force index alone "
        "(Milvus Lite's memory and search time grow about linearly: 100 h would need over 10 GB and hours here)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, help="keep the Milvus Lite data here (default: a temporary folder)")
    args = parser.parse_args()
    began = time.perf_counter()
    hours = sorted({float(h) for h in args.hours.split(",")})
    source = pick_source(args.source)
    spawn = multiprocessing.get_context("spawn")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-fingerprint-"))
    pool = concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=spawn)
    try:
        tracks = pool.submit(list_tracks, source).result()
        hits, candidates = pool.submit(gateway_defaults).result()
        args.top_k = args.top_k or hits
        args.candidates = args.candidates or candidates
        library, held = split(tracks, args.seed)
        np.random.default_rng(args.seed).shuffle(library)  # type: ignore[arg-type]
        variants_, ends = plan(library, hours)
        real = sum(t.duration for t in library)
        print(
            f"{source}: {len(tracks)} recordings, {sum(t.duration for t in tracks) / 3600:.2f} h; held out "
            f"{len(held)} ({sum(t.duration for t in held) / 3600:.2f} h), library {len(library)} "
            f"({real / 3600:.2f} h); "
            f"{len(variants_)} items planned for {', '.join(map(label, hours))}",
            flush=True,
        )
        needed = sorted({p.track.path for v in variants_ for p in (v.first, v.second) if p} | {t.path for t in held})
        t = time.perf_counter()
        spent = [s for s in pool.map(decode, needed, chunksize=1) if s >= 0]
        decoding = (
            f"decoded {len(spent)} of {len(needed)} recordings in {time.perf_counter() - t:.0f} s "
            f"({sum(spent):.0f} s of work; the rest were in {AUDIO_CACHE.relative_to(ROOT)})"
        )
        print(decoding, flush=True)
        speed = pool.submit(model_speed, library[0]).result()
        estimate = hours[-1] * 3600 / speed / args.workers
        print(
            f"{INFO.name} fingerprints {speed:.0f}x real time per CPU: {hours[-1]:g} h should take about "
            f"{estimate / 60:.1f} min on {args.workers} processes",
            flush=True,
        )
        originals = [(i + 1, v.first.track) for i, v in enumerate(variants_[: ends[0]]) if v.kind == "original"]
        queries = make_queries(originals, held, args.queries, args.seed)
        levels, notes = measure(args, work, variants_, ends, hours, queries, pool, spawn)
    finally:
        pool.shutdown(cancel_futures=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    figures, text = report(levels, queries)
    elapsed = time.perf_counter() - began
    kinds = "; ".join(
        f"{label(lv.hours)}: " + ", ".join(f"{k} {h:.1f} h" for k, h in lv.kinds.items()) for lv in levels
    )
    shifts = sorted({p.semitones for v in variants_ for p in (v.first, v.second) if p and p.semitones})
    used = {v.kind for v in variants_}
    transforms = [
        *(["time-reversed"] if "reversed" in used else []),
        *([f"resampled by {', '.join(f'{k:+d}' for k in shifts)} semitones (alone or reversed)"] if shifts else []),
        *(
            ["mixes of two different recordings at equal loudness (the second reversed every other pass)"]
            if "mix" in used
            else []
        ),
    ]
    copies = f"then in passes of transformed copies: {'; '.join(transforms)}" if transforms else "no copies needed"
    note = (
        f"{INFO.name} at {', '.join(map(label, hours))} of indexed audio (bench/fingerprint_scale.py --hours "
        f"{args.hours} --queries {args.queries}"
        + (f" --milvus-up-to {args.milvus_up_to:g}" if args.milvus_up_to < max(hours) else "")
        + f"), {elapsed / 60:.1f} min in all ({decoding}). Library: the real "
        f"recordings of {source} ({len(library)} recordings, {real / 3600:.2f} h; {len(held)} more held out), "
        f"decoded mono at {RATE} Hz, first as they are, {copies}; every item fingerprinted "
        f"for real ({args.workers} processes, {levels[-1].fingerprint_cpu:.0f} CPU s for the largest level) and "
        f"upserted through MilvusStore into Milvus Lite, the levels prefixes of one sequence. Hours by kind: "
        f"{kinds}. Queries: {notes}, the same at every level. Baseline: a brute-force in-memory inverted index "
        f"(numpy arrays sorted by hash) in its own process, the same embed, candidates (limit {args.candidates}) "
        f"and decide, top_k {args.top_k} per query vector."
    )
    merge_results(args.out, figures, {"fingerprint_scale": note})
    print(note)
    print(text)
    return 0


def measure(
    args: argparse.Namespace,
    work: Path,
    variants_: list[Variant],
    ends: list[int],
    hours: list[float],
    queries: list[Query],
    pool: concurrent.futures.Executor,
    spawn: multiprocessing.context.SpawnContext,
) -> tuple[list[Level], str]:
    ours, theirs = spawn.Pipe()
    baseline = spawn.Process(target=baseline_process, args=(theirs, args.top_k, args.candidates), daemon=True)
    baseline.start()
    ours.send(("queries", queries))
    store = MilvusStore(str(work / "milvus" / "vectors.db"))
    store.create(LIBRARY, INFO.name, INFO.dim, sparse=INFO.sparse)
    levels: list[Level] = []
    state = Level(0.0)
    try:
        start = 0
        for target, end in zip(hours, ends, strict=True):
            milvus = target <= args.milvus_up_to
            t = time.perf_counter()
            for item_id, (variant, segments) in enumerate(
                zip(
                    variants_[start:end],
                    bounded(pool, fingerprint, variants_[start:end], 2 * args.workers),
                    strict=True,
                ),
                start=start + 1,
            ):
                if milvus:
                    rows = [
                        WindowVector(item_id, k, float(offset), segments.vector(k))
                        for k, offset in enumerate(segments.offsets)
                    ]
                    u = time.perf_counter()
                    for a in range(0, len(rows), UPSERT_BATCH):
                        store.upsert(LIBRARY, INFO.name, INFO.dim, rows[a : a + UPSERT_BATCH])
                    state.upsert_seconds += time.perf_counter() - u
                ours.send(("add", item_id, segments))
                state.items += 1
                state.seconds += segments.duration
                state.segments += len(segments.offsets)
                state.landmarks += len(segments.indices)
                state.fingerprint_cpu += segments.cpu_seconds
                state.kinds[variant.kind] = state.kinds.get(variant.kind, 0.0) + segments.duration / 3600
            if milvus:
                u = time.perf_counter()
                store.flush()
                state.upsert_seconds += time.perf_counter() - u
            state.build_wall += time.perf_counter() - t
            start = end
            level = dataclasses.replace(state, hours=target, kinds=dict(state.kinds))
            level.index_bytes = du_bytes(work / "milvus") if milvus else 0
            ours.send(("build",))
            level.baseline_build, level.baseline_bytes = ours.recv()
            print(
                f"{label(target)}: {level.seconds / 3600:.2f} h in {level.items} items, {level.segments} segments, "
                f"{level.landmarks} landmarks; built in {time.perf_counter() - t:.0f} s (fingerprinting "
                f"{level.fingerprint_cpu:.0f} CPU s in all"
                + (
                    f", upsert + flush {level.upsert_seconds:.0f} s); Milvus Lite {level.index_bytes / 2**20:.1f} MiB"
                    if milvus
                    else "; the brute-force index only)"
                ),
                flush=True,
            )
            t = time.perf_counter()
            if milvus:
                path = MilvusPath(store)
                level.ours, level.cpu_share = answer_all(
                    queries, functools.partial(ask, path, level.seconds, args.top_k, args.candidates)
                )
                level.rss = peak_rss_mib(os.getpid())
            ours.send(("search", level.seconds))
            level.theirs, level.baseline_cpu_share = ours.recv()
            level.load = os.getloadavg()[0]
            ours.send(("rss",))
            level.baseline_rss = ours.recv()
            mine = (
                f"p50 {p50(level.ours):.3f} s, peak RSS {level.rss:.0f} MiB, {level.cpu_share:.2f} CPU s per s; "
                if milvus
                else ""
            )
            print(
                f"{label(target)}: searched in {time.perf_counter() - t:.0f} s; {mine}brute force: p50 "
                f"{p50(level.theirs):.3f} s, peak RSS {level.baseline_rss:.0f} MiB, {level.baseline_cpu_share:.2f} "
                f"CPU s per s; load average {level.load:.1f} on {os.cpu_count()} CPUs",
                flush=True,
            )
            levels.append(level)
    finally:
        store.close()
        ours.send(("stop",))
        baseline.join(30)
    counts = collections.Counter(q.kind for q in queries)
    return levels, ", ".join(f"{n} {k}" for k, n in counts.items())


if __name__ == "__main__":
    raise SystemExit(main())
