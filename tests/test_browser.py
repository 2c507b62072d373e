"""The web page in headless Chromium against the real stack: a bad upload
reported under Upload, three real sounds uploaded and paged through, the
tags of one edited, an excerpt of one searched, that one ranked first with the whole recording
drawn and the match marked, played from the match, more like it, a failed
search, a library switch, deletes; no console errors; screenshots saved
(AUDIOSEARCH_SCREENSHOT, and beside it -items and -error)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from services.embedder.models.table import MODELS
from tests.web_server import web_server

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "sonic-pi"
SCRIPT = ROOT / "tests" / "browser" / "page.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Real CC0 recordings from Debian's sonic-pi-samples (make samples).
SOUNDS = ("loop_tabla.flac", "loop_garzul.flac", "loop_compus.flac")


def tools_or_fail() -> None:
    missing = [
        what
        for what, ok in [
            (f"{SAMPLES} (make samples)", all((SAMPLES / s).is_file() for s in SOUNDS)),
            ("node", shutil.which("node") is not None),
            (
                "tests/browser/node_modules (make browser)",
                (SCRIPT.parent / "node_modules" / "playwright-core").is_dir(),
            ),
            (f"{CHROMIUM} (make browser installs Debian's chromium)", Path(CHROMIUM).is_file()),
        ]
        if not ok
    ]
    if missing:
        pytest.fail("missing for the browser test: " + ", ".join(missing))


async def test_the_page_uploads_searches_plays_and_deletes(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tools_or_fail()
    audio, rate = sf.read(SAMPLES / SOUNDS[0])
    query = tmp_path / "excerpt.wav"
    sf.write(query, audio[int(3.0 * rate) : int(6.5 * rate)], rate)  # 3.0-6.5 s of loop_tabla
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio at all, only words " * 50)
    screenshot = Path(os.environ.get("AUDIOSEARCH_SCREENSHOT", tmp_path / "page.png"))
    async with web_server(stack.address("gateway")) as base:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            base,
            str(screenshot),
            str(query),
            str(bad),
            *(str(SAMPLES / s) for s in SOUNDS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 300)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-3000:]
    seen = json.loads(lines[-1])
    assert process.returncode == 0, (seen, err.decode()[-3000:])
    # The name check runs in the browser; each model says what it is for.
    assert seen["bad_name_blocked"] is True
    assert seen["model_note"].startswith("A new library on ") and seen["library_note"].startswith("Uses ")
    model, purpose = seen["library_note"].removeprefix("Uses ").split(": ", 1)
    assert purpose == MODELS[model].info.purpose  # from GET /v1/stats, the model's own words
    # A failed upload: under Upload, its bar empty, never full; nothing under Search.
    assert seen["bad_upload"]["note"].startswith("failed: ") and seen["bad_upload"]["progress"] == 0
    assert seen["bad_upload"]["phases"] in ("uploading,failed", "uploading,indexing,failed")
    assert seen["upload_status"] == "0 of 1 added to browser." and seen["search_status_after_bad_upload"] == ""
    # Uploads: bytes, then indexing, then done.
    assert len(seen["uploads"]) == 3 and seen["progress"] == [1, 1, 1]
    assert seen["phases"] == ["uploading,indexing,done"] * 3
    # Paging: two items, then the third behind "More items".
    assert seen["more_visible"] is True and seen["more_after"] is False and len(seen["items"]) == 3
    assert seen["item_tags"] == "demoloops"
    # Tags edited on the page (PATCH /v1/items/{id}): shown at once, and stored.
    assert seen["tag_added"] == "demoloopsedited tag" and seen["tag_removed"] == "demoedited tag"
    assert seen["tag_error"].startswith("INVALID_ARGUMENT: invalid tag") and seen["tag_api"] == ["demo", "edited tag"]
    # The match: the whole item, the range marked, played from the match.
    assert seen["first"] == "loop_tabla.flac"
    start, end = seen["range"]
    assert start == pytest.approx(3.0, abs=1.0) and end == pytest.approx(6.5, abs=1.0), seen["meta"]
    assert "matches" in seen["meta"] and "of 10.7 s" in seen["meta"]
    assert seen["marked"] == pytest.approx([start, end])
    assert seen["player"]["source"].endswith("/audio?start=0&end=0")  # the whole recording
    assert seen["player"]["duration"] == pytest.approx(10.7, abs=0.1)
    assert seen["player"]["started_at"] == pytest.approx(start, abs=0.01)
    assert seen["score_note"] and seen["tags"] == "demoloops"
    assert seen["filtered_results"] == 0
    assert "like loop_tabla.flac" in seen["similar_status"] and "loop_tabla.flac" not in seen["similar"]
    # A failed search: its error under Search, the last query's waveform and results gone.
    failed = seen["failed_search"]
    assert failed["status"].startswith("INVALID_ARGUMENT") and failed["wave_drawn"] == "" and failed["query_hidden"]
    assert failed["results"] == 0 and failed["upload_status"] == "3 of 3 added to browser."
    assert seen["after_switch"] == {"results": 0, "query_hidden": True}
    assert seen["libraries_left"] == ["browser"] and "Deleted library other" in seen["library_deleted"]
    assert seen["after_delete_status"] == 404 and seen["items_left"] and seen["deleted"] not in seen["items_left"]
    assert seen["page_errors"] == []
    provoked = "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    assert seen["console_errors"] == [provoked] * 3  # nothing else: no pattern error, no favicon 404
    # The only failed loads are the three provoked: the bad upload, the bad tag and the bad search.
    assert sorted(seen["failed_loads"]) == [
        "400 PATCH /v1/items/" + str(seen["tag_api_id"]),
        "400 POST /v1/libraries/browser/items",
        "400 POST /v1/libraries/browser/search",
    ]
    assert seen["docs_title"].startswith("audiosearch") and seen["docs_operations"] >= 10
    assert seen["docs_authorize"] == 1
    assert screenshot.stat().st_size > 10_000


LISTEN_SCRIPT = ROOT / "tests" / "browser" / "listen.mjs"


async def test_the_page_listens_to_the_microphone(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Listen with Chromium's fake microphone playing a recording of an
    indexed item: "now playing" while it plays, the timeline after Stop
    (screenshots at AUDIOSEARCH_LISTEN_SCREENSHOT, and -playing beside it)."""
    tools_or_fail()
    import numpy as np
    from audiosearch.gateway.v1 import gateway_pb2 as pb
    from scipy.signal import resample_poly

    from tests.sounds import encode, music
    from tests.test_gateway import insert_stream

    rate = 22050
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="radio", model="fingerprint-v2"))
    tracks = {seed: music(seed, 60.0) for seed in (1, 2)}
    for seed, x in tracks.items():
        await stack.gateway.InsertAudio(insert_stream("radio", f"song{seed}.wav", encode(x, rate=rate)))
    # 30 s of song2 from its 0:10, at 44.1 kHz (Chromium's fake microphone's rate).
    heard = resample_poly(tracks[2][10 * rate : 40 * rate], 2, 1)
    wav = tmp_path / "heard.wav"
    sf.write(wav, np.clip(0.8 * heard, -1, 1), 2 * rate, subtype="PCM_16")
    screenshot = Path(os.environ.get("AUDIOSEARCH_LISTEN_SCREENSHOT", tmp_path / "listen.png"))
    async with web_server(stack.address("gateway")) as base:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(LISTEN_SCRIPT),
            base,
            str(screenshot),
            str(wav),
            "radio",
            "song2.wav",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 240)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-3000:]
    seen = json.loads(lines[-1])
    assert process.returncode == 0, (seen, err.decode()[-3000:])
    assert seen["stop_enabled"] is True
    assert seen["now_playing"] == "now playing: song2.wav", seen
    assert seen["status_listening"] == "Listening, in radio…"
    # After Stop: the occurrence in the timeline, the summary, nothing playing.
    assert seen["timeline"] and all("song2.wav" in entry for entry in seen["timeline"]), seen["timeline"]
    assert "its 0:1" in seen["timeline"][0]  # from about 0:10 of the item
    assert seen["status"].endswith("of audio.") and seen["now_playing_after"] == ""
    socket, refused = seen["sockets"]
    assert socket["url"] == "/v1/libraries/radio/monitor/live" and socket["sent_text"] == ["end"]
    assert socket["sent_frames"] > 50 and socket["closed"] is True
    # A library that is not fingerprint-v2: the gateway's error, said under Listen.
    assert refused["url"] == "/v1/libraries/textures/monitor/live" and refused["closed"] is True
    assert seen["wrong_library"].startswith("FAILED_PRECONDITION: ") and "fingerprint-v2" in seen["wrong_library"]
    assert seen["timeline_after_error"] == 0
    assert seen["page_errors"] == [] and seen["console_errors"] == []
    assert screenshot.stat().st_size > 10_000
