"""fingerprint-v2 and its statistical match decision: pure functions on
synthetic music first, then the whole path through real services."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.search.v1 import search_pb2 as srch

from services.common.vectors import PAIR_TIME_STEP, pair_seconds
from services.embedder.audio import resample
from services.embedder.models import fingerprint_v2
from services.embedder.models.fingerprint_v2 import PHASED_QUERY_SECONDS, SEGMENT_SECONDS, FingerprintV2Model
from services.gateway import landmarks
from tests.sounds import encode, music
from tests.test_gateway import expect_code, insert_stream, search_stream
from tests.test_repair import Direct

RATE = 22050  # tests.sounds.music
MODEL = FingerprintV2Model()


def played(x: np.ndarray, speed: float) -> np.ndarray:
    """`x` played `speed` times faster, pitch and tempo together (a resampled copy)."""
    n = int(len(x) / speed)
    return np.interp(np.arange(n) * speed, np.arange(len(x)), x).astype(np.float32)


def decide(track: np.ndarray, clip: np.ndarray, library_seconds: float = 3600.0) -> list[landmarks.Decision]:
    """The gateway's decision with every segment of `track` fetched."""
    segments, starts = MODEL.embed_signal(resample(track, RATE, 8000), SEGMENT_SECONDS, SEGMENT_SECONDS)
    query, offsets = MODEL.embed_signal(resample(clip, RATE, 8000), SEGMENT_SECONDS, SEGMENT_SECONDS, query=True)
    assert query.hypotheses is not None
    windows = [
        landmarks.QueryWindow(o, v, s, p) for o, v, (s, p) in zip(offsets, query.vectors, query.hypotheses, strict=True)
    ]
    items = {1: list(zip(starts, segments.vectors, strict=True))}
    return landmarks.decide(windows, items, len(clip) / RATE, library_seconds, SEGMENT_SECONDS)


@pytest.fixture(scope="module")
def track() -> np.ndarray:
    return music(3, 60.0)


def test_library_segments_are_contiguous_and_hold_positions(track: np.ndarray) -> None:
    segments, starts = MODEL.embed_signal(resample(track, RATE, 8000), SEGMENT_SECONDS, SEGMENT_SECONDS)
    assert starts == [float(k) for k in range(60)]
    for v in segments.vectors:
        assert np.all(np.diff(v.indices.astype(np.int64)) > 0)  # one position per hash, indices ascending
        positions = (v.values.astype(np.float64) - 1) * 1024
        assert np.all((positions >= 0) & (positions < SEGMENT_SECONDS))
    per_second = sum(len(v.indices) for v in segments.vectors) / 60
    assert 20 < per_second < 300  # the budget behind "at most 8 MB per hour" (8 bytes a landmark)


@pytest.mark.parametrize("speed", [1.0, 0.85, 0.97, 1.03, 1.08, 1.15])
def test_a_resampled_excerpt_is_found_with_its_speed(track: np.ndarray, speed: float) -> None:
    start = 20.0
    clip = played(track[int(start * RATE) : int((start + 8) * RATE)], speed)[: 5 * RATE]
    best = decide(track, clip)[0]
    assert best.confidence >= MODEL.info.min_confidence
    assert best.speed == pytest.approx(speed, rel=0.01)
    assert best.pitch == pytest.approx(speed, rel=0.015)
    assert best.offset == pytest.approx(start, abs=0.1)  # item time = speed x query time + offset


