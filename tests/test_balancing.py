"""Calls between services spread over every replica a name resolves to
(round_robin), as the gateway's channels to headless Kubernetes Services
need; the servers' own RPC counters tell where each call went."""

from __future__ import annotations

from pathlib import Path

from audiosearch.catalog.v1 import catalog_pb2 as pb
from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc

from services.catalog import __main__ as catalog_main
from services.catalog.config import CatalogConfig
from services.common import config as cfg
from services.common import server
from services.common.channels import open_channel
from services.common.server import connection_age


def handled(running: server.RunningServer, method: str) -> float:
    samples = running.metrics.handled.collect()[0].samples
    return sum(s.value for s in samples if s.labels["grpc_method"] == method and s.name.endswith("_total"))


async def test_calls_spread_over_every_resolved_replica(tmp_path: Path) -> None:
    # Two catalog replicas over one database, as behind a headless Service.
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    replicas = []
    for _ in range(2):
        config = cfg.load(CatalogConfig, environ={}, listen="127.0.0.1:0", database_url=url)
        replicas.append(await server.start(await catalog_main.build(config), config))
    target = "ipv4:" + ",".join(r.address for r in replicas)  # a name resolving to both
    channel = open_channel(target)
    try:
        stub = pb_grpc.CatalogServiceStub(channel)
        for _ in range(20):
            await stub.ListLibraries(pb.ListLibrariesRequest(), timeout=10)
    finally:
        await channel.close()
        for running in replicas:
            await running.stop()
    counts = [handled(r, "ListLibraries") for r in replicas]
    assert sum(counts) == 20 and min(counts) >= 5, counts  # round_robin: about 10 each


def test_connection_age_is_set_unless_zero() -> None:
    assert connection_age(0) == []
    options = dict(connection_age(300))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] > 300_000  # longer than any RPC may run


async def test_a_new_channel_does_not_inherit_a_dead_servers_backoff(tmp_path: Path) -> None:
    """The cause of a flaky "Connection refused" under load: gRPC shares
    connections between a process's channels with the same settings, so a
    channel to a port whose server had gone away (an earlier test's, a
    restarted service's) left the shared connection in reconnect backoff,
    and a new channel to a new server on that port failed at once (seen
    with plain channels). Ours keep their own connections
    (`LOCAL_SUBCHANNELS`) and cap the reconnect backoff at 2 s; either
    alone makes this pass, so it guards the pair."""
    import grpc

    from tests.test_e2e import free_port_block

    address = f"127.0.0.1:{free_port_block(1)}"
    old = open_channel(address)
    try:
        stub = pb_grpc.CatalogServiceStub(old)
        try:
            await stub.ListLibraries(pb.ListLibrariesRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            pass  # nothing listens yet: this channel's connection is now in backoff
        config = cfg.load(CatalogConfig, environ={}, listen=address, database_url=f"sqlite:///{tmp_path / 'c.db'}")
        running = await server.start(await catalog_main.build(config), config)
        new = open_channel(address)
        try:
            await pb_grpc.CatalogServiceStub(new).ListLibraries(pb.ListLibrariesRequest(), timeout=10)
        finally:
            await new.close()
            await running.stop()
    finally:
        await old.close()
