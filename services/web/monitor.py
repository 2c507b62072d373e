"""Monitoring over HTTP (GatewayService.Monitor, docs/monitoring.md): a
recording uploaded as a file, answered as NDJSON, one event a line; and a
live stream over a WebSocket, binary PCM frames in, one JSON text message
per event out. Both forward each event as the gateway sends it.

Decoding a file needs soundfile (any format libsndfile reads); without it
only 16-bit PCM WAV is read (the standard library's `wave`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import wave
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc
from fastapi import WebSocket, WebSocketDisconnect

from services.common import reasons
from services.common.chunks import CHUNK_BYTES
from services.common.jsonview import monitor_event_dict
from services.web.errors import HttpError
from services.web.limits import MAX_AUTHORIZATION

SAMPLE_TYPES = {"f32le": pb.SAMPLE_TYPE_F32LE, "s16le": pb.SAMPLE_TYPE_S16LE}
NDJSON_DOC = (
    'One JSON object a line: `event` "started" (an occurrence found) or "match" (it is over), with `id`, '
    "`name`, `stream_start`, `stream_end`, `item_start`, `item_end`, `played_seconds`, `speed`, `confidence` "
    '(seconds as numbers); the last line `event` "summary" with `scanned_seconds` and `occurrences`.'
)
END = "end"  # the text message that ends a live stream's audio (its last events still come)


def line(e: pb.MonitorEvent) -> bytes:
    return json.dumps(monitor_event_dict(e)).encode() + b"\n"


# A recording: decoded here, sent as float samples (or 16-bit ones as they are).


def decoder(f: IO[bytes], name: str) -> tuple[int, int, int, Iterator[bytes]]:
    """(sample rate, channels, sample type, PCM blocks) of an audio file; 400 if it is not one."""
    try:
        import soundfile as sf
    except ImportError:  # the web image's dependencies: WAV only
        return _wave(f, name)
    try:
        info = sf.info(f)
        f.seek(0)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise HttpError(400, "INVALID_ARGUMENT", f"cannot decode {name}: {exc}", reason=reasons.NOT_AUDIO) from None
    frames = CHUNK_BYTES // (4 * info.channels)
    blocks = (b.astype("<f4", copy=False).tobytes() for b in sf.blocks(f, blocksize=frames, dtype="float32"))
    return info.samplerate, info.channels, pb.SAMPLE_TYPE_F32LE, blocks


def _wave(f: IO[bytes], name: str) -> tuple[int, int, int, Iterator[bytes]]:
    try:
        w = wave.open(f, "rb")
    except (wave.Error, EOFError) as exc:
        raise HttpError(
            400, "INVALID_ARGUMENT", f"cannot decode {name} (WAV only here): {exc}", reason=reasons.NOT_AUDIO
        ) from None
    if w.getsampwidth() != 2:
        raise HttpError(
            400,
            "INVALID_ARGUMENT",
            f"{name}: only 16-bit PCM WAV can be decoded here",
            reason=reasons.UNSUPPORTED_AUDIO_FORMAT,
        )
    frames = CHUNK_BYTES // (2 * w.getnchannels())
    return w.getframerate(), w.getnchannels(), pb.SAMPLE_TYPE_S16LE, iter(lambda: w.readframes(frames), b"")


async def send_file(call: Any, start: pb.MonitorStart, blocks: Iterator[bytes]) -> None:
    """The start, then the blocks (each decoded in a thread), one write at a
    time, so gRPC flow control paces them. A write refused because the call
    is over (an unknown library, say) stops quietly: the reader reports the
    call's own status. With a request iterator instead, gRPC could report
    that refused write as INTERNAL ("Internal error from Core")."""
    try:
        await call.write(pb.MonitorRequest(start=start))
        while (block := await asyncio.to_thread(next, blocks, None)) is not None:
            if block:
                await call.write(pb.MonitorRequest(chunk=block))
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass


async def ndjson(call: Any, writer: asyncio.Task) -> AsyncIterator[bytes]:
    """The NDJSON body of the call's events, once the first has come (errors
    before it are HttpErrors); `writer` sends the audio meanwhile."""
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        writer.cancel()
        raise HttpError.from_rpc(exc) from None
    if first is grpc.aio.EOF:
        writer.cancel()
        raise HttpError(500, "INTERNAL", "the gateway ended the stream without a summary")

    async def body() -> AsyncIterator[bytes]:
        try:
            yield line(first)
            while (e := await call.read()) is not grpc.aio.EOF:
                yield line(e)
        except grpc.aio.AioRpcError as exc:  # after the first line: the error is the last line
            yield json.dumps(HttpError.from_rpc(exc).body()).encode() + b"\n"
        finally:
            writer.cancel()
            call.cancel()  # a no-op once it is over; stops the scan if the client left

    return body()


# A live stream over a WebSocket.


def ws_token(ws: WebSocket) -> tuple[tuple[str, str], ...] | None:
    """The bearer token: `?access_token=` (browsers cannot set headers on a
    WebSocket), else the Authorization header."""
    token = ws.query_params.get("access_token")
    value = f"Bearer {token}" if token else ws.headers.get("authorization")
    if not value:
        return None
    if len(value) > MAX_AUTHORIZATION or not (value.isascii() and value.isprintable()):
        message = f"the token must be at most {MAX_AUTHORIZATION} printable ASCII characters"
        raise HttpError(401, "UNAUTHENTICATED", message)
    return (("authorization", value),)


def live_start(library: str, params: Any) -> pb.MonitorStart:
    """The MonitorStart of `?rate=&channels=&sample_type=&min_score=` (live:
    the audio comes at its own pace); the gateway checks the ranges."""
    try:
        rate = int(params.get("rate", ""))
        channels = int(params.get("channels", "1"))
        min_score = float(params.get("min_score", "0"))
    except ValueError:
        raise HttpError(
            400,
            "INVALID_ARGUMENT",
            "rate and channels must be integers, min_score a number",
            reason=reasons.INVALID_FIELD,
        ) from None
    kind = params.get("sample_type", "f32le").lower()
    if kind not in SAMPLE_TYPES:
        raise HttpError(
            400,
            "INVALID_ARGUMENT",
            f"sample_type must be one of {', '.join(SAMPLE_TYPES)}",
            reason=reasons.UNSUPPORTED_AUDIO_FORMAT,
        )
    return pb.MonitorStart(
        library=library,
        sample_rate=rate,
        channels=channels,
        sample_type=SAMPLE_TYPES[kind],
        min_score=min_score,
        live=True,  # the WebSocket's audio comes at its own pace: decide more often
    )


async def live(ws: WebSocket, gateway: pb_grpc.GatewayServiceStub, library: str) -> None:
    """Frames in, events out, until the client sends `end` (its last events
    follow, then a normal close) or closes (the scan is cancelled). An error
    is a last text message {"error": ...} and the close code 4000 + its HTTP status."""
    await ws.accept()
    try:
        start, metadata = live_start(library, ws.query_params), ws_token(ws)
    except HttpError as exc:
        await close_with(ws, exc)
        return
    call = gateway.Monitor(metadata=metadata)  # no deadline: a live stream lasts as long as it lasts
    sender = asyncio.create_task(forward(ws, call))
    try:
        await call.write(pb.MonitorRequest(start=start))
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                call.cancel()
                break
            if message.get("bytes"):
                await call.write(pb.MonitorRequest(chunk=message["bytes"]))  # backpressure: one frame at a time
            elif message.get("text") == END:
                await call.done_writing()
                break
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, WebSocketDisconnect):
        pass  # the call failed (forward() reports it) or the client left
    await sender


async def forward(ws: WebSocket, call: Any) -> None:
    try:
        while (e := await call.read()) is not grpc.aio.EOF:
            await ws.send_text(json.dumps(monitor_event_dict(e)))
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            await close_with(ws, HttpError.from_rpc(exc))
        return
    except (asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.close(1000)


async def close_with(ws: WebSocket, error: HttpError) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.send_text(json.dumps(error.body()))
        await ws.close(4000 + error.status, error.code)