def test_a_query_carries_its_other_framings_for_the_decision_only(
    track: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clip cut 3 ms off the library's STFT framing: at framing 0 alone it
    # shares fewer hashes with the track than with the other framings added.
    segments, _ = MODEL.embed_signal(resample(track, RATE, 8000), SEGMENT_SECONDS, SEGMENT_SECONDS)
    stored = set(np.concatenate([v.indices for v in segments.vectors]).tolist())
    clip = resample(track, RATE, 8000)[20 * 8000 + 24 : 25 * 8000]
    query, offsets = MODEL.embed_signal(clip, SEGMENT_SECONDS, SEGMENT_SECONDS, query=True)
    assert query.hypotheses is not None and query.decide_only is not None
    searched = [v for v, only in zip(query.vectors, query.decide_only, strict=True) if not only]
    assert len(searched) == len(set(offsets)) * 27  # every chunk searched once under each hypothesis
    assert any(query.decide_only)
    shared: dict[bool, set[int]] = {False: set(), True: set()}
    for v, h, only in zip(query.vectors, query.hypotheses, query.decide_only, strict=True):
        if h == (1.0, 1.0):
            shared[only] |= set(v.indices.tolist()) & stored
    assert len(shared[False] | shared[True]) > 1.2 * len(shared[False])
    # ... and the other framings are what adds them: with framing 0 alone
    # (its neighbouring cells still there) the decision sees fewer.
    monkeypatch.setattr(fingerprint_v2, "QUERY_PHASES", (0,))
    alone, _ = MODEL.embed_signal(clip, SEGMENT_SECONDS, SEGMENT_SECONDS, query=True)
    assert alone.hypotheses is not None
    found: set[int] = set()
    for v, h in zip(alone.vectors, alone.hypotheses, strict=True):
        if h == (1.0, 1.0):
            found |= set(v.indices.tolist())
    assert len(shared[False] | shared[True]) > 1.2 * len(found & stored)
    monkeypatch.undo()

    def entries(e: object, only: bool) -> int:
        return sum(len(v.indices) for v, d in zip(e.vectors, e.decide_only, strict=True) if d == only)  # type: ignore[attr-defined]

    # Searched: each anchor's SEARCH_FAN_OUT most prominent partners; with
    # all FAN_OUT of them searched, about twice the hashes would be.
    monkeypatch.setattr(fingerprint_v2, "SEARCH_FAN_OUT", fingerprint_v2.FAN_OUT)
    every, _ = MODEL.embed_signal(clip, SEGMENT_SECONDS, SEGMENT_SECONDS, query=True)
    monkeypatch.undo()
    assert 1.5 * entries(query, False) < entries(every, False) < 2.5 * entries(query, False)
    # Decide-only: the other partners, each pair's neighbouring cell, and
    # the other framings' pairs in both cells.
    others = 2 * fingerprint_v2.FAN_OUT / fingerprint_v2.SEARCH_FAN_OUT - 1  # per searched hash, one framing
    assert entries(query, True) > 2 * others * entries(query, False)
    # A long query has evidence enough: no other framings (its reply stays small).
    long, _ = MODEL.embed_signal(np.tile(clip, int(PHASED_QUERY_SECONDS / 5) + 1), 1.0, 1.0, query=True)
    assert entries(long, True) <= others * entries(long, False)


@pytest.mark.parametrize("seconds", [5, 60, 300])
def test_noise_and_unrelated_music_get_no_match_at_any_length(track: np.ndarray, seconds: int) -> None:
    rng = np.random.default_rng(seconds)
    white = (0.1 * rng.standard_normal(seconds * RATE)).astype(np.float32)
    other = music(11, float(seconds))
    for clip in (white, other):
        decisions = decide(track, clip, library_seconds=100 * 3600)
        assert all(d.confidence < MODEL.info.min_confidence for d in decisions), decisions[:1]


def test_confidence_falls_with_chance_and_rises_with_evidence() -> None:
    def c(m: int, chance: float, library_seconds: float = 3600.0) -> float:
        a = landmarks.Alignment(m, chance, 1.0, 0.0, 0.0, 5.0)
        return landmarks.confidence(a, library_seconds, 5.0, 27)

    assert c(40, 0.1) > 0.999999
    assert c(3, 0.1) < 0.01
    assert c(20, 0.1) > c(20, 1.0) > c(20, 3.0)  # the same evidence is worth less where chance is richer
    assert 0.0 < c(14, 0.3, 100 * 3600) < c(14, 0.3) < 1.0  # and less in a larger library (more places to look)


async def test_search_through_the_services_reports_confidence_and_speed(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="songs", model="fingerprint-v2"))
    tracks = {seed: music(seed, 40.0) for seed in (1, 2, 3)}
    ids = {}
    for seed, x in tracks.items():
        response = await stack.gateway.InsertAudio(insert_stream("songs", f"song{seed}.wav", encode(x, rate=RATE)))
        ids[seed] = response.item.id
    clip = played(tracks[2][10 * RATE : 18 * RATE], 1.08)[: 5 * RATE]
    response = await stack.gateway.SearchAudio(
        search_stream(pb.SearchParams(library="songs", top_k=3), encode(clip, rate=RATE))
    )
    assert response.model == "fingerprint-v2"
    assert response.min_score == pytest.approx(MODEL.info.min_confidence)
    best = response.results[0]
    assert best.item.id == ids[2]
    assert response.min_score <= best.score <= 1.0
    assert best.speed == pytest.approx(1.08, rel=0.01)
    assert best.pitch == pytest.approx(1.08, rel=0.015)
    # Where the query's start lies in the item, along the line found; the
    # ranges are the stretch the evidence covers, most of the clip.
    assert best.item_range.start_seconds - best.speed * best.query_range.start_seconds == pytest.approx(10.0, abs=0.3)
    assert best.query_range.end_seconds - best.query_range.start_seconds >= 2.5
    assert best.evidence >= 10  # time-consistent landmarks

    # The candidates' windows are read in one call: in the order asked, a
    # window that is not there left out.
    direct = Direct(stack)
    try:
        asked = [srch.ItemWindows(item_id=ids[3], windows=[1, 0, 9999]), srch.ItemWindows(item_id=ids[1], windows=[2])]
        got = await direct.search.BatchGetVectors(srch.BatchGetVectorsRequest(library="songs", items=asked))
        assert [(v.item_id, v.window_index) for v in got.vectors] == [(ids[3], 0), (ids[3], 1), (ids[1], 2)]
        assert all(len(v.sparse.indices) for v in got.vectors)
        no_windows = srch.BatchGetVectorsRequest(library="songs", items=[srch.ItemWindows(item_id=ids[1])])
        await expect_code(direct.search.BatchGetVectors(no_windows), grpc.StatusCode.INVALID_ARGUMENT, "window")
        no_library = srch.BatchGetVectorsRequest(library="nosuch", items=asked)
        await expect_code(direct.search.BatchGetVectors(no_library), grpc.StatusCode.NOT_FOUND)
    finally:
        await direct.close()

    rng = np.random.default_rng(0)
    noise = encode((0.1 * rng.standard_normal(20 * RATE)).astype(np.float32), rate=RATE)
    response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="songs", top_k=3), noise))
    assert list(response.results) == []
    everything = pb.SearchParams(library="songs", top_k=3, min_score=-1)
    response = await stack.gateway.SearchAudio(search_stream(everything, noise))
    assert all(r.score < MODEL.info.min_confidence for r in response.results)


