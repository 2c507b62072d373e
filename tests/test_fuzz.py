"""Property-based fuzzing (hypothesis) of the decoder and of request
validation, directly and through the real gateway.

One settings profile, derandomized with a fixed number of examples, so a
run is deterministic and short. What fuzzing found is kept as explicit
regression cases: `@example`s on the properties, and plain tests."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import struct
import unicodedata

import grpc
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from audiosearch.gateway.v1 import gateway_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.catalog.paging import decode_token, encode_token
from services.catalog.rules import normalise_tag, validate_library_name
from services.common import uploads
from services.common.channels import LOCAL_SUBCHANNELS
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.text import JOINERS, MESSAGE_LIMIT, QUOTE_LIMIT, bounded, check_text, quoted
from services.embedder.audio import MAX_AMPLITUDE, Limits, decode
from tests.conftest import Stack, start_stack, stop_stack
from tests.sounds import encode, sound
from tests.test_gateway import search_stream

settings.register_profile(
    "audiosearch-fuzz",
    max_examples=100,
    derandomize=True,  # the same examples on every run and machine
    database=None,  # nothing written to .hypothesis/
    deadline=None,  # no timing thresholds
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ = settings.get_profile("audiosearch-fuzz")

# --------------------------------------------------------------------------
# The decoder

MAX_SECONDS = 5.0
TARGET_RATE = 16000
LIMITS = Limits(max_bytes=1 << 20, min_seconds=0.01, max_channels=16, max_samples=2_000_000)


def small(fmt: str, rate: int, channels: int, subtype: str) -> bytes:
    samples = sound(5, seconds=0.3, rate=rate)
    data = samples if channels == 1 else np.stack([samples] * channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


SEEDS = [
    small("WAV", 8000, 1, "PCM_16"),
    small("WAV", 44100, 2, "FLOAT"),
    small("WAV", 16000, 1, "PCM_U8"),
    small("FLAC", 22050, 2, "PCM_16"),
    small("OGG", 16000, 1, "VORBIS"),
    small("MP3", 16000, 1, "MPEG_LAYER_III"),
]


def check_decode(data: bytes) -> None:
    """Either a clean refusal or audio within every limit."""
    try:
        decoded = decode(data, MAX_SECONDS, TARGET_RATE, LIMITS)
    except (InvalidArgument, ResourceExhausted) as exc:
        assert exc.message and "Traceback" not in exc.message
        return
    samples = decoded.samples
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert np.isfinite(samples).all()
    assert len(samples) == 0 or np.abs(samples).max() <= MAX_AMPLITUDE * 1.1  # (resampling may overshoot a little)
    assert LIMITS.min_seconds <= decoded.duration <= MAX_SECONDS
    assert LIMITS.min_sample_rate <= decoded.source_rate <= LIMITS.max_sample_rate
    assert 1 <= decoded.channels <= LIMITS.max_channels
    assert decoded.duration * decoded.source_rate * decoded.channels <= LIMITS.max_samples
    assert abs(len(samples) - decoded.duration * TARGET_RATE) <= 2 + TARGET_RATE * 0.002
    assert decoded.sha256 == hashlib.sha256(data).hexdigest()


def wav_bytes(rate: int, channels: int, bits: int, fmt: int, payload: bytes) -> bytes:
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real small file with a few bytes changed, cut, inserted or removed,
    mostly in its header."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.one_of(st.integers(0, min(63, len(data) - 1)), st.integers(0, len(data) - 1)))
        op = draw(st.sampled_from(["set", "flip", "cut", "insert", "delete"]))
        if op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]))
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


RATES = st.one_of(
    st.sampled_from([0, 1, 999, 1000, 8000, 44100, 384_000, 384_001, 2**31 - 1, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
CHANNELS = st.one_of(st.integers(0, 20), st.sampled_from([64, 255, 1024, 1025, 65535]))
FLOATS = st.lists(st.floats(width=32), max_size=256).map(lambda xs: np.asarray(xs, np.float32).tobytes())


@st.composite
def crafted_wav(draw: st.DrawFn) -> bytes:
    """A WAV header that can declare anything, over a small payload."""
    fmt, bits = draw(st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64), (0xFFFE, 16)]))
    if draw(st.booleans()):
        fmt, bits = draw(st.integers(0, 0xFFFF)), draw(st.sampled_from([0, 1, 7, 12, 64, 65535]))
    payload = draw(st.one_of(st.binary(max_size=2048), FLOATS))
    return wav_bytes(draw(RATES), draw(CHANNELS), bits, fmt, payload)


@settings(FUZZ, max_examples=200)
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x00")
@example(b"RIFF")
@example(b"fLaC")
@example(b"OggS")
@example(b"ID3\x04\x00\x00\x00\x00\x00\x00")
@example(b"\xff\xfb\x90\x64" + bytes(400))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    check_decode(data)


@settings(FUZZ, max_examples=300)
@given(mutated())
# Found on the first decoder: an MP3 cut after its first frames "decoded"
# to the header's 0.3 s (stale buffer), or to 1-3 ms of audio, accepted.
@example(SEEDS[5][:1000])
@example(SEEDS[5][:1024] + b"%" * 9)
def test_decode_mutated_files(data: bytes) -> None:
    check_decode(data)


@settings(FUZZ, max_examples=300)
@given(crafted_wav())
# Found while fuzzing this decoder; each once got through or misreported:
@example(wav_bytes(1, 1, 16, 1, bytes(20)))  # 1 Hz: accepted and resampled into 10 s of samples
@example(wav_bytes(2**31 - 1, 1, 16, 1, bytes(20)))  # 2 GHz: "decoded" into zero samples
@example(wav_bytes(16000, 1024, 16, 1, bytes(2048)))  # 1024 channels: 256 MB per decoded block
@example(wav_bytes(16000, 1, 32, 3, np.full(4, 1e30, np.float32).tobytes()))  # finite but NaN vectors downstream
@example(wav_bytes(16000, 2, 32, 3, np.full(8, 3e38, np.float32).tobytes()))  # overflowed to inf in the mix-down
@example(wav_bytes(16000, 1, 16, 1, bytes(2)))  # one sample: accepted
def test_decode_crafted_headers(data: bytes) -> None:
    check_decode(data)


def test_truncated_files_decode_only_what_is_there() -> None:
    """Found by the mutation fuzzer: cutting a file short used to yield the
    header's full length, the missing part filled with a stale buffer."""
    for seed in SEEDS:
        for cut in (len(seed) // 3, len(seed) // 2):
            try:
                decoded = decode(seed[:cut], MAX_SECONDS, TARGET_RATE, LIMITS)
            except InvalidArgument:
                continue
            with sf.SoundFile(io.BytesIO(seed)) as f:
                whole = f.frames / f.samplerate
            assert decoded.duration < whole * 0.9, (seed[:4], cut)


# --------------------------------------------------------------------------
# Request validation, directly

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
LIBRARY_NAMES = st.one_of(
    st.text(max_size=80),
    st.from_regex(NAME, fullmatch=True),
    st.builds(lambda a, b: a + b, st.from_regex(NAME, fullmatch=True), st.sampled_from(["\n", "\x00", " ", "'", "É"])),
)


@settings(FUZZ, max_examples=300)
@given(LIBRARY_NAMES)
@example("a" * 64)
@example("a" * 65)
@example("-a")
@example("A")
@example("a\u0661")  # a Unicode digit
def test_library_names_are_exactly_the_documented_set(name: str) -> None:
    try:
        assert validate_library_name(name) == name
        accepted = True
    except InvalidArgument as exc:
        assert quoted(name) in exc.message
        accepted = False
    assert accepted == (NAME.fullmatch(name) is not None)


def test_library_name_with_a_trailing_newline_is_refused() -> None:
    """Found by test_library_names_are_exactly_the_documented_set."""
    with pytest.raises(InvalidArgument):
        validate_library_name("abc\n")


@settings(FUZZ, max_examples=300)
@given(st.text(max_size=300))
@example("  Rain  ")
@example("İ" * 200)  # lower() makes it longer
@example("a\u2003\u00a0b")  # Unicode spaces
@example("ß\u1e9e")
def test_tags_normalise_idempotently_or_are_refused(tag: str) -> None:
    try:
        out = normalise_tag(tag)
    except InvalidArgument as exc:
        assert "tag" in exc.message
        return
    assert 1 <= len(out) <= 255
    assert out == out.strip() and "  " not in out and out == " ".join(out.split())
    assert out == out.lower()
    assert normalise_tag(out) == out


def test_tags_with_control_characters_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        normalise_tag("a\x00b")


# Any code point, surrogates included (a str from Python code can hold one).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
REFUSED = {"Cc", "Cf", "Zl", "Zp", "Cs"}


@settings(FUZZ, max_examples=300)
@given(ANY_TEXT)
@example("report\u202egnp.exe")  # a right-to-left override disguising an extension
@example("a\u200bb")  # zero-width space
@example("\ufeffname")  # BOM
@example("a\u2028b")  # line separator
@example("\ud800")  # an unpaired surrogate
@example("\ufdd0\U0010ffff")  # noncharacters
@example("\x85")  # NEL, a C1 control
def test_stored_text_refuses_format_control_and_separator_characters(text: str) -> None:
    bad = [
        i
        for i, c in enumerate(text)
        if (unicodedata.category(c) in REFUSED and c not in JOINERS)
        or 0xFDD0 <= ord(c) <= 0xFDEF
        or ord(c) & 0xFFFE == 0xFFFE
    ]
    try:
        assert check_text("item name", text) == text
    except InvalidArgument as exc:
        assert bad, exc.message
        assert f"U+{ord(text[bad[0]]):04X}" in exc.message and f"position {bad[0] + 1}" in exc.message
        assert text not in exc.message or not text  # names the character, never echoes the input
        return
    assert not bad


@settings(FUZZ, max_examples=200)
@given(st.one_of(ANY_TEXT, st.text(max_size=5000)), st.integers(0, 100))
@example("x" * 10_000, QUOTE_LIMIT)
def test_quotes_are_bounded_and_say_how_long_the_text_was(text: str, limit: int) -> None:
    out = quoted(text, limit)
    assert out.startswith(repr(text[:limit]))
    assert len(out) <= 10 * limit + 40  # repr writes a character as at most 10 (\U0010ffff)
    assert out == repr(text) if len(text) <= limit else out.endswith(f"… ({len(text)} characters)")


@settings(FUZZ, max_examples=200)
@given(st.one_of(ANY_TEXT, st.text(max_size=3000), st.text("é€😀%", min_size=300, max_size=3000)))
def test_status_messages_are_bounded_in_utf8_bytes(message: str) -> None:
    out = bounded(message)
    assert len(out.encode()) <= MESSAGE_LIMIT  # encodes: no surrogate is left
    whole = message.encode("utf-8", "backslashreplace")
    if len(whole) <= MESSAGE_LIMIT:
        assert out == whole.decode()
    else:
        assert out.endswith(f" … [cut: {len(whole)} bytes]") and whole.decode().startswith(out.split(" … [cut")[0])


TOKENS = st.one_of(
    st.text(max_size=40),
    st.integers(0, 2**63 - 1).map(encode_token),
    st.text(max_size=30).map(lambda t: base64.urlsafe_b64encode(f"after:{t}".encode()).decode()),
    st.binary(max_size=30).map(lambda b: base64.urlsafe_b64encode(b).decode()),
)


@settings(FUZZ, max_examples=300)
@given(TOKENS)
@example("")
@example("=")
@example(base64.urlsafe_b64encode(b"after:1:2").decode())
@example(base64.urlsafe_b64encode(b"\xff\xfe").decode())
def test_page_tokens_decode_or_are_refused(token: str) -> None:
    try:
        value = decode_token(token)
    except InvalidArgument as exc:
        assert "page_token" in exc.message
        return
    assert isinstance(value, int)


@settings(FUZZ, max_examples=100)
@given(st.integers(0, 2**63 - 1))
def test_page_tokens_round_trip(last_id: int) -> None:
    assert decode_token(encode_token(last_id)) == last_id


def test_page_tokens_beyond_int64_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        decode_token(base64.urlsafe_b64encode(b"after:" + b"9" * 30).decode())


async def _stream(messages: list[pb.InsertAudioRequest]):  # type: ignore[no-untyped-def]
    for message in messages:
        yield message


MESSAGES = st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=8)


