"""The search service against a Milvus server reached by URI, as in
production: the same client code as for the embedded Milvus Lite file,
here talking gRPC over TCP to a real server process (Milvus Lite's own
server, `milvus-lite server`), with a token and a database of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb
from pymilvus import MilvusClient

from services.common.errors import Unavailable
from services.search.milvus import MilvusStore
from services.search.milvus_connection import ServerTls
from services.search.naming import collection_name
from tests.conftest import start_stack, stop_stack
from tests.sounds import encode, excerpt, sound
from tests.test_e2e import free_port_block
from tests.test_gateway import insert_stream, search_stream


@pytest.fixture
def milvus_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port_block(1)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            str(tmp_path / "milvus"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    uri = f"http://127.0.0.1:{port}"
    try:  # the server goes whatever happens: a failed start, a failed test
        deadline = time.monotonic() + 60
        while True:
            try:
                client = MilvusClient(uri=uri, token="root:Milvus", timeout=2)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(
                        f"milvus-lite server did not start: {process.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.3)
        client.create_database("audio")
        yield uri, client
        client.close()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_search_service_on_a_milvus_server_database(tmp_path: Path, milvus_server) -> None:  # type: ignore[no-untyped-def]
    uri, admin = milvus_server
    settings = {"milvus_uri": uri, "milvus_token": "root:Milvus", "milvus_db_name": "audio", "index_type": "HNSW"}
    stack = await start_stack(tmp_path, search_overrides=settings)
    try:
        await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="remote", model="spectral-v1"))
        for seed in range(3):
            data = encode(sound(seed, seconds=4.0), fmt="WAV")
            assert (await stack.gateway.InsertAudio(insert_stream("remote", f"s{seed}.wav", data))).created
        clip = encode(excerpt(sound(2, seconds=4.0), 0.5, 3.0), fmt="WAV")
        response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="remote", top_k=2), clip))
        assert response.results[0].item.name == "s2.wav"
    finally:
        await stop_stack(stack)
    # The vectors are on the server, in the database asked for, not in the default one or a local file.
    admin.use_database("audio")
    assert collection_name("remote") in admin.list_collections()
    admin.use_database("default")
    assert collection_name("remote") not in admin.list_collections()
    assert not (tmp_path / "data" / "milvus.db").exists()


def test_a_missing_milvus_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="AUDIOSEARCH_MILVUS_CA_FILE: no such file"):
        MilvusStore("https://milvus.example:19530", tls=ServerTls(str(tmp_path / "nope.pem")))


def test_an_unreachable_milvus_server_is_unavailable() -> None:
    port = free_port_block(1)
    with pytest.raises(Unavailable, match=f"cannot open Milvus at http://127.0.0.1:{port}"):
        MilvusStore(f"http://127.0.0.1:{port}")
