"""A corpus of malformed and hostile inputs, each sent through the real
gateway (and so the real embedder, search and catalog) on loopback. Each
gets its documented status (docs/input-limits.md) and a message naming the
problem, nothing is left half-written, and afterwards every service still
answers health checks with SERVING and a normal search still finds the
reference recording.

The files are generated here: crafted headers, NaN floats, FLAC "bombs" of
hours of silence."""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import io
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from audiosearch.embedder.v1 import embedder_pb2 as emb
from audiosearch.embedder.v1 import embedder_pb2_grpc as emb_grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import status
from services.common.channels import LOCAL_SUBCHANNELS
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.embedder.audio import decode
from tests.conftest import Stack, start_stack, stop_stack
from tests.sounds import encode, sound
from tests.test_gateway import insert_stream, search_stream

# The async tests share one stack, on one event loop for the module.
shared_loop = pytest.mark.asyncio(loop_scope="module")

Code = grpc.StatusCode
OK = Code.OK

# Small limits, so that a "too long" file is cheap to make and to refuse.
MAX_SECONDS = 60.0
EMBEDDER_MAX_BYTES = 1_000_000
GATEWAY_MAX_BYTES = 2_000_000
MAX_SAMPLES = 5_000_000
LIBRARY = "hostile"

# --------------------------------------------------------------------------
# Crafted files


def wav(
    rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    fmt: int = 1,
    payload: bytes | None = None,
    frames: int = 1600,
    data_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file written byte by byte, so its header can say anything."""
    block = channels * bits // 8
    if payload is None:
        payload = bytes(frames * block)
    size = len(payload) if data_size is None else data_size
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def float_wav(samples: np.ndarray, channels: int = 1, double: bool = False) -> bytes:
    dtype = np.float64 if double else np.float32
    return wav(channels=channels, bits=64 if double else 32, fmt=3, payload=samples.astype(dtype).tobytes())


def encoded(seconds: float, rate: int, channels: int, fmt: str, subtype: str, silent: bool = True) -> bytes:
    """`seconds` of silence (or noise), written block by block."""
    buf = io.BytesIO()
    rng = np.random.default_rng(7)
    with sf.SoundFile(buf, "w", rate, channels, format=fmt, subtype=subtype) as f:
        left = round(seconds * rate)
        while left:
            n = min(left, rate * 30)
            block = np.zeros((n, channels), np.float32) if silent else 0.1 * rng.standard_normal((n, channels))
            f.write(block)
            left -= n
    return buf.getvalue()


def unknown_length(flac: bytes) -> bytes:
    """The FLAC with its STREAMINFO total-samples field zeroed: "length
    unknown", as a streamed encoder writes it. Nothing in the header then
    says how long the audio is."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    # STREAMINFO starts at byte 8; bits 108..143 (bytes 18..25, low 36 bits) are the total samples.
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


@functools.cache
def three_hours_of_silence() -> bytes:
    return encoded(3 * 3600, 8000, 1, "FLAC", "PCM_16")  # ~270 kB that decode to 86.4 M samples


@functools.cache
def many_channels() -> bytes:
    return encoded(20, 48000, 8, "FLAC", "PCM_16")  # 7.7 M samples in 8 kB


@functools.cache
def mp3(seconds: float = 10.0) -> bytes:
    return encode(sound(11, seconds), fmt="MP3")


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(n)


REFERENCE = encode(sound(1, seconds=3.0))


# --------------------------------------------------------------------------
# The stack


@dataclasses.dataclass
class Env:
    stack: Stack
    reference_id: int
    embedder: emb_grpc.EmbedderServiceStub
    path_library: str = "paths"

    @property
    def g(self):  # type: ignore[no-untyped-def]
        return self.stack.gateway

    @property
    def roots(self) -> Path:
        return self.stack.roots

    async def insert(self, data: bytes, name: str = "upload.wav", tags: list[str] | None = None, **meta: str):  # type: ignore[no-untyped-def]
        if not meta:
            return await self.g.InsertAudio(insert_stream(LIBRARY, name, data, tags))
        md = pb.InsertAudioMetadata(library=LIBRARY, name=name, tags=tags or [], **meta)
        return await self.g.InsertAudio(iter([pb.InsertAudioRequest(metadata=md, chunk=data)]))

    async def search(self, data: bytes = b"", **params: object):  # type: ignore[no-untyped-def]
        params = {"library": LIBRARY, "top_k": 3, **params}
        return await self.g.SearchAudio(search_stream(pb.SearchParams(**params), data))

    async def embed(self, data: bytes, options: emb.EmbedOptions | None = None):  # type: ignore[no-untyped-def]
        """Straight to the embedder, as another internal client would."""
        first = emb.EmbedRequest(chunk=data) if options is None else emb.EmbedRequest(options=options, chunk=data)
        return await self.embedder.Embed(iter([first]))

    async def from_path(self, path: str | Path):  # type: ignore[no-untyped-def]
        return await self.g.InsertAudioFromPath(
            pb.InsertAudioFromPathRequest(library=self.path_library, path=str(path))
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("hostile")
    limits = {
        "max_audio_seconds": MAX_SECONDS,
        "max_upload_bytes": EMBEDDER_MAX_BYTES,
        "max_decoded_samples": MAX_SAMPLES,
    }
    stack = await start_stack(tmp, limits, max_upload_bytes=GATEWAY_MAX_BYTES)
    try:
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name=LIBRARY, model="spectral-v1"))
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="paths", model="spectral-v1"))
        reference = await stack.gateway.InsertAudio(insert_stream(LIBRARY, "reference.wav", REFERENCE))
        # Files under the allowed root for InsertAudioFromPath.
        roots = stack.roots
        (roots / "notes.wav").write_bytes(b"these are notes, not audio\n" * 40)
        (roots / "empty.wav").write_bytes(b"")
        (roots / "dir.wav").mkdir()
        os.mkfifo(roots / "fifo.wav")  # reading it would block forever
        secret = tmp / "secret.wav"
        secret.write_bytes(encode(sound(2)))
        os.symlink(secret, roots / "escape.wav")
        os.symlink("/dev/zero", roots / "zero.wav")
        os.symlink(roots / "loop.wav", roots / "loop.wav")
        async with grpc.aio.insecure_channel(stack.address("embedder"), options=[LOCAL_SUBCHANNELS]) as channel:
            yield Env(stack, reference.item.id, emb_grpc.EmbedderServiceStub(channel))
    finally:
        await stop_stack(stack)


