"""Monitoring's cost: a file scan's speed and a live stream's CPU.

    python bench/monitor_scan.py OUT.json [--library-hours 1.0] [--broadcast-hours 1.0]
        [--live-seconds 120] [--live-streams 2]

A real multi-process stack (`audiosearch serve`'s supervisor) on a temp
data dir; the soundtracks of eval/.cache/corpus (eval/fetch_corpus.sh),
split as eval/copies.py splits them, --library-hours of them indexed with
fingerprint-v2 through `audiosearch index`. The test broadcast is
eval/monitor.py's (segments of indexed tracks between held-out ones),
pieces of it with successive seeds joined until it lasts --broadcast-hours
(a library of an hour has too few long tracks for one piece to last that
long), written as a 16-bit WAV.

Measured:
- the scan: `audiosearch monitor broadcast.wav --json` timed on the wall
  (a new CLI process, decoding included): broadcast seconds / wall seconds,
  against the issue's target of 30x real time; the segments found (a match
  of the right item overlapping it in stream time) and the false reports (a
  match overlapping no segment of its item); the services' CPU seconds
  during the scan per hour of recording;
- live: --live-streams concurrent `audiosearch monitor - --rate 16000`
  processes (live: the gateway decides every second), each fed
  --live-seconds of the broadcast as s16le PCM at real-time pace; the
  services' CPU seconds in that time give the real-time streams one core
  keeps up with, and each stream must end within 15 s of its last sample
  (the lag: when it ended minus --live-seconds).

Without the corpus it says so and exits 0 with no figures."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, descendants, figure, merge_results, start_stack  # noqa: E402

CORPUS = ROOT / "eval" / ".cache" / "corpus"
LIBRARY = "mon"
MODEL = "fingerprint-v2"
SEED = 1234
TARGET_SCAN = 30.0  # x real time (issue 16)
KEPT_UP = 15.0  # s after the last sample
IDLE_SECONDS = 10.0
LIVE_MIN_OVERLAP = 10.0  # s of a segment a live stream must hold for it to count


def stack_cpu(stack) -> float:
    """CPU seconds the services (and their own children: Milvus Lite's
    server) have used so far."""
    total = 0.0
    for process in stack.processes.values():
        for pid in (process.pid, *descendants(process.pid)):
            try:
                total += cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


def build_broadcast(library: list, held: list, hours: float) -> tuple[np.ndarray, list]:
    """eval/monitor.py's broadcast, pieces with successive seeds joined
    (their truth shifted) until it lasts `hours`."""
    from eval.monitor import RATE, broadcast

    most = min(24, len([t for t in library if t.duration >= 40.0]) + 1)  # distinct tracks a piece takes
    parts, truth, at, seed, per_segment = [], [], 0.0, SEED, 85.0  # s: 20-90 s of track, 15-45 s of filler
    while at < hours * 3600:
        n = min(most, max(2, math.ceil((hours * 3600 - at) / per_segment) + 1))
        audio, segments = broadcast(library, held, n, seed)
        per_segment = len(audio) / RATE / len(segments)
        truth += [
            dataclasses.replace(s, stream_start=s.stream_start + at, stream_end=s.stream_end + at) for s in segments
        ]
        parts.append(audio)
        at += len(audio) / RATE
        seed += 1
    return np.concatenate(parts), truth


def score(truth: list, names: dict[Path, str], matches: list[dict]) -> tuple[int, int, int]:
    """(segments found, false reports, segments reported more than once): a
    segment is found by a match of its item overlapping it in stream time; a
    match overlapping no segment of its item is a false report."""

    def overlaps(seg, m: dict) -> bool:
        return m["stream_start"] < seg.stream_end and m["stream_end"] > seg.stream_start

    hits = [sum(m["name"] == names[s.track.path] and overlaps(s, m) for m in matches) for s in truth]
    false = sum(not any(m["name"] == names[s.track.path] and overlaps(s, m) for s in truth) for m in matches)
    return sum(h > 0 for h in hits), false, sum(h > 1 for h in hits)


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli.main", *args]


def live(env: dict[str, str], pcm: np.ndarray, rate: int, streams: int, seconds: float) -> list[dict]:
    """`streams` concurrent `audiosearch monitor -` processes, each fed
    `seconds` of `pcm` (a different stretch each) at real-time pace in 0.1 s
    chunks; each one's end time (s after its first chunk) and matches."""
    step = rate // 10
    results: list[dict] = [{} for _ in range(streams)]

    def feed(k: int) -> None:
        a = (k * round(seconds * rate)) % max(1, len(pcm) - round(seconds * rate))
        data = pcm[a : a + round(seconds * rate)]
        process = subprocess.Popen(
            cli_command("monitor", "-", "--library", LIBRARY, "--rate", str(rate), "--json"),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(process.stdout.read()), daemon=True)
        errors: list[bytes] = []
        err_reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()
        err_reader.start()
        began = time.monotonic()
        for i, b in enumerate(range(0, len(data), step)):
            time.sleep(max(0.0, began + i * 0.1 - time.monotonic()))
            process.stdin.write(data[b : b + step].tobytes())
            process.stdin.flush()
        sent = time.monotonic() - began
        process.stdin.close()
        rc = process.wait()
        ended = time.monotonic() - began
        reader.join()
        err_reader.join()
        lines = [json.loads(line) for line in out[0].decode().splitlines() if line.strip()]
        results[k] = {
            "rc": rc,
            "sent": sent,
            "ended": ended,
            "offset": a / rate,
            "matches": [m for m in lines if m.get("event") == "match"],
            "stderr": errors[0].decode()[-2000:],
        }

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--library-hours", type=float, default=1.0)
    parser.add_argument("--broadcast-hours", type=float, default=1.0)
    parser.add_argument("--live-seconds", type=float, default=120.0)
    parser.add_argument("--live-streams", type=int, default=2)
    args = parser.parse_args()
    if not any((CORPUS / "music").glob("*")):
        print(f"no corpus in {CORPUS} (fetch it with `make eval-corpus` or eval/fetch_corpus.sh): no figures")
        return 0

    from eval.copies import load_tracks, split
    from eval.monitor import RATE

    began = time.monotonic()
    library, held = split(load_tracks(CORPUS), 0.5, args.library_hours, SEED)
    library_hours = sum(t.duration for t in library) / 3600
    audio, truth = build_broadcast(library, held, args.broadcast_hours)
    broadcast_seconds = len(audio) / RATE
    print(
        f"library: {len(library)} tracks, {library_hours:.2f} h; broadcast: {broadcast_seconds / 3600:.2f} h, "
        f"{len(truth)} segments (built in {time.monotonic() - began:.0f} s)",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    files = work / "library"
    files.mkdir()
    names: dict[Path, str] = {}
    for k, t in enumerate(library):  # unique names: the catalog names an item after its file
        link = files / f"{k:03d}-{t.path.name}"
        link.symlink_to(t.path.resolve())
        names[t.path] = link.name
    wav = work / "broadcast.wav"
    sf.write(wav, audio, RATE, subtype="PCM_16")
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")

    env = {"AUDIOSEARCH_CNN14_DOWNLOAD": "false", "AUDIOSEARCH_LOG_LEVEL": "WARNING"}
    stack = start_stack(work / "data", env)
    try:
        cli_env = {**os.environ, "AUDIOSEARCH_GATEWAY": stack.addresses["gateway"]}
        t0 = time.monotonic()
        indexed = subprocess.run(
            cli_command(
                "index",
                *map(str, sorted(files.iterdir())),
                "--library",
                LIBRARY,
                "--model",
                MODEL,
                "--jobs",
                "2",
                "--json",
            ),
            env=cli_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if indexed.returncode != 0:
            raise RuntimeError(f"index failed ({indexed.returncode}): {indexed.stdout[-2000:]}{indexed.stderr[-2000:]}")
        print(f"indexed in {time.monotonic() - t0:.0f} s", flush=True)

        cpu0, t0 = stack_cpu(stack), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_cores = (stack_cpu(stack) - cpu0) / (time.monotonic() - t0)

        cpu0, t0 = stack_cpu(stack), time.perf_counter()
        scan = subprocess.run(
            cli_command("monitor", str(wav), "--library", LIBRARY, "--json"),
            env=cli_env,
            capture_output=True,
            text=True,
            check=False,
        )
        scan_wall = time.perf_counter() - t0
        scan_cpu = stack_cpu(stack) - cpu0
        if scan.returncode != 0:
            raise RuntimeError(f"monitor failed ({scan.returncode}): {scan.stdout[-2000:]}{scan.stderr[-2000:]}")
        lines = [json.loads(line) for line in scan.stdout.splitlines() if line.strip()]
        matches = [m for m in lines if m.get("event") == "match"]
        found, false, repeated = score(truth, names, matches)
        scan_load = os.getloadavg()[0]
        print(f"scan: {scan_wall:.1f} s, {len(matches)} matches", flush=True)

        cpu0, t0 = stack_cpu(stack), time.monotonic()
        streams = live(cli_env, pcm, RATE, args.live_streams, args.live_seconds)
        live_wall = time.monotonic() - t0
        live_cpu = stack_cpu(stack) - cpu0
        live_load = os.getloadavg()[0]
    finally:
        stack.stop()

    speed = broadcast_seconds / scan_wall
    cpu_per_hour = scan_cpu / (broadcast_seconds / 3600)
    per_core = args.live_streams * args.live_seconds / live_cpu if live_cpu else float("inf")
    lags = [s["ended"] - args.live_seconds for s in streams]
    kept_up = all(s["rc"] == 0 and lag <= KEPT_UP for s, lag in zip(streams, lags, strict=True))
    for s in streams:
        if s["rc"] != 0:
            print(f"a live stream failed ({s['rc']}): {s['stderr']}", flush=True)
    live_matches = sum(len(s["matches"]) for s in streams)
    live_found = live_segments = live_false = live_repeated = 0
    for s in streams:  # in the broadcast's time: the stream began `offset` s into it
        shifted = [
            {**m, "stream_start": m["stream_start"] + s["offset"], "stream_end": m["stream_end"] + s["offset"]}
            for m in s["matches"]
        ]
        end = s["offset"] + args.live_seconds
        inside = [t for t in truth if min(t.stream_end, end) - max(t.stream_start, s["offset"]) >= LIVE_MIN_OVERLAP]
        live_segments += len(inside)
        found_here, _, repeated_here = score(inside, names, shifted)
        live_found += found_here
        live_repeated += repeated_here
        live_false += score(truth, names, shifted)[1]
    scope = (
        f"{broadcast_seconds / 3600:.2f} h recording ({len(truth)} segments), {library_hours:.2f} h library "
        f"({len(library)} tracks, {MODEL})"
    )
    rows = [
        ("scan speed", f"x{speed:.1f} real time", f"target x{TARGET_SCAN:.0f}"),
        ("scan wall time", f"{scan_wall:.1f} s", f"{broadcast_seconds:.0f} s of audio, load average {scan_load:.1f}"),
        ("segments found", f"{found}/{len(truth)}", f"{false} false reports, {repeated} reported twice or more"),
        ("services' CPU per hour of recording (scan)", f"{cpu_per_hour:.0f} s", f"idle {idle_cores * 3600:.0f} s/h"),
        (
            "live: segments found",
            f"{live_found}/{live_segments}",
            f"{live_matches} matches, {live_false} false, {live_repeated} repeated",
        ),
        (
            "live streams one core keeps up with",
            f"{per_core:.1f}",
            f"{live_cpu:.1f} CPU s in {live_wall:.0f} s, load average {live_load:.1f}",
        ),
        (
            "live: max lag after the last sample",
            f"{max(lags):.1f} s",
            f"{'kept up' if kept_up else 'FELL BEHIND'} ({args.live_streams} x {args.live_seconds:g} s)",
        ),
    ]
    print()
    for a, b, c in rows:
        print(f"{a:<45} {b:>16}  {c}")
    print()
    merge_results(
        args.out,
        {
            "monitor_scan_speed": figure(
                speed,
                TARGET_SCAN,
                "x real time",
                f"`audiosearch monitor FILE` (a new CLI process, decoding included) on a {scope}; "
                f"segments found {found}/{len(truth)}, {false} false reports; 1-min load average at the end: "
                f"{scan_load:.1f} on {len(os.sched_getaffinity(0))} CPUs; baseline: the issue's target",
            ),
            "monitor_segments_found": figure(
                found,
                len(truth),
                "segments",
                f"segments of the scan with a match of the right item overlapping them ({repeated} with more than "
                f"one); {false} false reports (matches overlapping no segment of their item); baseline: the segments",
            ),
            "monitor_cpu_seconds_per_hour": figure(
                cpu_per_hour,
                3600.0,
                "CPU s per hour of recording",
                f"the services' CPU during the scan (gateway, embedder, search, catalog and their children; "
                f"idle: {idle_cores * 3600:.0f} s/h); baseline: one core for an hour",
            ),
            "monitor_live_streams_per_core": figure(
                per_core,
                1.0,
                "real-time streams",
                f"{args.live_streams} concurrent `audiosearch monitor -` streams of {args.live_seconds:g} s at "
                f"real-time pace (live: a decision every second): stream seconds / the services' CPU seconds "
                f"({live_cpu:.1f} s, idle included: {idle_cores * live_wall:.1f} s of it); "
                f"{live_matches} matches found {live_found} of the {live_segments} segments with "
                f"{LIVE_MIN_OVERLAP:g} s or more in the streams, {live_false} false reports, "
                f"{live_repeated} segments reported more than once; "
                f"1-min load average at the end: {live_load:.1f}; baseline: one stream",
            ),
            "monitor_live_max_lag_seconds": figure(
                max(lags),
                KEPT_UP,
                "s",
                f"when the slowest live stream ended after its last sample was sent "
                f"({'all kept up' if kept_up else 'one fell behind or failed'}); baseline: the {KEPT_UP:g} s allowed",
            ),
        },
    )
    print(f"merged into {args.out} in {time.monotonic() - began:.0f} s")
    return 0 if all(s["rc"] == 0 for s in streams) else 1


if __name__ == "__main__":
    raise SystemExit(main())
