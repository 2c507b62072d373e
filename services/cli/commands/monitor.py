"""`audiosearch monitor`: every occurrence of a library's items in a long
recording or a live stream (GatewayService.Monitor, docs/monitoring.md)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli.client import stub
from services.cli.output import CliError, printable
from services.common.chunks import CHUNK_BYTES
from services.common.jsonview import monitor_event_dict

SAMPLE_BYTES = 2  # the CLI sends 16-bit PCM


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _file(path: Path, start: pb.MonitorStart) -> Iterator[bytes]:
    """The file decoded to 16-bit PCM, its channels as they are, a chunk at a time."""
    import soundfile as sf  # slow to import: only this command needs it

    frames = CHUNK_BYTES // (SAMPLE_BYTES * start.channels)
    for block in sf.blocks(str(path), blocksize=frames, dtype="int16", always_2d=True):
        yield block.astype("<i2", copy=False).tobytes()


def _source(args: argparse.Namespace) -> tuple[pb.MonitorStart, Iterator[bytes]]:
    start = pb.MonitorStart(library=args.library, sample_type=pb.SAMPLE_TYPE_S16LE, min_score=args.min_score)
    if args.file == "-":
        if not args.rate:
            raise CliError("INVALID_ARGUMENT", "raw PCM on stdin needs --rate (and --channels unless mono)")
        # stdin is live (a microphone, a radio stream): decide more often.
        start.sample_rate, start.channels, start.live = args.rate, args.channels, True
        # read1: what the pipe holds now (up to a chunk), not a full chunk,
        # which at 16 kHz mono would hold the audio back for 33 s.
        return start, iter(lambda: sys.stdin.buffer.read1(CHUNK_BYTES), b"")
    path = Path(args.file)
    if not path.is_file():
        raise CliError("NOT_FOUND", f"no such file: {args.file}")
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise CliError("INVALID_ARGUMENT", f"cannot decode {printable(args.file)}: {exc}") from None
    start.sample_rate, start.channels = info.samplerate, info.channels
    return start, _file(path, start)


def cmd_monitor(args: argparse.Namespace) -> tuple[Any, str]:
    start, chunks = _source(args)
    requests = itertools.chain([pb.MonitorRequest(start=start)], (pb.MonitorRequest(chunk=c) for c in chunks))
    summary: dict[str, Any] = {"event": "summary", "scanned_seconds": 0.0, "occurrences": 0}
    # No deadline: a live stream lasts as long as it lasts. Each event is
    # printed as it comes (JSON Lines with --json).
    for e in stub(args).Monitor(requests, timeout=None):
        if e.kind == pb.MONITOR_EVENT_KIND_SUMMARY:
            summary.update(scanned_seconds=round(e.scanned_seconds, 2), occurrences=e.occurrences)
            continue
        d = monitor_event_dict(e)
        if args.json:
            print(json.dumps(d), flush=True)
        elif e.kind == pb.MONITOR_EVENT_KIND_STARTED:
            print(f"  started: {printable(d['name'])} at {clock(d['stream_start'])}", file=sys.stderr, flush=True)
        else:
            print(
                f"{clock(d['stream_start'])}-{clock(d['stream_end'])}  {printable(d['name'])}  "
                f"{clock(d['item_start'])}-{clock(d['item_end'])}  x{d['speed']:.3f}  {d['confidence']:.3f}",
                flush=True,
            )
    text = f"{summary['occurrences']} occurrences in {clock(summary['scanned_seconds'])} of audio"
    return summary, text  # the summary: the last JSON line with --json
