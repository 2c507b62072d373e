"""Load: 16 concurrent clients mix inserts, searches and deletes against the
real multi-process stack for a bounded time. The only error allowed is an
explicit RESOURCE_EXHAUSTED (load shedding); afterwards every acknowledged
insert that was not deleted is there exactly once, every delete is
complete, the stores agree, and no service grew past its memory bound."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc

from services.common.channels import LOCAL_SUBCHANNELS
from tests.sounds import encode, excerpt, sound
from tests.test_e2e import serve  # noqa: F401 - the multi-process stack fixture
from tests.test_faults import ServiceProcesses, list_all

CLIENTS = 16
SECONDS = 20.0
# Stated bound: resident memory of each service process during the run.
RSS_BOUND_MIB = 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_concurrent_clients_lose_nothing_and_stay_bounded(serve) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    start, _env, port, _metrics, _http = serve
    supervisor = start()
    services = ServiceProcesses(supervisor.pid)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[LOCAL_SUBCHANNELS])
    gateway = pb_grpc.GatewayServiceStub(channel)
    gateway.CreateLibrary(pb.CreateLibraryRequest(name="load", model="fingerprint-v1"))

    lock = threading.Lock()
    inserted: dict[int, str] = {}  # id -> name, acknowledged
    deleted: set[int] = set()
    errors: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    peaks: dict[str, float] = {}
    stop = threading.Event()

    def client(n: int) -> None:
        rng = random.Random(n)
        counter = 0
        own: list[int] = []
        while not stop.is_set():
            op = rng.choices(["insert", "search", "delete"], weights=[5, 4, 1])[0]
            if op == "delete" and not own:
                op = "insert"
            try:
                if op == "insert":
                    counter += 1
                    seed = n * 10_000 + counter
                    name = f"c{n}-{counter}.wav"
                    meta = pb.InsertAudioMetadata(library="load", name=name)
                    data = encode(sound(seed, seconds=2.0))
                    item = gateway.InsertAudio(
                        iter([pb.InsertAudioRequest(metadata=meta, chunk=data)]), timeout=60
                    ).item
                    with lock:
                        inserted[item.id] = name
                    own.append(item.id)
                elif op == "search":
                    seed = n * 10_000 + rng.randint(1, max(1, counter))
                    clip = encode(excerpt(sound(seed, seconds=2.0), 0.2, 1.8))
                    params = pb.SearchParams(library="load", top_k=5, min_score=-1)
                    with lock:
                        gone = set(deleted)  # deletes acknowledged before this search began
                    found = gateway.SearchAudio(iter([pb.SearchAudioRequest(params=params, chunk=clip)]), timeout=60)
                    served = {r.item.id for r in found.results}
                    if served & gone:
                        with lock:
                            errors[f"search served deleted items {sorted(served & gone)}"] += 1
                else:
                    victim = own.pop(rng.randrange(len(own)))
                    gateway.DeleteAudio(pb.DeleteAudioRequest(id=victim), timeout=60)
                    with lock:
                        deleted.add(victim)
                with lock:
                    ops[op] += 1
            except grpc.RpcError as exc:
                with lock:
                    errors[f"{op}: {exc.code().name}: {exc.details()}"] += 1

    def watch_memory() -> None:
        while not stop.is_set():
            for name, pid in services.pids().items():
                peaks[name] = max(peaks.get(name, 0.0), rss_mib(pid))
            time.sleep(0.25)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    threads.append(threading.Thread(target=watch_memory))
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(120)

    unexpected = {k: v for k, v in errors.items() if "RESOURCE_EXHAUSTED" not in k}
    assert unexpected == {}, unexpected
    assert ops["insert"] > CLIENTS and ops["search"] > 0 and ops["delete"] > 0, ops
    print(f"\nops {dict(ops)}, shed {sum(errors.values())}, peak RSS MiB {peaks}")

    items = list_all(gateway, "load")
    names = [i.name for i in items]
    assert len(names) == len(set(names)), "duplicated items"
    assert {i.id for i in items} == set(inserted) - deleted
    stats = {s.name: s for s in gateway.Stats(pb.StatsRequest()).libraries}["load"]
    assert (stats.items, stats.pending_items, stats.indexed_items) == (len(items), 0, len(items))
    assert list(gateway.Repair(pb.RepairRequest()).actions) == []
    assert max(peaks.values()) < RSS_BOUND_MIB, peaks
    channel.close()
