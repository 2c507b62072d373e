"""Monitoring over HTTP against the real stack: a recording uploaded to
POST /v1/libraries/{library}/monitor answered as NDJSON (started, match,
summary), errors before the first line as the API's other errors, and the
live WebSocket: PCM frames in, events out, `end` for the last ones."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import websockets
from audiosearch.gateway.v1 import gateway_pb2 as pb

from tests.sounds import encode, music
from tests.test_gateway import insert_stream
from tests.web_server import web_server

RATE = 22050  # tests.sounds.music, as in tests/test_monitor.py


def seconds(x: float) -> int:
    return round(x * RATE)


def noise(seed: int, length: float) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(seconds(length))).astype(np.float32)


async def index(stack, library: str = "songs") -> tuple[dict[int, np.ndarray], dict[int, int]]:  # type: ignore[no-untyped-def]
    """A fingerprint-v2 library of three 60 s tracks, song1..3.wav."""
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name=library, model="fingerprint-v2"))
    tracks = {seed: music(seed, 60.0) for seed in (1, 2, 3)}
    ids = {}
    for seed, x in tracks.items():
        response = await stack.gateway.InsertAudio(insert_stream(library, f"song{seed}.wav", encode(x, rate=RATE)))
        ids[seed] = response.item.id
    return tracks, ids


async def received(ws) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every message until the server closes (whatever the close code)."""
    got = []
    try:
        async for message in ws:
            got.append(json.loads(message))
    except websockets.ConnectionClosed:
        pass
    return got


@pytest.fixture
async def web(stack):  # type: ignore[no-untyped-def]
    async with web_server(stack.address("gateway")) as base, httpx.AsyncClient(base_url=base, timeout=120) as client:
        yield client


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["http_status"] == status
    return error["message"]