@pytest.mark.parametrize("k", [0.5, 1.0, 2.5, 7.0, 20.0, 60.0])
@pytest.mark.parametrize("lam", [0.01, 0.3, 1.0, 4.0, 30.0])
def test_poisson_tail_matches_the_incomplete_gamma(k: float, lam: float) -> None:
    from scipy.special import gammainc  # the tests may use scipy; the gateway does not

    assert landmarks.poisson_tail(k, lam) == pytest.approx(float(gammainc(k, lam)), rel=1e-9, abs=1e-300)


def test_the_hash_keeps_the_pair_time_where_the_gateway_reads_it() -> None:
    """services/common/vectors.py's contract: the low bits of a hash are the
    anchor-to-partner time in PAIR_TIME_STEP s steps (the gateway reads where
    a match's evidence ends from them)."""
    assert fingerprint_v2.DT_CELL * fingerprint_v2.FRAME == pytest.approx(PAIR_TIME_STEP)
    dt_frames = np.array([2.0, 10.0, 40.0])
    keys = fingerprint_v2._cells(np.full(3, 6.0), np.full(3, 0.3), np.log2(dt_frames))
    assert np.all(np.abs(pair_seconds(keys) - dt_frames * fingerprint_v2.FRAME) <= PAIR_TIME_STEP / 2 + 1e-9)
