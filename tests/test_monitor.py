"""Monitoring a stream (GatewayService.Monitor) through the real services:
a synthetic broadcast holding three plays of fingerprint-v2 library items
among unrelated audio, streamed as raw PCM in uneven chunks."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli import main as cli
from tests.conftest import start_stack, stop_stack
from tests.sounds import encode, music
from tests.test_auth import TOKENS_TOML, bearer
from tests.test_fingerprint_v2 import played
from tests.test_gateway import expect_code, insert_stream

RATE = 22050  # tests.sounds.music
STARTED, ENDED, SUMMARY = pb.MONITOR_EVENT_KIND_STARTED, pb.MONITOR_EVENT_KIND_ENDED, pb.MONITOR_EVENT_KIND_SUMMARY


def seconds(x: float) -> int:
    return round(x * RATE)


def noise(seed: int, length: float) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(seconds(length))).astype(np.float32)


def broadcast(tracks: dict[int, np.ndarray]) -> tuple[np.ndarray, list[tuple[int, float, float, float, float, float]]]:
    """About 85 s: noise, 20 s of track 1, unrelated music, 15 s of track 2
    played 2% faster, unrelated music, another 20 s of track 1, noise.
    Returns the audio and the truth: (seed, stream start, end, item start, end, speed)."""
    parts: list[np.ndarray] = []
    truth = []

    def add(x: np.ndarray, seed: int = 0, item_start: float = 0.0, speed: float = 1.0) -> None:
        at = sum(len(p) for p in parts) / RATE
        if seed:
            length = len(x) / RATE
            truth.append((seed, at, at + length, item_start, item_start + length * speed, speed))
        parts.append(x.astype(np.float32))

    add(noise(1, 8.0))
    add(tracks[1][seconds(10) : seconds(30)], 1, 10.0)
    add(0.6 * music(11, 8.0))
    add(played(tracks[2][seconds(20) : seconds(36)], 1.02)[: seconds(15)], 2, 20.0, 1.02)
    add(0.6 * music(12, 8.0))
    add(tracks[1][seconds(35) : seconds(55)], 1, 35.0)
    add(noise(2, 6.0))
    return np.concatenate(parts), truth


def s16(x: np.ndarray, channels: int = 1) -> bytes:
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    return np.repeat(pcm, channels).tobytes() if channels > 1 else pcm.tobytes()


async def requests(start: pb.MonitorStart | None, data: bytes, seed: int = 0) -> AsyncIterator[pb.MonitorRequest]:
    """`start`, then `data` in uneven chunks that split frames."""
    if start is not None:
        yield pb.MonitorRequest(start=start)
    rng = np.random.default_rng(seed)
    at = 0
    while at < len(data):
        size = int(rng.integers(1, 300_000))
        yield pb.MonitorRequest(chunk=data[at : at + size])
        at += size


async def events(call) -> list[pb.MonitorEvent]:  # type: ignore[no-untyped-def]
    return [e async for e in call]


async def index(stack, library: str = "songs") -> tuple[dict[int, np.ndarray], dict[int, int]]:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name=library, model="fingerprint-v2"))
    tracks = {seed: music(seed, 60.0) for seed in (1, 2, 3)}
    ids = {}
    for seed, x in tracks.items():
        response = await stack.gateway.InsertAudio(insert_stream(library, f"song{seed}.wav", encode(x, rate=RATE)))
        ids[seed] = response.item.id
    return tracks, ids


@pytest.mark.parametrize("live", [False, True], ids=["file", "live"])
async def test_a_broadcast_gives_every_occurrence_with_its_ranges_and_speed(stack, live) -> None:  # type: ignore[no-untyped-def]
    """The same occurrences whether decided every 5 s (a file) or every
    second (live: the landmarks after the last piece go along)."""
    tracks, ids = await index(stack)
    audio, truth = broadcast(tracks)
    start = pb.MonitorStart(library="songs", sample_rate=RATE, channels=2, sample_type=pb.SAMPLE_TYPE_S16LE, live=live)
    began = time.perf_counter()
    got = await events(stack.gateway.Monitor(requests(start, s16(audio, channels=2), seed=3)))
    elapsed = time.perf_counter() - began
    print(f"monitored {len(audio) / RATE:.1f} s in {elapsed:.1f} s: x{len(audio) / RATE / elapsed:.1f} real time")

    assert got[-1].kind == SUMMARY and [e.kind for e in got].count(SUMMARY) == 1
    assert got[-1].scanned_seconds == pytest.approx(len(audio) / RATE, abs=0.01)
    assert got[-1].occurrences == 3
    ended = [e for e in got if e.kind == ENDED]
    assert [e.item.id for e in ended] == [ids[seed] for seed, *_ in truth], [
        (e.item.name, e.stream_range) for e in ended
    ]
    for e, (_, s0, s1, i0, i1, speed) in zip(ended, truth, strict=True):
        assert e.stream_range.start_seconds == pytest.approx(s0, abs=2.0)
        assert e.stream_range.end_seconds == pytest.approx(s1, abs=2.0)
        assert e.item_range.start_seconds == pytest.approx(i0, abs=2.0)
        assert e.item_range.end_seconds == pytest.approx(i1, abs=2.0)
        assert e.played_seconds == pytest.approx(e.stream_range.end_seconds - e.stream_range.start_seconds, abs=0.01)
        assert e.speed == pytest.approx(speed, rel=0.01 if speed != 1.0 else 0.02)
        assert e.confidence >= 0.99
        assert e.item.library == "songs" and e.item.name.startswith("song")
    # Every event says how much of the stream had come when it was decided.
    decided = [e.decided_at_seconds for e in got]
    assert decided == sorted(decided) and decided[-1] == pytest.approx(got[-1].scanned_seconds)
    for e in got[:-1]:
        assert e.stream_range.start_seconds < e.decided_at_seconds
    # Each occurrence is announced once, before it ends.
    for e in ended:
        first = [k for k, x in enumerate(got) if x.kind == STARTED and x.item.id == e.item.id]
        assert first and any(
            got[k].stream_range.start_seconds == pytest.approx(e.stream_range.start_seconds, abs=HOP_SLACK)
            and k < got.index(e)
            for k in first
        )
    assert [e.kind for e in got].count(STARTED) == 3


HOP_SLACK = 5.0  # s: a STARTED range is the first window's part of the occurrence


async def test_monitor_rejects_what_it_cannot_follow(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="prints", model="fingerprint-v2"))
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="textures", model="spectral-v1"))
    good = pb.MonitorStart(library="prints", sample_rate=RATE, channels=1, sample_type=pb.SAMPLE_TYPE_S16LE)
    pcm = s16(noise(5, 2.0))

    # Calls refused before the audio is read send no audio: a client still
    # writing when the server answers may see its write fail instead.
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_code(events(stack.gateway.Monitor(requests(None, pcm[:1000]))), invalid, "must carry `start`")
    bad_rate = pb.MonitorStart(library="prints", sample_rate=500, channels=1, sample_type=pb.SAMPLE_TYPE_S16LE)
    await expect_code(events(stack.gateway.Monitor(requests(bad_rate, b""))), invalid, "sample_rate")
    bad_channels = pb.MonitorStart(library="prints", sample_rate=RATE, channels=65, sample_type=pb.SAMPLE_TYPE_S16LE)
    await expect_code(events(stack.gateway.Monitor(requests(bad_channels, b""))), invalid, "channels")
    no_type = pb.MonitorStart(library="prints", sample_rate=RATE, channels=1)
    await expect_code(events(stack.gateway.Monitor(requests(no_type, b""))), invalid, "sample_type")
    await expect_code(events(stack.gateway.Monitor(requests(good, pcm + b"\x01"))), invalid, "inside a frame")
    unknown = pb.MonitorStart(library="nosuch", sample_rate=RATE, channels=1, sample_type=pb.SAMPLE_TYPE_S16LE)
    await expect_code(events(stack.gateway.Monitor(requests(unknown, b""))), grpc.StatusCode.NOT_FOUND)
    embedding = pb.MonitorStart(library="textures", sample_rate=RATE, channels=1, sample_type=pb.SAMPLE_TYPE_F32LE)
    await expect_code(
        events(stack.gateway.Monitor(requests(embedding, b""))), grpc.StatusCode.FAILED_PRECONDITION, "fingerprint-v2"
    )
    # A valid start on an empty library, float samples: only the summary.
    floats = pb.MonitorStart(library="prints", sample_rate=8000, channels=1, sample_type=pb.SAMPLE_TYPE_F32LE)
    got = await events(stack.gateway.Monitor(requests(floats, noise(6, 12.0).astype("<f4").tobytes())))
    assert [e.kind for e in got] == [SUMMARY]
    assert got[0].scanned_seconds == pytest.approx(12.0 * RATE / 8000, abs=0.01)
    assert got[0].occurrences == 0


async def test_the_cli_prints_each_occurrence_as_a_json_line(stack, monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tracks, ids = await index(stack)
    audio = np.concatenate([noise(7, 5.0), tracks[3][seconds(5) : seconds(25)], noise(8, 5.0)])
    path = tmp_path / "recording.flac"
    path.write_bytes(encode(audio, rate=RATE, fmt="FLAC", channels=2))
    monkeypatch.setenv("AUDIOSEARCH_GATEWAY", stack.address("gateway"))
    monkeypatch.delenv("AUDIOSEARCH_TOKEN", raising=False)
    capsys.readouterr()
    # The CLI is synchronous: run it beside the event loop serving the stack.
    code = await asyncio.to_thread(cli.main, ["monitor", str(path), "--library", "songs", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [d["event"] for d in lines] == ["started", "match", "summary"]
    match = lines[1]
    assert match["id"] == ids[3] and match["name"] == "song3.wav"
    assert match["stream_start"] == pytest.approx(5.0, abs=2.0) and match["stream_end"] == pytest.approx(25.0, abs=2.0)
    assert match["item_start"] == pytest.approx(5.0, abs=2.0) and match["item_end"] == pytest.approx(25.0, abs=2.0)
    assert match["speed"] == pytest.approx(1.0, abs=0.01) and match["confidence"] >= 0.99
    assert lines[2]["occurrences"] == 1 and lines[2]["scanned_seconds"] == pytest.approx(30.0, abs=0.01)

    # Raw PCM on stdin, text out: one line per occurrence, then the summary.
    class Stdin:
        buffer = io.BytesIO(s16(audio))

    monkeypatch.setattr("sys.stdin", Stdin)
    code = await asyncio.to_thread(cli.main, ["monitor", "-", "--library", "songs", "--rate", str(RATE)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "song3.wav" in out.err  # started
    text = out.out.splitlines()
    assert len(text) == 2 and "song3.wav" in text[0] and "x1.00" in text[0], text
    assert text[1] == "1 occurrences in 0:30 of audio"
    # An unknown library, as the other commands report errors.
    args = ["monitor", str(path), "--library", "nosuch", "--json"]
    assert await asyncio.to_thread(cli.main, args) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "NOT_FOUND"  # --json: on stdout
    # And without --rate, a usage error: exit 2, naming the option.
    with pytest.raises(SystemExit) as usage:
        cli.main(["monitor", "-", "--library", "songs"])
    assert usage.value.code == 2 and "--rate" in capsys.readouterr().err


@pytest.fixture
async def auth_stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The stack with tests/test_auth.py's tokens (the name puts a test in the services tier)."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS_TOML)
    stack = await start_stack(tmp_path, auth_tokens_file=str(tokens))
    yield stack
    await stop_stack(stack)


async def test_monitoring_needs_read_access_to_the_library(auth_stack) -> None:  # type: ignore[no-untyped-def]
    g = auth_stack.gateway
    await g.CreateLibrary(pb.CreateLibraryRequest(name="lib-b", model="fingerprint-v2"), metadata=bearer("admin"))
    start = pb.MonitorStart(library="lib-b", sample_rate=RATE, channels=1, sample_type=pb.SAMPLE_TYPE_S16LE)
    pcm = s16(noise(9, 2.0))
    denied = events(g.Monitor(requests(start, b""), metadata=bearer("alice")))  # alice writes lib-a only
    await expect_code(denied, grpc.StatusCode.PERMISSION_DENIED, "lib-b")
    got = await events(g.Monitor(requests(start, pcm), metadata=bearer("reader")))  # reads lib-*
    assert [e.kind for e in got] == [SUMMARY]
    await expect_code(events(g.Monitor(requests(start, b""))), grpc.StatusCode.UNAUTHENTICATED)