@settings(FUZZ, max_examples=200)
@given(MESSAGES, st.integers(0, 1000))
@example([], 100)
@example([(False, b"x")], 100)
@example([(True, b"")], 0)
@example([(True, b"abc")], 2)
async def test_upload_streams_collect_or_are_refused(parts: list[tuple[bool, bytes]], limit: int) -> None:
    meta = pb.InsertAudioMetadata(library="lib", name="n")
    messages = [
        pb.InsertAudioRequest(metadata=meta, chunk=c) if h else pb.InsertAudioRequest(chunk=c) for h, c in parts
    ]
    sizes = np.cumsum([len(c) for _, c in parts]) if parts else np.zeros(0)
    try:
        header, data = await uploads.collect(_stream(messages), "metadata", limit)
    except InvalidArgument as exc:
        assert not parts or not parts[0][0], exc.message
        assert "metadata" in exc.message
        return
    except ResourceExhausted as exc:
        assert parts and parts[0][0] and sizes[-1] > limit
        assert "AUDIOSEARCH_MAX_UPLOAD_BYTES" in exc.message
        return
    assert parts[0][0] and header == meta
    assert data == b"".join(c for _, c in parts) and len(data) <= limit


# --------------------------------------------------------------------------
# Request validation through the real gateway: whatever the fields hold,
# the answer is a status the API documents, never a server error.

