"""The web page in headless Chromium against the real stack: three real
sounds uploaded, an excerpt of one searched, that one ranked first with its
time range, its segment played, then deleted; a screenshot is saved."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

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
    screenshot = Path(os.environ.get("AUDIOSEARCH_SCREENSHOT", tmp_path / "page.png"))
    async with web_server(stack.address("gateway")) as base:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            base,
            str(screenshot),
            str(query),
            *(str(SAMPLES / s) for s in SOUNDS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 240)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-3000:]
    seen = json.loads(lines[-1])
    assert process.returncode == 0, (seen, err.decode()[-3000:])
    assert len(seen["uploads"]) == 3 and seen["progress"] == [1, 1, 1]
    assert seen["first"] == "loop_tabla.flac"
    start, end = seen["range"]
    assert start == pytest.approx(3.0, abs=1.0) and end == pytest.approx(6.5, abs=1.0), seen["meta"]
    assert "matches" in seen["meta"] and "of 10.7 s" in seen["meta"]
    assert "/audio?start=" in seen["player"]["src"]
    assert seen["player"]["duration"] == pytest.approx(end - start, abs=0.05)  # the segment, not the file
    assert seen["after_delete_status"] == 404 and seen["items_left"] == 2
    assert seen["page_errors"] == []
    assert seen["docs_title"].startswith("audiosearch") and seen["docs_operations"] >= 10
    assert screenshot.stat().st_size > 10_000
