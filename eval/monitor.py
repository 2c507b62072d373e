"""`make eval-monitor`: stream monitoring measured through the real product.

The four services start in this process as eval/copies.py starts them
(fingerprint-v2). The indexed soundtracks of eval/copies.py's seeded split
go in through InsertAudioFromPath; a test broadcast is built from the same
corpus and streamed as 16-bit mono PCM to the gateway's Monitor RPC as fast
as it is taken (a file scan).

The broadcast (seeded): a held-out stretch, then `--segments` segments of
indexed tracks (20-90 s each, from a random point of the track), each
followed by 15-45 s of a held-out track (never indexed). A third of the
segments play 2% faster or slower (resampled: speed and pitch together),
segments neither start nor end in a near-silent stretch (loud_edges),
every segment gets a gain change (-6..+3 dB) and light pink noise (25 dB
SNR), and one track plays twice (another passage of it). Cuts are hard.

Measured: segments found (exactly one occurrence of the right item
overlapping it), missed, duplicated (more than one); false reports (an
occurrence overlapping no segment of its item); the start/end errors on
the stream and on the item (p50, max) and the speed error of each found
segment; the scan speed (audio seconds / wall seconds); the STARTED
latency: when the STARTED event came minus the segment's true start: in a
file scan, in stream time (its `decided_at_seconds`, the audio received when
it was decided; decisions every HOP s), live (--live: the audio sent at
real-time pace, decisions every LIVE_HOP s) in wall time since the first
chunk was sent. The 6 s target is for a live stream.

Writes eval/results/monitor.json and .md (monitor-quick.* with --quick)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "stubs"))

from audiosearch.gateway.v1 import gateway_pb2 as pb  # noqa: E402

from eval.copies import (  # noqa: E402
    LIBRARY,
    Track,
    create_library,
    index,
    load_tracks,
    report,
    run,
    split,
    start_stack,
    stop_stack,
)
from eval.distortions import _pink  # noqa: E402
from services.gateway import monitor as gateway_monitor  # noqa: E402

MODEL = "fingerprint-v2"
RATE = 16000
SPEEDS = (1.0, 1.0, 1.02, 1.0, 0.98, 1.0)  # a third at +-2%
NOISE_SNR_DB = 25.0
TARGET_ERROR = 1.0  # s
TARGET_SPEED = 0.01  # relative
TARGET_SCAN = 30.0  # x real time
TARGET_LATENCY = 6.0  # s


@dataclasses.dataclass
class Segment:
    track: Track
    stream_start: float
    stream_end: float
    item_start: float
    item_end: float
    speed: float
    gain_db: float


def read(track: Track, start: float, seconds: float) -> np.ndarray:
    info = sf.info(str(track.path))
    a = int(start * info.samplerate)
    y, rate = sf.read(str(track.path), start=a, stop=a + math.ceil(seconds * info.samplerate) + 1, dtype="float32")
    y = y.mean(axis=1) if y.ndim > 1 else y
    return soxr.resample(y, rate, RATE).astype(np.float32)


def loud_edges(x: np.ndarray, edge: float = 3.0) -> bool:
    """Its first and last `edge` s are each at least a third as loud (RMS) as the whole."""
    n = round(edge * RATE)
    rms = float(np.sqrt(np.mean(x**2)))
    return all(float(np.sqrt(np.mean(part**2))) >= rms / 3 for part in (x[:n], x[-n:]))


def broadcast(library: list[Track], held: list[Track], n: int, seed: int) -> tuple[np.ndarray, list[Segment]]:
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    truth: list[Segment] = []
    at = 0.0

    def filler() -> None:
        nonlocal at
        t = held[int(rng.integers(len(held)))]
        length = float(min(rng.uniform(15.0, 45.0), t.duration - 1.0))
        x = read(t, float(rng.uniform(0.0, max(0.0, t.duration - length))), length)[: round(length * RATE)]
        parts.append(x)
        at += len(x) / RATE

    long_enough = [t for t in library if t.duration >= 40.0]
    picks = [long_enough[k] for k in rng.choice(len(long_enough), size=n - 1, replace=False)]
    picks.insert(int(rng.integers(n // 2, n)), picks[int(rng.integers(n // 2))])  # one track twice
    filler()
    for k, t in enumerate(picks):
        speed = SPEEDS[k % len(SPEEDS)]
        length = float(min(rng.uniform(20.0, 90.0), (t.duration - 2.0) / speed))
        for _ in range(20):  # not from or into a near-silent stretch, where no boundary can be told
            item_start = float(rng.uniform(0.0, t.duration - length * speed - 1.0))
            x = read(t, item_start, length * speed)
            if loud_edges(x):
                break
        if speed != 1.0:  # played `speed` times faster: fewer samples, every frequency higher
            x = soxr.resample(x, RATE * speed, RATE).astype(np.float32)
        x = x[: round(length * RATE)]
        length = len(x) / RATE
        gain_db = float(rng.uniform(-6.0, 3.0))
        x = x * 10 ** (gain_db / 20)
        noise = _pink(len(x), rng)
        noise *= np.sqrt((float(np.mean(x**2)) or 1e-12) / 10 ** (NOISE_SNR_DB / 10) / float(np.mean(noise**2)))
        parts.append((x + noise).astype(np.float32))
        truth.append(Segment(t, at, at + length, item_start, item_start + length * speed, speed, gain_db))
        at += length
        filler()
    audio = np.concatenate(parts)
    peak = float(np.max(np.abs(audio)))
    return (audio / peak * 0.99 if peak > 1.0 else audio), truth


async def requests(audio: np.ndarray, live: bool) -> AsyncIterator[pb.MonitorRequest]:
    start = pb.MonitorStart(library=LIBRARY, sample_rate=RATE, channels=1, sample_type=pb.SAMPLE_TYPE_S16LE, live=live)
    yield pb.MonitorRequest(start=start)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    step = RATE // 10 if live else RATE * 2
    began = time.monotonic()
    for a in range(0, len(pcm), step):
        if live:
            await asyncio.sleep(max(0.0, began + a / RATE - time.monotonic()))
        yield pb.MonitorRequest(chunk=pcm[a : a + step].tobytes())


def quantiles(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.abs(np.array(values))
    return {"n": len(v), "p50": float(np.median(v)), "p90": float(np.quantile(v, 0.9)), "max": float(v.max())}


def measure(truth: list[Segment], events: list[tuple[float, pb.MonitorEvent]], live: bool) -> dict:
    ended = [e for _, e in events if e.kind == pb.MONITOR_EVENT_KIND_ENDED]
    started = [(t, e) for t, e in events if e.kind == pb.MONITOR_EVENT_KIND_STARTED]

    def overlaps(seg: Segment, r: pb.TimeRange) -> bool:
        return r.start_seconds < seg.stream_end and r.end_seconds > seg.stream_start

    per_segment, used = [], set()
    errors: dict[str, list[float]] = {k: [] for k in ("stream_start", "stream_end", "item_start", "item_end")}
    speed_errors, latencies = [], []
    for seg in truth:
        hits = [k for k, e in enumerate(ended) if e.item.id == seg.track.item_id and overlaps(seg, e.stream_range)]
        used.update(hits)
        row = {"track": seg.track.name, "stream": [seg.stream_start, seg.stream_end], "speed": seg.speed}
        row |= {"item": [seg.item_start, seg.item_end], "found": len(hits)}
        if hits:
            e = max((ended[k] for k in hits), key=lambda e: e.played_seconds)
            got = {
                "stream_start": e.stream_range.start_seconds - seg.stream_start,
                "stream_end": e.stream_range.end_seconds - seg.stream_end,
                "item_start": e.item_range.start_seconds - seg.item_start,
                "item_end": e.item_range.end_seconds - seg.item_end,
            }
            for key, value in got.items():
                errors[key].append(value)
            speed_errors.append(e.speed / seg.speed - 1.0)
            row |= {"errors": got, "speed_found": e.speed}
            first = [(t, s) for t, s in started if s.item.id == seg.track.item_id and overlaps(seg, s.stream_range)]
            if first:
                t, s = first[0]
                latency = (t if live else s.decided_at_seconds) - seg.stream_start
                latencies.append(latency)
                row["started_latency"] = latency
        per_segment.append(row)
    false = [
        {"item": e.item.name, "stream": [e.stream_range.start_seconds, e.stream_range.end_seconds]}
        for k, e in enumerate(ended)
        if k not in used
    ]
    return {
        "segments": len(truth),
        "found": sum(r["found"] == 1 for r in per_segment),
        "missed": sum(r["found"] == 0 for r in per_segment),
        "duplicated": sum(r["found"] > 1 for r in per_segment),
        "false_reports": false,
        "errors": {k: quantiles(v) for k, v in errors.items()},
        "speed_error": quantiles(speed_errors),
        "started_latency": quantiles(latencies),
        "started_latency_max_signed": max(latencies) if latencies else None,
        "per_segment": per_segment,
        "occurrences": [
            {
                "item": e.item.name,
                "stream": [e.stream_range.start_seconds, e.stream_range.end_seconds],
                "item_range": [e.item_range.start_seconds, e.item_range.end_seconds],
                "speed": e.speed,
                "confidence": e.confidence,
            }
            for e in ended
        ],
    }


async def evaluate(args: argparse.Namespace, tmp: Path) -> dict:
    began = time.monotonic()
    corpus = Path(args.corpus)
    tracks = load_tracks(corpus)
    library, held = split(tracks, args.held_out_hours, args.library_hours, args.seed)
    stack = await start_stack(tmp, MODEL, corpus)
    try:
        await create_library(stack, MODEL)
        t0 = time.monotonic()
        library, failures = await index(stack, library, workers=2)
        index_seconds = time.monotonic() - t0
        audio, truth = broadcast(library, held, args.segments, args.seed)
        seconds = len(audio) / RATE
        print(f"broadcast: {seconds:.0f} s, {len(truth)} segments; monitoring", flush=True)
        events: list[tuple[float, pb.MonitorEvent]] = []
        t0 = time.monotonic()
        async for e in stack.gateway.Monitor(requests(audio, args.live)):
            events.append((time.monotonic() - t0, e))
        elapsed = time.monotonic() - t0
    finally:
        await stop_stack(stack)
    hop = gateway_monitor.LIVE_HOP if args.live else gateway_monitor.HOP
    decisions = max(1, math.ceil(seconds / hop))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)  # noqa: S607
    result = measure(truth, events, args.live)
    result["meta"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "command": " ".join(sys.argv),
        "library_tracks": len(library),
        "library_hours": sum(t.duration for t in library) / 3600,
        "index_failures": failures,
        "index_seconds": index_seconds,
        "broadcast_seconds": seconds,
        "window": gateway_monitor.WINDOW,
        "hop": hop,
        "live": args.live,
        "scan_seconds": elapsed,
        "scan_speed": seconds / elapsed,
        "seconds_per_window": elapsed / decisions,
        "summary_occurrences": events[-1][1].occurrences if events else 0,
        "seconds": time.monotonic() - began,
    }
    return result


def fmt(q: dict | None, scale: float = 1.0, unit: str = "s") -> str:
    return "-" if q is None else f"p50 {q['p50'] * scale:.2f} {unit}, max {q['max'] * scale:.2f} {unit} (n={q['n']})"


def markdown(r: dict) -> str:
    m = r["meta"]
    lat = r["started_latency"]
    errs = [q["max"] for q in r["errors"].values() if q]
    rows = [
        ("every segment reported once", f"{r['found']}/{r['segments']}", r["found"] == r["segments"]),
        ("no reports on non-library material", str(len(r["false_reports"])), not r["false_reports"]),
        ("start/end within 1 s (stream and item)", f"max {max(errs, default=0):.2f} s", max(errs, default=9) <= 1.0),
        (
            "speed within 1%",
            fmt(r["speed_error"], 100, "%"),
            bool(r["speed_error"]) and r["speed_error"]["max"] <= TARGET_SPEED,
        ),
        (f"scan >= {TARGET_SCAN:.0f}x real time", f"x{m['scan_speed']:.1f}", m["scan_speed"] >= TARGET_SCAN),
        (
            f"STARTED within {TARGET_LATENCY:.0f} s" + ("" if m["live"] else " (file scan; the target is live's)"),
            f"max {lat['max']:.2f} s" if lat else "-",
            bool(lat) and lat["max"] <= TARGET_LATENCY,
        ),
    ]
    lines = [
        "# Stream monitoring (eval/monitor.py)",
        "",
        f"{m['date']}, commit {m['commit']}: `{m['command']}`",
        "",
        f"Library: {m['library_tracks']} tracks, {m['library_hours']:.2f} h ({MODEL}), indexed in "
        f"{m['index_seconds']:.0f} s. Broadcast: {m['broadcast_seconds']:.0f} s, {r['segments']} segments. "
        f"Decisions on {m['window']:g} s every {m['hop']:g} s, "
        f"{'live (real-time pace)' if m['live'] else 'file scan'}: "
        f"{m['scan_seconds']:.1f} s, x{m['scan_speed']:.1f} real time, {m['seconds_per_window']:.2f} s per decision.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *(f"| {a} | {b} | {'yes' if c else 'no'} |" for a, b, c in rows),
        "",
        f"Found {r['found']}, missed {r['missed']}, duplicated {r['duplicated']}, "
        f"false reports {len(r['false_reports'])} {r['false_reports'] or ''}",
        "",
        *(f"- {k} error: {fmt(q)}" for k, q in r["errors"].items()),
        f"- speed error: {fmt(r['speed_error'], 100, '%')}",
        f"- STARTED latency (stream time of the analysis point - true start): {fmt(lat)}",
        "",
        "| segment | stream | item | speed | found | stream err | item err | speed found | STARTED after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["per_segment"]:
        e = s.get("errors", {})
        err = (
            (f"{e['stream_start']:+.2f}/{e['stream_end']:+.2f}", f"{e['item_start']:+.2f}/{e['item_end']:+.2f}")
            if e
            else ("-", "-")
        )
        lines.append(
            f"| {s['track']} | {s['stream'][0]:.1f}-{s['stream'][1]:.1f} | {s['item'][0]:.1f}-{s['item'][1]:.1f} "
            f"| {s['speed']:.2f} | {s['found']} | {err[0]} | {err[1]} | {s.get('speed_found', 0):.4f} "
            f"| {s.get('started_latency', float('nan')):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="eval/.cache/corpus")
    parser.add_argument("--out", default="eval/results")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quick", action="store_true", help="a 0.5 h library and 6 segments")
    parser.add_argument("--segments", type=int, help="indexed-track segments, one of them a repeat (12; --quick 6)")
    parser.add_argument("--library-hours", type=float, help="(1.0; --quick 0.5)")
    parser.add_argument("--held-out-hours", type=float, default=0.5)
    parser.add_argument("--live", action="store_true", help="send the audio at real-time pace")
    args = parser.parse_args()
    for key, full, quick in (("segments", 12, 6), ("library_hours", 1.0, 0.5)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    results = run(evaluate, args)
    report(results, Path(args.out), f"monitor{'-quick' if args.quick else ''}{'-live' if args.live else ''}", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