Code = grpc.StatusCode
SERVER_ERRORS = {Code.INTERNAL, Code.UNKNOWN, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED}
CLIP = encode(sound(9, seconds=1.0))
LIBRARY = "fuzz"
shared_loop = pytest.mark.asyncio(loop_scope="module")


def insert_request(library: str, name: str, data: bytes, **meta: object):  # type: ignore[no-untyped-def]
    md = pb.InsertAudioMetadata(library=library, name=name, **meta)
    return iter([pb.InsertAudioRequest(metadata=md, chunk=data)])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    stack = await start_stack(tmp_path_factory.mktemp("fuzz"))
    try:
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name=LIBRARY, model="spectral-v1"))
        item = (await stack.gateway.InsertAudio(insert_request(LIBRARY, "clip.wav", CLIP))).item
        (stack.roots / "sub").mkdir()
        (stack.roots / "sub" / "notes.txt").write_text("not audio")
        yield stack
        # Still healthy after all of it.
        for name in ("gateway", "embedder", "search", "catalog"):
            async with grpc.aio.insecure_channel(stack.address(name), options=[LOCAL_SUBCHANNELS]) as channel:
                status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert status.status == health_pb2.HealthCheckResponse.SERVING, name
        response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library=LIBRARY, top_k=1), CLIP))
        assert response.results[0].item.id == item.id
    finally:
        await stop_stack(stack)