async def assert_healthy(env: Env) -> None:
    """Every service SERVING, no pending rows, and a normal search works."""
    for name in ("gateway", "embedder", "search", "catalog"):
        async with grpc.aio.insecure_channel(env.stack.address(name), options=[LOCAL_SUBCHANNELS]) as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert status.status == health_pb2.HealthCheckResponse.SERVING, name
    stats = {s.name: s for s in (await env.g.Stats(pb.StatsRequest())).libraries}
    assert stats[LIBRARY].pending_items == 0  # a refused insert leaves nothing behind
    response = await env.search(REFERENCE, top_k=1)
    assert response.results[0].item.id == env.reference_id


# --------------------------------------------------------------------------
# The corpus


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile input: what to send, the status it must get, and a part
    of the message a person reads to understand it."""

    send: Callable[[Env], Awaitable[object]]
    code: grpc.StatusCode
    message: str = ""


def upload(make: Callable[[], bytes], name: str = "upload.wav") -> Callable[[Env], Awaitable[object]]:
    return lambda env: env.insert(make(), name)


def query(make: Callable[[], bytes]) -> Callable[[Env], Awaitable[object]]:
    return lambda env: env.search(make())


NOT_AUDIO = "could not decode the upload as audio"

DECODER = {
    # Not audio at all, whatever the name says.
    "empty-upload": Case(upload(lambda: b""), Code.INVALID_ARGUMENT, "empty"),
    "one-byte": Case(upload(lambda: b"\x00"), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "random-bytes": Case(upload(lambda: random_bytes(65536)), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "text-named-wav": Case(upload(lambda: b"hello, world\n" * 100, "notes.wav"), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "png-named-mp3": Case(
        upload(lambda: b"\x89PNG\r\n\x1a\n" + random_bytes(4000), "cover.mp3"), Code.INVALID_ARGUMENT, NOT_AUDIO
    ),
    "gzipped-wav": Case(upload(lambda: gzip.compress(REFERENCE), "a.wav.gz"), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "flac-magic-then-garbage": Case(upload(lambda: b"fLaC" + random_bytes(4000, 1)), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "ogg-magic-then-garbage": Case(upload(lambda: b"OggS" + random_bytes(4000, 2)), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "mp3-sync-then-garbage": Case(
        upload(lambda: b"\xff\xfb\x90\x64" + random_bytes(70000, 3)), Code.INVALID_ARGUMENT, NOT_AUDIO
    ),
    "id3-tag-only": Case(upload(lambda: b"ID3\x04\x00\x00\x00\x00\x00\x00"), Code.INVALID_ARGUMENT, NOT_AUDIO),
    # Truncated headers.
    "wav-cut-after-riff": Case(upload(lambda: wav()[:12]), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "wav-cut-inside-fmt": Case(upload(lambda: wav()[:20]), Code.INVALID_ARGUMENT, "fmt"),
    "wav-cut-before-data": Case(upload(lambda: wav()[:36]), Code.INVALID_ARGUMENT, "data"),
    "wav-header-without-samples": Case(upload(lambda: wav()[:44]), Code.INVALID_ARGUMENT, "no samples"),
    "flac-cut-in-half": Case(upload(lambda: encode(sound(3), fmt="FLAC")[:30000]), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "wav-unknown-codec": Case(upload(lambda: wav(fmt=0x1234)), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "wav-zero-bits": Case(upload(lambda: wav(bits=0)), Code.INVALID_ARGUMENT, NOT_AUDIO),
    # Absurd sample rates and channel counts.
    "rate-0-hz": Case(upload(lambda: wav(rate=0)), Code.INVALID_ARGUMENT, "sample rate"),
    "rate-1-hz": Case(upload(lambda: wav(rate=1)), Code.INVALID_ARGUMENT, "AUDIOSEARCH_MIN_SAMPLE_RATE"),
    "rate-2-ghz": Case(upload(lambda: wav(rate=2**31 - 1)), Code.INVALID_ARGUMENT, "2147483647 Hz"),
    "rate-4-ghz-overflows": Case(upload(lambda: wav(rate=4_000_000_000)), Code.INVALID_ARGUMENT, "sample rate"),
    "channels-0": Case(upload(lambda: wav(channels=0)), Code.INVALID_ARGUMENT, "channel"),
    "channels-1000": Case(
        upload(lambda: wav(channels=1000, frames=20)), Code.INVALID_ARGUMENT, "AUDIOSEARCH_MAX_CHANNELS"
    ),
    "channels-65535": Case(upload(lambda: wav(channels=65535, frames=1)), Code.INVALID_ARGUMENT, "channels"),
    # Floating-point payloads that are not sound.
    "float-nan": Case(upload(lambda: float_wav(np.full(1600, np.nan))), Code.INVALID_ARGUMENT, "NaN"),
    "float-inf": Case(upload(lambda: float_wav(np.full(1600, np.inf))), Code.INVALID_ARGUMENT, "infinite"),
    "float-minus-inf-in-one-channel": Case(
        upload(lambda: float_wav(np.tile([0.0, -np.inf], 1600), channels=2)), Code.INVALID_ARGUMENT, "infinite"
    ),
    "double-nan-late-in-file": Case(
        upload(lambda: float_wav(np.r_[np.zeros(60000), np.nan], double=True)), Code.INVALID_ARGUMENT, "NaN"
    ),
    "float-1e30": Case(upload(lambda: float_wav(np.full(1600, 1e30))), Code.INVALID_ARGUMENT, "magnitude"),
    # Too little audio.
    "zero-frames": Case(upload(lambda: wav(frames=0)), Code.INVALID_ARGUMENT, "no samples"),
    "one-sample": Case(upload(lambda: wav(frames=1)), Code.INVALID_ARGUMENT, "AUDIOSEARCH_MIN_AUDIO_SECONDS"),
    "half-a-sample": Case(upload(lambda: wav(payload=b"\x01")), Code.INVALID_ARGUMENT, "no samples"),
    # Too much audio: hours of silence and decompression bombs.
    "flac-3h-silence": Case(upload(three_hours_of_silence), Code.RESOURCE_EXHAUSTED, "AUDIOSEARCH_MAX_AUDIO_SECONDS"),
    "flac-3h-silence-length-unknown": Case(
        upload(lambda: unknown_length(three_hours_of_silence())), Code.RESOURCE_EXHAUSTED, "decoding stopped"
    ),
    "ogg-5min-silence": Case(
        upload(lambda: encoded(300, 8000, 1, "OGG", "VORBIS")), Code.RESOURCE_EXHAUSTED, "AUDIOSEARCH_MAX_AUDIO_SECONDS"
    ),
    "mp3-2min-silence": Case(
        upload(lambda: encoded(120, 8000, 1, "MP3", "MPEG_LAYER_III")), Code.RESOURCE_EXHAUSTED, "limit is 60 s"
    ),
    "wav-61s": Case(
        upload(lambda: encoded(61, 8000, 1, "WAV", "PCM_U8")), Code.RESOURCE_EXHAUSTED, "AUDIOSEARCH_MAX_AUDIO_SECONDS"
    ),
    "flac-8ch-48k-bomb": Case(upload(many_channels), Code.RESOURCE_EXHAUSTED, "AUDIOSEARCH_MAX_DECODED_SAMPLES"),
    "flac-8ch-48k-bomb-length-unknown": Case(
        upload(lambda: unknown_length(many_channels())), Code.RESOURCE_EXHAUSTED, "AUDIOSEARCH_MAX_DECODED_SAMPLES"
    ),
    # Too many bytes: the gateway's limit, then the embedder's own.
    "over-gateway-upload-limit": Case(
        upload(lambda: random_bytes(GATEWAY_MAX_BYTES + 1)), Code.RESOURCE_EXHAUSTED, "AUDIOSEARCH_MAX_UPLOAD_BYTES"
    ),
    "over-embedder-upload-limit": Case(
        upload(lambda: encoded(20, 44100, 1, "WAV", "PCM_16", silent=False)),
        Code.RESOURCE_EXHAUSTED,
        "AUDIOSEARCH_MAX_UPLOAD_BYTES",
    ),
    # The same on the query path.
    "query-random-bytes": Case(query(lambda: random_bytes(5000, 4)), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "query-float-nan": Case(query(lambda: float_wav(np.full(1600, np.nan))), Code.INVALID_ARGUMENT, "NaN"),
    "query-flac-3h-silence": Case(query(three_hours_of_silence), Code.RESOURCE_EXHAUSTED, "limit is 60 s"),
    "query-one-sample": Case(query(lambda: wav(frames=1)), Code.INVALID_ARGUMENT, "AUDIOSEARCH_MIN_AUDIO_SECONDS"),
    # Odd but genuine audio is accepted: the content decides, not the name.
    "flac-named-mp3": Case(upload(lambda: encode(sound(4), fmt="FLAC"), "song.mp3"), OK),
    "wav-data-size-lies-huge": Case(upload(lambda: wav(frames=8000, data_size=0xFFFFFFFF)), OK),
    "ten-seconds-of-silence": Case(upload(lambda: encoded(10, 16000, 1, "WAV", "PCM_16")), OK),
    "mp3-cut-in-half": Case(upload(lambda: mp3()[: len(mp3()) // 2]), OK),
}


def embed(data: bytes, **options: object) -> Callable[[Env], Awaitable[object]]:
    return lambda env: env.embed(data, emb.EmbedOptions(**options) if options else None)


EMBEDDER = {
    # Options the embedder validates itself, for any internal client.
    "embedder-window-nan": Case(embed(REFERENCE, window_seconds=float("nan")), Code.INVALID_ARGUMENT, "window"),
    "embedder-window-1e9": Case(embed(REFERENCE, window_seconds=1e9), Code.INVALID_ARGUMENT, "window"),
    "embedder-hop-1us": Case(
        embed(REFERENCE, model="spectral-v1", window_seconds=1.0, hop_seconds=1e-6), Code.INVALID_ARGUMENT, "hop"
    ),
    "embedder-unknown-model": Case(embed(REFERENCE, model="../../etc/passwd"), Code.INVALID_ARGUMENT, "unknown model"),
    "embedder-model-without-weights": Case(embed(REFERENCE, model="panns-cnn14"), Code.FAILED_PRECONDITION, "weights"),
    "embedder-no-options": Case(embed(REFERENCE), Code.INVALID_ARGUMENT, "options"),
    "embedder-empty-stream": Case(lambda env: env.embedder.Embed(iter([])), Code.INVALID_ARGUMENT, "options"),
    "embedder-over-upload-limit": Case(
        embed(random_bytes(EMBEDDER_MAX_BYTES + 1), model="spectral-v1"),
        Code.RESOURCE_EXHAUSTED,
        "AUDIOSEARCH_MAX_UPLOAD_BYTES",
    ),
    "embedder-nan-audio": Case(
        embed(float_wav(np.full(1600, np.nan)), model="spectral-v1"), Code.INVALID_ARGUMENT, "NaN"
    ),
}

LONG = "x" * 70_000
# Names far past every limit: a message that echoed one whole would
# outgrow gRPC's 8 KiB metadata limit (RESOURCE_EXHAUSTED "Stream removed").
TEN_K = "n" * 10_000
ONE_MB = "m" * 1_000_000
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "song\u202e3pm.exe" shows as "songexe.mp3"
MAX_DETAILS_BYTES = 1024  # services/common/text.py MESSAGE_LIMIT


def create_library(**fields: object) -> Callable[[Env], Awaitable[object]]:
    fields = {"model": "spectral-v1", **fields}
    return lambda env: env.g.CreateLibrary(pb.CreateLibraryRequest(**fields))


def insert_named(
    name: str, seed: int, tags: list[str] | None = None, **meta: str
) -> Callable[[Env], Awaitable[object]]:
    return lambda env: env.insert(encode(sound(seed, 0.5)), name, tags, **meta)


def token(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode()


FIELDS = {
    # Library names: control characters, SQL, length.
    "library-name-escape-sequence": Case(create_library(name="\x1b[31mred"), Code.INVALID_ARGUMENT, "library name"),
    "library-name-nul": Case(create_library(name="ab\x00c"), Code.INVALID_ARGUMENT, "library name"),
    "library-name-sql": Case(create_library(name="x'; DROP TABLE library;--"), Code.INVALID_ARGUMENT, "library name"),
    "library-name-65-chars": Case(create_library(name="a" * 65), Code.INVALID_ARGUMENT, "1-64"),
    "library-name-empty": Case(create_library(name=""), Code.INVALID_ARGUMENT, "library name"),
    "library-name-path": Case(create_library(name="../etc"), Code.INVALID_ARGUMENT, "library name"),
    "library-name-unicode-digit": Case(create_library(name="a\u0661"), Code.INVALID_ARGUMENT, "library name"),
    "library-name-trailing-newline": Case(create_library(name="abc\n"), Code.INVALID_ARGUMENT, "library name"),
    "library-description-1025": Case(
        create_library(name="desc", description="d" * 1025), Code.INVALID_ARGUMENT, "description"
    ),
    "library-unknown-model": Case(create_library(name="m", model="nope"), Code.INVALID_ARGUMENT, "nope"),
    "library-taken": Case(create_library(name=LIBRARY), Code.ALREADY_EXISTS, LIBRARY),
    "library-window-nan": Case(create_library(name="w1", window_seconds=float("nan")), Code.INVALID_ARGUMENT, "window"),
    "library-window-infinite": Case(
        create_library(name="w2", window_seconds=float("inf"), hop_seconds=1.0), Code.INVALID_ARGUMENT, "window"
    ),
    # Item metadata.
    "item-name-sql": Case(insert_named("x'); DELETE FROM audio_item;--", 21), OK),  # stored verbatim
    "item-name-513-chars": Case(insert_named("n" * 513, 22), Code.INVALID_ARGUMENT, "name"),
    "item-name-empty": Case(insert_named("", 23), Code.INVALID_ARGUMENT, "name"),
    "item-name-control-characters": Case(insert_named("a\x00b\x1b[2J\r\n", 24), Code.INVALID_ARGUMENT, "name"),
    "tag-256-chars": Case(insert_named("t", 25, ["t" * 256]), Code.INVALID_ARGUMENT, "tag"),
    "tag-only-whitespace": Case(insert_named("t", 26, [" \t "]), Code.INVALID_ARGUMENT, "tag"),
    "tag-control-characters": Case(insert_named("t", 27, ["a\x00b"]), Code.INVALID_ARGUMENT, "tag"),
    "too-many-tags": Case(insert_named("t", 28, [f"t{i}" for i in range(10_000)]), Code.INVALID_ARGUMENT, "tags"),
    "source-uri-70k": Case(insert_named("t", 29, source_uri=LONG), Code.INVALID_ARGUMENT, "source_uri"),
    "idempotency-key-129-chars": Case(
        insert_named("k", 32, idempotency_key="k" * 129), Code.INVALID_ARGUMENT, "idempotency_key"
    ),
    "idempotency-key-control-characters": Case(
        insert_named("k", 33, idempotency_key="a\x00\x1b"), Code.INVALID_ARGUMENT, "idempotency_key"
    ),
    "idempotency-key-trailing-newline": Case(
        insert_named("k", 34, idempotency_key="key\n"), Code.INVALID_ARGUMENT, "idempotency_key"
    ),
    "metadata-missing": Case(
        lambda env: env.g.InsertAudio(iter([pb.InsertAudioRequest(chunk=REFERENCE)])), Code.INVALID_ARGUMENT, "metadata"
    ),
    "insert-unknown-library": Case(
        lambda env: env.g.InsertAudio(insert_stream("nolib", "a.wav", REFERENCE)), Code.NOT_FOUND, "nolib"
    ),
    "insert-sql-library": Case(
        lambda env: env.g.InsertAudio(insert_stream("x' OR '1'='1", "a.wav", REFERENCE)), Code.NOT_FOUND, "OR"
    ),
    # Names of 10,000 characters and of 1 MB: refused with a short message.
    "library-name-10k": Case(create_library(name=TEN_K), Code.INVALID_ARGUMENT, "(10000 characters)"),
    "library-name-1mb": Case(create_library(name=ONE_MB), Code.INVALID_ARGUMENT, "(1000000 characters)"),
    "library-model-10k": Case(create_library(name="long-model", model=TEN_K), Code.INVALID_ARGUMENT, "model"),
    "library-model-1mb": Case(create_library(name="long-model", model=ONE_MB), Code.INVALID_ARGUMENT, "model"),
    "library-description-1mb": Case(
        create_library(name="long-desc", description=ONE_MB), Code.INVALID_ARGUMENT, "description"
    ),
    "item-name-10k": Case(insert_named(TEN_K, 35), Code.INVALID_ARGUMENT, "got 10000"),
    "item-name-1mb": Case(insert_named(ONE_MB, 36), Code.INVALID_ARGUMENT, "got 1000000"),
    "tag-10k": Case(insert_named("t", 37, [TEN_K]), Code.INVALID_ARGUMENT, "(10000 characters)"),
    "tag-1mb": Case(insert_named("t", 38, [ONE_MB]), Code.INVALID_ARGUMENT, "(1000000 characters)"),
    "source-uri-1mb": Case(insert_named("t", 39, source_uri=ONE_MB), Code.INVALID_ARGUMENT, "source_uri"),
    "idempotency-key-1mb": Case(insert_named("k", 40, idempotency_key=ONE_MB), Code.INVALID_ARGUMENT, "idempotency"),
    "insert-library-10k": Case(
        lambda env: env.g.InsertAudio(insert_stream(TEN_K, "a.wav", REFERENCE)), Code.NOT_FOUND, "(10000 characters)"
    ),
    "search-library-1mb": Case(lambda env: env.search(REFERENCE, library=ONE_MB), Code.NOT_FOUND, "characters)"),
    "search-100k-tags": Case(  # each an SQL parameter: past what SQLite allows (32766)
        lambda env: env.search(REFERENCE, tags=[f"t{i}" for i in range(100_000)]), Code.INVALID_ARGUMENT, "tags"
    ),
    "search-tag-10k": Case(lambda env: env.search(REFERENCE, tags=[TEN_K]), Code.INVALID_ARGUMENT, "tag"),
    "list-library-10k": Case(
        lambda env: env.g.ListAudio(pb.ListAudioRequest(library=TEN_K)), Code.NOT_FOUND, "(10000 characters)"
    ),
    "list-tag-1mb": Case(
        lambda env: env.g.ListAudio(pb.ListAudioRequest(library=LIBRARY, tag=ONE_MB)), Code.INVALID_ARGUMENT, "tag"
    ),
    "delete-library-10k": Case(
        lambda env: env.g.DeleteLibrary(pb.DeleteLibraryRequest(name=TEN_K)), Code.NOT_FOUND, "(10000 characters)"
    ),
    # Format characters that would disguise a stored name on the page and in listings.
    "item-name-rlo": Case(insert_named(f"song{RLO}3pm.exe", 41), Code.INVALID_ARGUMENT, "U+202E"),
    "item-name-zero-width-space": Case(insert_named("a\u200bb.wav", 42), Code.INVALID_ARGUMENT, "U+200B"),
    "item-name-bom": Case(
        insert_named("\ufeffa.wav", 43), Code.INVALID_ARGUMENT, "U+FEFF (ZERO WIDTH NO-BREAK SPACE) at position 1 of"
    ),
    "item-name-isolate": Case(insert_named("a\u2066b.wav", 44), Code.INVALID_ARGUMENT, "U+2066"),
    "item-name-line-separator": Case(insert_named("a\u2028b.wav", 45), Code.INVALID_ARGUMENT, "U+2028"),
    "item-name-c1-control": Case(insert_named("a\x9bb.wav", 46), Code.INVALID_ARGUMENT, "U+009B"),
    "item-name-noncharacter": Case(insert_named("a\uffffb.wav", 47), Code.INVALID_ARGUMENT, "U+FFFF"),
    "tag-rlo": Case(insert_named("t", 48, [f"evil{RLO}"]), Code.INVALID_ARGUMENT, "U+202E"),
    "tag-rlm": Case(insert_named("t", 49, ["a\u200fb"]), Code.INVALID_ARGUMENT, "U+200F"),
    "source-uri-rlo": Case(insert_named("t", 50, source_uri=f"upload:a{RLO}.wav"), Code.INVALID_ARGUMENT, "U+202E"),
    "description-rlo": Case(
        create_library(name="desc-rlo", description=f"fine\nthen {RLO}"), Code.INVALID_ARGUMENT, "U+202E"
    ),
    "search-tag-rlo": Case(lambda env: env.search(REFERENCE, tags=[RLO]), Code.INVALID_ARGUMENT, "U+202E"),
    # Unknown ids.
    "get-unknown-id": Case(lambda env: env.g.GetAudio(pb.GetAudioRequest(id=999_999)), Code.NOT_FOUND, "999999"),
    "get-id-0": Case(lambda env: env.g.GetAudio(pb.GetAudioRequest(id=0)), Code.NOT_FOUND),
    "get-id-negative": Case(lambda env: env.g.GetAudio(pb.GetAudioRequest(id=-1)), Code.NOT_FOUND),
    "get-id-int64-max": Case(lambda env: env.g.GetAudio(pb.GetAudioRequest(id=2**63 - 1)), Code.NOT_FOUND),
    "delete-id-int64-min": Case(lambda env: env.g.DeleteAudio(pb.DeleteAudioRequest(id=-(2**63))), Code.NOT_FOUND),
    "delete-unknown-library": Case(
        lambda env: env.g.DeleteLibrary(pb.DeleteLibraryRequest(name="x'; --")), Code.NOT_FOUND
    ),
    "more-like-unknown-item": Case(lambda env: env.search(library="", item_id=424242), Code.NOT_FOUND, "424242"),
    # Out-of-range numbers.
    "top-k-0-is-the-default": Case(lambda env: env.search(REFERENCE, top_k=0), OK),
    "top-k-negative": Case(lambda env: env.search(REFERENCE, top_k=-(2**31)), Code.INVALID_ARGUMENT, "top_k"),
    "top-k-over-max": Case(lambda env: env.search(REFERENCE, top_k=101), Code.INVALID_ARGUMENT, "top_k"),
    "top-k-int32-max": Case(lambda env: env.search(REFERENCE, top_k=2**31 - 1), Code.INVALID_ARGUMENT, "top_k"),
    "min-score-nan": Case(
        lambda env: env.search(REFERENCE, min_score=float("nan")), Code.INVALID_ARGUMENT, "min_score"
    ),
    "search-tag-too-long": Case(lambda env: env.search(REFERENCE, tags=["x" * 300]), Code.INVALID_ARGUMENT, "tag"),
    "list-page-size-negative": Case(
        lambda env: env.g.ListAudio(pb.ListAudioRequest(library=LIBRARY, page_size=-1)),
        Code.INVALID_ARGUMENT,
        "page_size",
    ),
    "list-page-token-garbage": Case(
        lambda env: env.g.ListAudio(pb.ListAudioRequest(page_token="!!not-a-token")),
        Code.INVALID_ARGUMENT,
        "page_token",
    ),
    "list-page-token-huge-id": Case(
        lambda env: env.g.ListAudio(pb.ListAudioRequest(page_token=token(b"after:" + b"9" * 30))),
        Code.INVALID_ARGUMENT,
        "page_token",
    ),
    # Server-side paths (AUDIOSEARCH_ALLOWED_ROOTS).
    "path-etc-passwd": Case(lambda env: env.from_path("/etc/passwd"), Code.PERMISSION_DENIED, "outside"),
    "path-dot-dot": Case(
        lambda env: env.from_path(f"{env.roots}/../../../../etc/passwd"), Code.PERMISSION_DENIED, "outside"
    ),
    "path-symlink-out": Case(lambda env: env.from_path(env.roots / "escape.wav"), Code.PERMISSION_DENIED, "outside"),
    "path-symlink-dev-zero": Case(lambda env: env.from_path(env.roots / "zero.wav"), Code.PERMISSION_DENIED),
    "path-relative": Case(lambda env: env.from_path("relative.wav"), Code.INVALID_ARGUMENT, "absolute"),
    "path-home": Case(lambda env: env.from_path("~/x.wav"), Code.INVALID_ARGUMENT, "absolute"),
    "path-url": Case(lambda env: env.from_path("file:///etc/passwd"), Code.INVALID_ARGUMENT, "absolute"),
    "path-empty": Case(lambda env: env.from_path(""), Code.INVALID_ARGUMENT, "absolute"),
    "path-directory": Case(lambda env: env.from_path(env.roots / "dir.wav"), Code.NOT_FOUND),
    "path-fifo": Case(lambda env: env.from_path(env.roots / "fifo.wav"), Code.NOT_FOUND),
    "path-symlink-loop": Case(lambda env: env.from_path(env.roots / "loop.wav"), Code.NOT_FOUND),
    "path-missing": Case(lambda env: env.from_path(env.roots / "none.wav"), Code.NOT_FOUND),
    "path-not-audio": Case(lambda env: env.from_path(env.roots / "notes.wav"), Code.INVALID_ARGUMENT, NOT_AUDIO),
    "path-empty-file": Case(lambda env: env.from_path(env.roots / "empty.wav"), Code.INVALID_ARGUMENT, "empty"),
    "path-nul": Case(lambda env: env.from_path(f"{env.roots}/a\x00b.wav"), Code.INVALID_ARGUMENT, "path"),
    "path-name-too-long": Case(
        lambda env: env.from_path(f"{env.roots}/{'a' * 300}.wav"), Code.INVALID_ARGUMENT, "path"
    ),
}


def params(cases: dict[str, Case]) -> list[object]:
    return [pytest.param(case, id=name) for name, case in cases.items()]


async def check(env: Env, case: Case) -> None:
    try:
        await case.send(env)
        code, details = OK, ""
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
    await assert_healthy(env)  # whatever the answer was
    assert code == case.code, details[:2000]
    assert case.message.lower() in details.lower(), details[:2000]
    assert len(details.encode()) <= MAX_DETAILS_BYTES, details[:2000]
    assert "internal error" not in details.lower() and "Traceback" not in details


def test_the_corpus_is_large_enough() -> None:
    refused = [c for c in [*DECODER.values(), *EMBEDDER.values(), *FIELDS.values()] if c.code != OK]
    assert len(refused) >= 30


@pytest.mark.parametrize("case", params(DECODER))
@shared_loop
async def test_decoder_corpus(env: Env, case: Case) -> None:
    await check(env, case)


@pytest.mark.parametrize("case", params(EMBEDDER))
@shared_loop
async def test_embedder_corpus(env: Env, case: Case) -> None:
    await check(env, case)


@pytest.mark.parametrize("case", params(FIELDS))
@shared_loop
async def test_field_corpus(env: Env, case: Case) -> None:
    await check(env, case)


@shared_loop
async def test_sql_in_names_is_stored_verbatim_and_harms_nothing(env: Env) -> None:
    name = "r'); DROP TABLE audio_item; --"
    item = (await env.insert(encode(sound(31, 0.5)), name)).item
    assert (await env.g.GetAudio(pb.GetAudioRequest(id=item.id))).item.name == name
    listed = await env.g.ListAudio(pb.ListAudioRequest(library=LIBRARY, page_size=1000))
    assert env.reference_id in {i.id for i in listed.items}
    libraries = {lib.name for lib in (await env.g.ListLibraries(pb.ListLibrariesRequest())).libraries}
    assert {LIBRARY, "paths"} <= libraries
    await assert_healthy(env)


@shared_loop
async def test_truncated_mp3_decodes_to_what_is_there(env: Env) -> None:
    """Regression: the header of a truncated MP3 still says 10 s; decoding
    used to pad the missing 5 s with repeats of a stale buffer."""
    half = mp3()[: len(mp3()) // 2]
    with sf.SoundFile(io.BytesIO(half)) as f:
        declared = f.frames / f.samplerate
    decoded = decode(half, max_seconds=60, target_rate=16000)
    assert declared == pytest.approx(10.0, abs=0.1) and decoded.duration < 5.5
    assert len(decoded.samples) == pytest.approx(decoded.duration * 16000, abs=64)
    item = (await env.insert(half, "half.mp3")).item
    assert item.duration_seconds == pytest.approx(decoded.duration)


def test_decoding_stops_at_the_limit_without_a_declared_length() -> None:
    """Three hours of FLAC silence that does not declare its length is
    refused by the streaming check, just past the limit."""
    bomb = unknown_length(three_hours_of_silence())
    with sf.SoundFile(io.BytesIO(bomb)) as f:
        assert f.frames >= 1 << 62  # libsndfile: length unknown
    with pytest.raises(ResourceExhausted, match="decoding stopped"):
        decode(bomb, max_seconds=5, target_rate=8000)
    # Under the limit, the same stream decodes to its real length.
    short = unknown_length(encoded(2, 8000, 1, "FLAC", "PCM_16"))
    assert decode(short, max_seconds=5, target_rate=8000).duration == pytest.approx(2.0)
    with pytest.raises(InvalidArgument):
        decode(unknown_length(encoded(0.001, 8000, 1, "FLAC", "PCM_16")), max_seconds=5, target_rate=8000)


async def test_the_error_map_bounds_every_message() -> None:
    """The backstop: whatever code raised it, however much of the request
    it quotes, no status message outgrows the trailer. Without it, a
    message of 10,000 characters could reach the client as
    RESOURCE_EXHAUSTED "Stream removed" instead of its own code: gRPC
    refuses metadata past 8 KiB, at random up to its hard limit."""

    async def quoting(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise InvalidArgument(f"no such thing as {request.decode()!r}")

    async def crashing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise KeyError(request.decode())

    handlers = {
        "Quote": grpc.unary_unary_rpc_method_handler(quoting),
        "Crash": grpc.unary_unary_rpc_method_handler(crashing),
    }
    server = grpc.aio.server(interceptors=[status.ErrorInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Hostile", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[LOCAL_SUBCHANNELS]) as channel:
            for method, code in (("Quote", Code.INVALID_ARGUMENT), ("Crash", Code.INTERNAL)):
                for text in ("n" * 10_000, "é" * 10_000, "%" * 5000, RLO * 3000):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await channel.unary_unary(f"/test.Hostile/{method}")(text.encode())
                    details = info.value.details() or ""
                    assert info.value.code() == code, details[:300]
                    assert len(details.encode()) <= MAX_DETAILS_BYTES and details.endswith("bytes]"), details[-100:]
    finally:
        await server.stop(None)


def test_messages_passed_on_from_another_service_are_bounded() -> None:
    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return Code.NOT_FOUND

        def details(self) -> str:
            return "x" * 100_000

    exc = status.from_rpc_error(Failed(), "catalog")
    assert isinstance(exc, NotFound) and len(exc.message.encode()) <= MAX_DETAILS_BYTES
