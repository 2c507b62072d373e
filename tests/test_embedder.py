"""The embedder service over real gRPC, with both models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from audiosearch.embedder.v1 import embedder_pb2 as pb
from audiosearch.embedder.v1 import embedder_pb2_grpc as pb_grpc

from services.common import config as cfg
from services.common import server
from services.common.channels import LOCAL_SUBCHANNELS
from services.embedder import __main__ as embedder_main
from services.embedder.batching import Batcher
from services.embedder.config import EmbedderConfig
from services.embedder.models.cnn14 import Cnn14
from services.embedder.models.spectral import SpectralModel
from tests.sounds import encode, sound


def request_stream(data: bytes, model: str = "", top_tags: int = 0, chunk: int = 50_000):
    yield pb.EmbedRequest(options=pb.EmbedOptions(model=model, top_tags=top_tags), chunk=data[:chunk])
    for start in range(chunk, len(data), chunk):
        yield pb.EmbedRequest(chunk=data[start : start + chunk])


async def start(tmp_path: Path, **overrides):  # type: ignore[no-untyped-def]
    settings = {"cnn14_checkpoint": tmp_path / "missing.pth", "cnn14_download": False, **overrides}
    config = cfg.load(EmbedderConfig, environ={}, listen="127.0.0.1:0", data_dir=tmp_path, **settings)
    running = await server.start(await embedder_main.build(config), config)
    channel = grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS])
    return running, channel, pb_grpc.EmbedderServiceStub(channel)


async def test_models_and_embedding_without_weights(tmp_path: Path) -> None:
    running, channel, stub = await start(tmp_path)
    try:
        listing = await stub.ListModels(pb.ListModelsRequest())
        models = {m.name: m for m in listing.models}
        assert listing.default_model == "fingerprint-v1"
        assert models["spectral-v1"].available and models["spectral-v1"].dim == 192
        assert models["fingerprint-v1"].available and models["fingerprint-v1"].min_evidence > 0
        assert not models["panns-cnn14"].available
        assert "missing.pth" in models["panns-cnn14"].unavailable_reason
        # Unavailable or not, each model says what it is for (how to get semantic search included).
        assert "fetch-weights" in models["panns-cnn14"].purpose and models["panns-cnn14"].score_meaning
        assert all(m.purpose and m.score_meaning for m in listing.models)

        data = encode(sound(2, seconds=5.0, rate=48000), rate=48000, fmt="FLAC", channels=2)
        response = await stub.Embed(request_stream(data))
        assert response.model.name == "fingerprint-v1"
        assert (response.audio.sample_rate, response.audio.channels) == (48000, 2)
        assert response.audio.duration_seconds == pytest.approx(5.0)
        offsets = [w.offset_seconds for w in response.windows]
        assert offsets[0] == 0 and offsets[-1] == pytest.approx(3.0) and len(offsets) == 7
        assert response.model.sparse and not response.windows[0].vector
        norms = [np.linalg.norm(w.sparse.values) for w in response.windows]
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
        assert all(list(w.sparse.indices) == sorted(w.sparse.indices) for w in response.windows)

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(request_stream(data, model="panns-cnn14"))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "weights are not at" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(request_stream(data, model="mystery"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(request_stream(b"\x00" * 5000))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(iter([]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await stub.Embed(request_stream(data))).windows  # still serving

        custom = await stub.Embed(
            iter(
                [
                    pb.EmbedRequest(
                        options=pb.EmbedOptions(model="spectral-v1", window_seconds=3, hop_seconds=1), chunk=data
                    )
                ]
            )
        )
        assert (custom.model.window_seconds, custom.model.hop_seconds) == (3, 1)
        assert [w.offset_seconds for w in custom.windows] == [0, 1, 2]
        dense = np.array([w.vector for w in custom.windows])
        np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)
        for window, hop in [(0.01, 0), (100, 0), (2, 3)]:
            bad = pb.EmbedOptions(model="spectral-v1", window_seconds=window, hop_seconds=hop)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Embed(iter([pb.EmbedRequest(options=bad, chunk=data)]))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
        await running.stop()


async def test_cnn14_serves_vectors_and_audioset_tags(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "Cnn14.pth"
    torch.save({"model": Cnn14().state_dict()}, path)
    running, channel, stub = await start(tmp_path, cnn14_checkpoint=path, device="cpu")
    try:
        for _ in range(200):  # Cnn14 loads in the background
            listing = await stub.ListModels(pb.ListModelsRequest())
            if {m.name: m for m in listing.models}["panns-cnn14"].available:
                break
            await asyncio.sleep(0.1)
        assert listing.default_model == "panns-cnn14"
        data = encode(sound(4, seconds=12.0, rate=32000), rate=32000)
        response = await stub.Embed(request_stream(data, model="panns-cnn14", top_tags=5))
        assert response.model.dim == 2048 and response.model.produces_tags
        assert [w.offset_seconds for w in response.windows] == [0.0, 2.0]  # 10 s windows, tail aligned
        assert len(response.windows[0].vector) == 2048
        assert len(response.tags) == 5
        scores = [t.score for t in response.tags]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        short = await stub.Embed(request_stream(encode(sound(1, seconds=0.3)), model="panns-cnn14"))
        assert len(short.windows) == 1 and short.windows[0].duration_seconds == pytest.approx(0.3, abs=0.01)
    finally:
        await channel.close()
        await running.stop()


async def test_batcher_coalesces_concurrent_requests() -> None:
    model = SpectralModel()
    batcher = Batcher(model, max_batch=16, wait_ms=50)
    window = np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    direct = model.embed(np.stack([window] * 2)).vectors
    try:
        results = await asyncio.gather(*(batcher.embed([window, window]) for _ in range(6)))
        assert batcher.calls < 6  # 12 windows from 6 requests in fewer model calls
        for r in results:
            np.testing.assert_allclose(r.vectors, direct, rtol=1e-6)
        mixed = await batcher.embed([window, window[:16000], window])
        assert mixed.vectors.shape == (3, model.info.dim)
        np.testing.assert_allclose(mixed.vectors[0], direct[0], rtol=1e-6)
    finally:
        await batcher.close()


async def test_a_failing_model_call_fails_only_its_requests() -> None:
    class Broken(SpectralModel):
        def embed(self, windows):  # type: ignore[no-untyped-def]
            if windows.shape[1] == 100:
                raise RuntimeError("boom")
            return super().embed(windows)

    batcher = Batcher(Broken(), max_batch=4, wait_ms=1)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.embed([np.zeros(100, dtype=np.float32)])
        ok = await batcher.embed([np.ones(16000, dtype=np.float32)])
        assert ok.vectors.shape == (1, 192)
    finally:
        await batcher.close()


async def test_default_prefers_cnn14_while_its_weights_download() -> None:
    import dataclasses
    import threading

    from services.common.errors import Unavailable
    from services.embedder.registry import Registry

    release = threading.Event()

    class Downloading(SpectralModel):
        info = dataclasses.replace(SpectralModel.info, name="panns-cnn14")

        def load(self) -> None:
            release.wait(10)

    registry = Registry([Downloading(), SpectralModel()])
    await registry.load_all(wait_seconds=0.05)
    assert registry.get("spectral-v1").info.name == "spectral-v1"  # serves meanwhile
    assert registry.default_name == "panns-cnn14"
    with pytest.raises(Unavailable, match="loading"):
        registry.get("")
    release.set()
    await registry.wait_loaded()
    assert registry.get("").info.name == "panns-cnn14"


async def test_the_embedder_sheds_load_beyond_its_queue(tmp_path: Path) -> None:
    """With one request running and none allowed to wait, a second gets
    RESOURCE_EXHAUSTED at once; the first still completes, and so does a
    request sent once the embedder is free again."""
    running, channel, stub = await start(tmp_path, max_active_embeds=1, max_queued_embeds=0)
    data = encode(sound(3, seconds=3.0))
    release = asyncio.Event()

    async def slow_upload():  # type: ignore[no-untyped-def]
        yield pb.EmbedRequest(options=pb.EmbedOptions(model="spectral-v1"), chunk=data[:1000])
        await release.wait()  # the request holds its turn while its upload is still arriving
        yield pb.EmbedRequest(chunk=data[1000:])

    try:
        first = stub.Embed(slow_upload())
        await first.wait_for_connection()
        for _ in range(100):  # until the first request has been admitted (no timing assumption)
            if await _admitted(stub, data) == grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
        else:
            raise AssertionError("the second request was never refused")
        release.set()
        assert len((await first).windows) > 0
        assert len((await stub.Embed(request_stream(data, model="spectral-v1"))).windows) > 0
    finally:
        await channel.close()
        await running.stop()


async def _admitted(stub, data: bytes) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        await stub.Embed(request_stream(data, model="spectral-v1"))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
        assert "busy" in (exc.details() or "")
        return exc.code()
    return grpc.StatusCode.OK


async def test_streamed_windows_equal_windows_of_the_whole_signal() -> None:
    """A long upload is framed and embedded while it decodes; the windows,
    offsets and vectors are those of decoding it whole and framing that."""
    from services.embedder import audio
    from services.embedder.embedding import Embedder
    from services.embedder.registry import Registry

    config = cfg.load(EmbedderConfig, environ={}, models=("spectral-v1",), max_batch=3)
    registry = Registry([SpectralModel()])
    await registry.load_all()
    embedder = Embedder(registry, config)
    try:
        data = encode(sound(4, seconds=47.3, rate=44100), rate=44100, fmt="FLAC", channels=2)
        result = await embedder.embed(data, "spectral-v1", window=2.0, hop=0.5)
        decoded = audio.decode(data, 3600, 16000)
        windows, offsets = audio.frame(decoded.samples, 16000, 2.0, 0.5, 2.0)
        expected = registry.slots["spectral-v1"].model.embed(np.stack(windows)).vectors
        assert [w.offset for w in result.windows] == offsets
        np.testing.assert_allclose(np.stack([w.vector for w in result.windows]), expected, rtol=1e-5, atol=1e-6)
        assert result.duration == pytest.approx(47.3) and result.sha256 == decoded.sha256

        # Bad samples half-way (NaN, in a float WAV): found while windows are
        # already with the model; the request fails with the decoder's error.
        import io

        import soundfile as sf

        from services.common.errors import InvalidArgument

        bad = sound(5, seconds=40.0, rate=16000)
        bad[16000 * 30] = np.nan
        buffer = io.BytesIO()
        sf.write(buffer, bad, 16000, format="WAV", subtype="FLOAT")
        with pytest.raises(InvalidArgument, match="NaN"):
            await embedder.embed(buffer.getvalue(), "spectral-v1", window=2.0, hop=0.5)
        result = await embedder.embed(encode(sound(6, seconds=3.0)), "spectral-v1")  # and it keeps serving
        assert result.windows
    finally:
        await embedder.close()
    # A batch size of 0 means the model's own, not a request that never ends.
    unbatched = Embedder(registry, cfg.load(EmbedderConfig, environ={}, models=("spectral-v1",), max_batch=0))
    try:
        result = await asyncio.wait_for(unbatched.embed(encode(sound(6, seconds=3.0)), "spectral-v1"), 30)
        assert len(result.windows) == 3  # 2 s windows every 0.5 s over 3 s
    finally:
        await unbatched.close()