async def test_a_recording_gives_its_occurrences_as_ndjson(stack, web: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    tracks, ids = await index(stack)
    audio = np.concatenate([noise(7, 5.0), tracks[3][seconds(5) : seconds(25)], noise(8, 5.0)])
    recording = encode(audio, rate=RATE, fmt="FLAC", channels=2)
    async with web.stream("POST", "/v1/libraries/songs/monitor", files={"file": ("r.flac", recording)}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    assert [d["event"] for d in lines] == ["started", "match", "summary"], lines
    match = lines[1]
    assert match["id"] == ids[3]
    assert match["name"] == "song3.wav"
    assert match["stream_start"] == pytest.approx(5.0, abs=2.0) and match["stream_end"] == pytest.approx(25.0, abs=2.0)
    assert match["item_start"] == pytest.approx(5.0, abs=2.0) and match["item_end"] == pytest.approx(25.0, abs=2.0)
    assert match["speed"] == pytest.approx(1.0, abs=0.01) and match["confidence"] >= 0.99
    assert lines[2] == {"event": "summary", "scanned_seconds": pytest.approx(30.0, abs=0.01), "occurrences": 1}

    # Errors before the first line: JSON errors with the HTTP status of the gRPC code.
    clip = encode(noise(1, 3.0), rate=RATE)
    error_of(await web.post("/v1/libraries/nosuch/monitor", files={"file": ("c.wav", clip)}), 404, "NOT_FOUND")
    assert (await web.post("/v1/libraries", json={"name": "textures", "model": "spectral-v1"})).status_code == 200
    message = error_of(
        await web.post("/v1/libraries/textures/monitor", files={"file": ("c.wav", clip)}), 400, "FAILED_PRECONDITION"
    )
    assert "fingerprint-v2" in message
    bad = {"file": ("x.wav", b"not audio at all" * 100)}
    error_of(await web.post("/v1/libraries/songs/monitor", files=bad), 400, "INVALID_ARGUMENT")
    error_of(await web.post("/v1/libraries/songs/monitor", files={"file": ("e.wav", b"")}), 400, "INVALID_ARGUMENT")
    error_of(await web.post("/v1/libraries/songs/monitor"), 400, "INVALID_ARGUMENT")

    # The route is documented, with its statuses.
    doc = (await web.get("/openapi.json")).json()
    operation = doc["paths"]["/v1/libraries/{library}/monitor"]["post"]
    assert "application/x-ndjson" in operation["responses"]["200"]["content"]
    assert {"400", "401", "404", "413", "503"} <= set(operation["responses"])


async def test_a_live_stream_over_a_websocket(stack) -> None:  # type: ignore[no-untyped-def]
    tracks, _ = await index(stack)
    audio = np.concatenate([noise(7, 3.0), tracks[2][seconds(10) : seconds(30)]]).astype("<f4")
    async with web_server(stack.address("gateway")) as base:
        url = base.replace("http://", "ws://") + f"/v1/libraries/songs/monitor/live?rate={RATE}&sample_type=f32le"
        async with websockets.connect(url) as ws:
            frame = RATE // 10  # 100 ms frames, as a page would send them
            for at in range(0, len(audio), frame):
                await ws.send(audio[at : at + frame].tobytes())
            await ws.send("end")  # the audio is over: the last events, then a normal close
            got = await received(ws)
            assert ws.close_code == 1000
        assert [d["event"] for d in got] == ["started", "match", "summary"], got
        assert got[1]["name"] == "song2.wav" and got[1]["stream_end"] == pytest.approx(23.0, abs=2.0)
        assert got[2]["scanned_seconds"] == pytest.approx(23.0, abs=0.01)

        # An unknown library: an error message, then the close code 4000 + the HTTP status.
        async with websockets.connect(url.replace("/songs/", "/nosuch/")) as ws:
            await ws.send(audio[:RATE].tobytes())
            messages = await received(ws)
            assert messages[-1]["error"]["code"] == "NOT_FOUND" and ws.close_code == 4404
        # A bad parameter, before the gateway is called.
        async with websockets.connect(url.replace("sample_type=f32le", "sample_type=u8")) as ws:
            messages = await received(ws)
            assert messages[-1]["error"]["code"] == "INVALID_ARGUMENT" and ws.close_code == 4400
        # A client that leaves mid-stream: the next one is served as well.
        async with websockets.connect(url) as ws:
            await ws.send(audio[: RATE * 2].tobytes())
        async with websockets.connect(url) as ws:
            await ws.send(audio[: RATE * 2].tobytes())
            await ws.send("end")
            assert [d["event"] for d in await received(ws)] == ["summary"]


def test_without_soundfile_only_16_bit_wav_is_decoded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The web image's own dependencies may lack soundfile: WAV through the standard library."""
    import io
    import sys

    from services.web.errors import HttpError
    from services.web.monitor import decoder

    monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile: ImportError
    audio = noise(3, 2.0)
    rate, channels, kind, blocks = decoder(io.BytesIO(encode(audio, rate=RATE, channels=2)), "a.wav")
    assert (rate, channels, kind) == (RATE, 2, pb.SAMPLE_TYPE_S16LE)
    assert len(b"".join(blocks)) == len(audio) * 2 * 2
    with pytest.raises(HttpError) as refused:
        decoder(io.BytesIO(encode(audio, rate=RATE, fmt="FLAC")), "a.flac")
    assert refused.value.status == 400 and "WAV only" in refused.value.message


async def test_only_live_audio_asks_for_live_decisions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """MonitorStart.live reaches the use case; the WebSocket and `audiosearch
    monitor -` (stdin) send it, a recording (NDJSON route, a CLI file) does not."""
    import argparse

    from services.cli.commands.monitor import _source
    from services.gateway.convert import monitor_request
    from services.web.monitor import live_start

    async def one(start: pb.MonitorStart):  # type: ignore[no-untyped-def]
        yield pb.MonitorRequest(start=start)

    for live in (True, False):
        start = pb.MonitorStart(library="l", sample_rate=RATE, channels=1, sample_type=pb.SAMPLE_TYPE_S16LE, live=live)
        got, _ = await monitor_request(one(start))
        assert got.live is live
    assert live_start("l", {"rate": str(RATE)}).live
    args = argparse.Namespace(library="l", min_score=0.0, rate=RATE, channels=1, file="-")
    assert _source(args)[0].live
    path = tmp_path / "a.wav"
    path.write_bytes(encode(noise(4, 1.0), rate=RATE))
    args.file = str(path)
    assert not _source(args)[0].live


def test_live_pcm_on_stdin_is_sent_as_it_comes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`audiosearch monitor -` sends what the pipe holds, not a full chunk:
    a 1 MiB read would hold 16 kHz mono audio back for 33 s."""
    import argparse
    import os
    import threading

    from services.cli.commands.monitor import _source

    r, w = os.pipe()
    with os.fdopen(r, "rb") as reader, os.fdopen(w, "wb") as writer:

        class Stdin:
            buffer = reader

        monkeypatch.setattr("sys.stdin", Stdin)
        args = argparse.Namespace(library="l", min_score=0.0, rate=RATE, channels=1, file="-")
        _, chunks = _source(args)
        writer.write(bytes(RATE // 5))  # a tenth of a second; the pipe stays open
        writer.flush()
        got: list[bytes] = []
        reading = threading.Thread(target=lambda: got.append(next(chunks)), daemon=True)
        reading.start()
        reading.join(timeout=30)
        assert got == [bytes(RATE // 5)]
