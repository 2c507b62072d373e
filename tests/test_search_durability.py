"""The search service keeps what it acknowledged: a real `python -m
services.search` process on Milvus Lite is SIGKILLed while several clients
upsert at once, and after a restart on the same data every acknowledged
item is still there, and the first requests (many at once) find their
collection loaded. Before the store serialised its writers, this lost
thousands of acknowledged items (Milvus Lite's write-ahead log interleaved
two writers' batches; recovery stopped at the first damaged one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from audiosearch.search.v1 import search_pb2 as pb
from audiosearch.search.v1 import search_pb2_grpc as pb_grpc

from services.cli.probes import wait_serving
from services.common.channels import LOCAL_SUBCHANNELS
from services.common.errors import ResourceExhausted
from services.search.contract import Store, WindowVector
from services.search.milvus import MilvusStore
from tests.disk import fill
from tests.test_e2e import free_port_block

DIM, WINDOWS, WRITERS = 32, 12, 6
MODEL = pb.ModelBinding(name="m", dim=DIM)


def start(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AUDIOSEARCH_LISTEN": f"127.0.0.1:{port}", "AUDIOSEARCH_DATA_DIR": str(data)}
    log = (data.parent / "search.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "services.search"], env=env, stdout=log, stderr=log)
    wait_serving(f"127.0.0.1:{port}", 120, process)
    return process


def vectors(item: int) -> list[pb.WindowVector]:
    rng = np.random.default_rng(item)
    return [
        pb.WindowVector(item_id=item, window_index=w, offset_seconds=w * 0.5, vector=rng.standard_normal(DIM).tolist())
        for w in range(WINDOWS)
    ]


def test_acknowledged_vectors_survive_a_sigkill(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port_block(1)
    data.mkdir()
    process = start(data, port)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[LOCAL_SUBCHANNELS])
        stub = pb_grpc.SearchServiceStub(channel)
        stub.CreateCollection(pb.CreateCollectionRequest(library="lib", model=MODEL))
        acked: set[int] = set()
        lock, enough = threading.Lock(), threading.Event()

        def write(writer: int) -> None:
            try:
                upsert_until_killed(writer)
            finally:
                enough.set()  # also when a writer fails: the assertions below say how

        def upsert_until_killed(writer: int) -> None:
            for n in range(100_000):
                item = writer * 1_000_000 + n + 1
                try:
                    stub.UpsertVectors(
                        pb.UpsertVectorsRequest(library="lib", model=MODEL, vectors=vectors(item)), timeout=30
                    )
                except grpc.RpcError:
                    return  # the kill
                with lock:
                    acked.add(item)
                    if len(acked) >= 400:
                        return

        threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        assert enough.wait(300)
        assert len(acked) >= 50, f"only {len(acked)} upserts acknowledged before the kill"
        process.send_signal(signal.SIGKILL)
        process.wait()
        for t in threads:
            t.join(60)
        channel.close()

        process = start(data, port)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[LOCAL_SUBCHANNELS]) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            query = pb.QueryVector(vector=vectors(min(acked))[0].vector)

            def search(_: int) -> int:
                request = pb.SearchRequest(library="lib", model=MODEL, queries=[query], top_k=1)
                return stub.Search(request, timeout=60).results[0].hits[0].item_id

            # The first requests after the restart arrive together: none may
            # find the collection released.
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(search, range(8))) == {min(acked)}
            present = set(stub.ListItemIds(pb.ListItemIdsRequest(library="lib"), timeout=120).item_ids)
        lost = acked - present
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged items lost"
    finally:
        process.kill()
        process.wait()


def test_nothing_acknowledged_is_lost_to_a_full_disk(small_disk: Path) -> None:
    """Milvus Lite drops from memory the rows a failed flush was sealing
    (they are then only in its log, which the next good flush deletes): the
    store reopens it from disk after a failed write or flush, so they come
    back, and a write refused for the full disk is the only thing missing."""
    store = MilvusStore(str(small_disk / "m.db"))
    try:
        store.create("lib", "m", 8)
        store.upsert("lib", "m", 8, [window(1)])
        store.flush()
        store.upsert("lib", "m", 8, [window(2)])  # acknowledged, not yet flushed
        ballast = fill(small_disk)
        store.flush()  # fails: the disk is full
        assert top(store, 2) == 2
        with pytest.raises(ResourceExhausted, match="disk is full"):
            store.upsert("lib", "m", 8, [window(3)])
        assert store.item_ids("lib") == [1, 2]
        ballast.unlink()
        store.upsert("lib", "m", 8, [window(3)])
        store.flush()
        assert store.item_ids("lib") == [1, 2, 3]
    finally:
        store.close()
    reopened = MilvusStore(str(small_disk / "m.db"))
    try:
        reopened.open()
        assert reopened.item_ids("lib") == [1, 2, 3]
    finally:
        reopened.close()


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


def window(item: int) -> WindowVector:
    return WindowVector(item, 0, 0.0, unit(item))


def top(store: Store, item: int) -> int:
    return store.search("lib", "m", 8, [unit(item)], 1)[0][0].item_id
