"""Fault injection on the real multi-process stack: while `audiosearch
index` of 200 files runs, the search service, then the catalog, then the
embedder are killed with SIGKILL at random moments (`audiosearch serve`
restarts them). Running the same command again must converge: every file
is READY exactly once in the catalog, has vectors in the store, nothing
is orphaned, and repair finds nothing to fix."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from audiosearch.catalog.v1 import catalog_pb2 as cat
from audiosearch.catalog.v1 import catalog_pb2_grpc as cat_grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc
from audiosearch.search.v1 import search_pb2 as srch
from audiosearch.search.v1 import search_pb2_grpc as srch_grpc

from services.cli.probes import wait_serving
from services.cli.supervisor import OFFSETS
from services.common.channels import LOCAL_SUBCHANNELS
from tests.sounds import encode, sound
from tests.test_e2e import serve  # noqa: F401 - the multi-process stack fixture

FILES = 200


class ServiceProcesses:
    """The service processes `audiosearch serve` (pid) runs, by name."""

    def __init__(self, supervisor: int) -> None:
        self.supervisor = supervisor

    def pids(self) -> dict[str, int]:
        out = {}
        children = Path(f"/proc/{self.supervisor}/task/{self.supervisor}/children").read_text().split()
        for pid in map(int, children):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            for part in cmdline:
                if part.startswith(b"services."):
                    out[part.decode().split(".")[1]] = pid
        return out

    def kill(self, name: str) -> int:
        pid = self.pids()[name]
        os.kill(pid, signal.SIGKILL)
        return pid


def list_all(gateway: pb_grpc.GatewayServiceStub, library: str) -> list[pb.AudioItem]:
    items, token = [], ""
    while True:
        page = gateway.ListAudio(pb.ListAudioRequest(library=library, page_size=1000, page_token=token))
        items += page.items
        token = page.next_page_token
        if not token:
            return items


def ready_count(gateway: pb_grpc.GatewayServiceStub, library: str) -> int:
    try:
        stats = gateway.Stats(pb.StatsRequest(), timeout=5)
    except grpc.RpcError:
        return -1  # a service is down
    return next((s.items for s in stats.libraries if s.name == library), 0)


@pytest.mark.timeout(900)  # two runs of 200 files and three restarts on a busy 2-core machine
def test_killing_services_mid_index_loses_and_duplicates_nothing(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    start, env, port, _, _ = serve
    supervisor = start()
    services = ServiceProcesses(supervisor.pid)
    folder = tmp_path / "files"
    folder.mkdir()
    for n in range(FILES):
        (folder / f"f{n:03d}.wav").write_bytes(encode(sound(1000 + n, seconds=6.0), rate=22050))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[LOCAL_SUBCHANNELS])
    gateway = pb_grpc.GatewayServiceStub(channel)

    command = [sys.executable, "-m", "services.cli.main", "index", str(folder), "--library", "faults", "--json"]
    command += ["--model", "fingerprint-v1", "--jobs", "1"]
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rng = random.Random(7)
        killed = []
        mark = 0
        for name in ("search", "catalog", "embedder"):
            target = mark + rng.randint(5, 30)  # a random moment: after this many more items are READY
            while run.poll() is None and ready_count(gateway, "faults") < target:
                time.sleep(0.05)
            if run.poll() is not None:
                break
            killed.append((name, services.kill(name), ready_count(gateway, "faults")))
            wait_serving(f"127.0.0.1:{port + OFFSETS[name]}", 120)  # restarted by `audiosearch serve`
            mark = max(target, ready_count(gateway, "faults"))
        first, errors = run.communicate(timeout=600)
        assert [k[0] for k in killed] == ["search", "catalog", "embedder"], (killed, first[-2000:], errors[-2000:])
    finally:
        if run.poll() is None:  # the test failed mid-run: no index client left behind
            run.kill()
            run.wait()
    print(f"killed (service, pid, READY items then): {killed}; first run: {first[-300:]}")

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:], killed)
    items = list_all(gateway, "faults")
    assert len(items) == FILES
    assert len({i.sha256 for i in items}) == FILES and len({i.name for i in items}) == FILES

    # The stores agree: READY items are exactly the items with vectors.
    with grpc.insecure_channel(f"127.0.0.1:{port + OFFSETS['catalog']}", options=[LOCAL_SUBCHANNELS]) as c:
        states = cat_grpc.CatalogServiceStub(c).ListItemStates(cat.ListItemStatesRequest(library="faults")).items
    with grpc.insecure_channel(f"127.0.0.1:{port + OFFSETS['search']}", options=[LOCAL_SUBCHANNELS]) as c:
        with_vectors = set(
            srch_grpc.SearchServiceStub(c).ListItemIds(srch.ListItemIdsRequest(library="faults")).item_ids
        )
    assert {s.id for s in states} == {s.id for s in states if s.state == cat.ITEM_STATE_READY}
    assert with_vectors == {s.id for s in states} == {i.id for i in items}
    stats = {s.name: s for s in gateway.Stats(pb.StatsRequest()).libraries}["faults"]
    assert (stats.items, stats.pending_items, stats.indexed_items) == (FILES, 0, FILES)
    assert list(gateway.Repair(pb.RepairRequest()).actions) == []
    channel.close()