async def status_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """The call's status; a refusal must explain itself."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() not in SERVER_ERRORS, f"{exc.code().name}: {exc.details()}"
        assert exc.details()
        return exc.code()
    return Code.OK


@shared_loop
@settings(FUZZ, max_examples=150)
@given(
    prefix=st.sampled_from(["", "/", "/etc/", "ROOT", "ROOT/", "ROOT/../", "ROOT/sub/", "../", "~/", "file://"]),
    rest=st.text(max_size=60),
)
@example(prefix="ROOT/", rest="")
@example(prefix="ROOT/../", rest="ROOT")
@example(prefix="ROOT/sub/", rest="notes.txt")
@example(prefix="ROOT/sub/", rest="../../../../../../etc/passwd")
async def test_gateway_server_paths(gateway_stack: Stack, prefix: str, rest: str) -> None:
    root = str(gateway_stack.roots)
    path = prefix.replace("ROOT", root) + rest
    request = pb.InsertAudioFromPathRequest(library=LIBRARY, path=path)
    code = await status_of(gateway_stack.gateway.InsertAudioFromPath(request))
    assert code in {Code.PERMISSION_DENIED, Code.INVALID_ARGUMENT, Code.NOT_FOUND}


@shared_loop
@settings(FUZZ, max_examples=80)
@given(
    # Mostly invalid names: each valid one costs a Milvus collection.
    name=st.one_of(st.text(max_size=80), LIBRARY_NAMES.filter(lambda n: not NAME.fullmatch(n)), st.just(LIBRARY)),
    description=st.text(max_size=1100),
    model=st.sampled_from(["", "spectral-v1", "fingerprint-v1", "panns-cnn14", "nope", "SPECTRAL-V1"]),
    window=st.one_of(st.just(0.0), st.floats(width=32)),
    hop=st.one_of(st.just(0.0), st.floats(width=32)),
)
@example(name="ok-1", description="", model="", window=0.0, hop=0.0)
@example(name="ok-2", description="d" * 1024, model="spectral-v1", window=2.0, hop=0.5)
@example(name="bad-window", description="", model="spectral-v1", window=-1.0, hop=0.0)
@example(name="nan-hop", description="", model="spectral-v1", window=1.0, hop=float("nan"))
async def test_gateway_create_library(
    gateway_stack: Stack, name: str, description: str, model: str, window: float, hop: float
) -> None:
    request = pb.CreateLibraryRequest(name=name, model=model, description=description, window_seconds=window)
    request.hop_seconds = hop
    code = await status_of(gateway_stack.gateway.CreateLibrary(request))
    assert code in {Code.OK, Code.INVALID_ARGUMENT, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION}
    if code == Code.OK:
        assert NAME.fullmatch(name)
        await gateway_stack.gateway.DeleteLibrary(pb.DeleteLibraryRequest(name=name))


@shared_loop
@settings(FUZZ, max_examples=100)
@given(
    library=st.one_of(st.just(LIBRARY), st.just(""), st.text(max_size=20)),
    name=st.one_of(st.just("a.wav"), st.text(max_size=600)),
    tags=st.lists(st.text(max_size=300), max_size=5),
    source_uri=st.text(max_size=100),
    data=st.one_of(st.just(CLIP), st.binary(max_size=200)),
)
async def test_gateway_insert_metadata(
    gateway_stack: Stack, library: str, name: str, tags: list[str], source_uri: str, data: bytes
) -> None:
    request = insert_request(library, name, data, tags=tags, source_uri=source_uri)
    code = await status_of(gateway_stack.gateway.InsertAudio(request))
    assert code in {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND}


@shared_loop
@settings(FUZZ, max_examples=100)
@given(
    library=st.one_of(st.just(LIBRARY), st.just(""), st.text(max_size=20)),
    top_k=st.one_of(st.integers(-3, 103), st.integers(-(2**31), 2**31 - 1)),
    item_id=st.one_of(st.just(0), st.just(1), st.integers(-(2**63), 2**63 - 1)),
    tags=st.lists(st.text(max_size=300), max_size=4),
    min_score=st.floats(width=32),
    data=st.one_of(st.just(b""), st.just(CLIP), st.binary(max_size=200)),
)
async def test_gateway_search_params(
    gateway_stack: Stack, library: str, top_k: int, item_id: int, tags: list[str], min_score: float, data: bytes
) -> None:
    params = pb.SearchParams(library=library, top_k=top_k, item_id=item_id, tags=tags, min_score=min_score)
    code = await status_of(gateway_stack.gateway.SearchAudio(search_stream(params, data)))
    assert code in {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND}


@shared_loop
@settings(FUZZ, max_examples=100)
@given(
    library=st.one_of(st.just(LIBRARY), st.just(""), st.text(max_size=20)),
    page_size=st.one_of(st.integers(-2, 1002), st.integers(-(2**31), 2**31 - 1)),
    page_token=TOKENS,
    tag=st.text(max_size=300),
    item_id=st.integers(-(2**63), 2**63 - 1),
)
async def test_gateway_list_and_get(
    gateway_stack: Stack, library: str, page_size: int, page_token: str, tag: str, item_id: int
) -> None:
    request = pb.ListAudioRequest(library=library, page_size=page_size, page_token=page_token, tag=tag)
    code = await status_of(gateway_stack.gateway.ListAudio(request))
    assert code in {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND}
    code = await status_of(gateway_stack.gateway.GetAudio(pb.GetAudioRequest(id=item_id)))
    assert code in {Code.OK, Code.NOT_FOUND}
