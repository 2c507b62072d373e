"""Shared fixtures: the four services started for real, in process, on
port 0, over a temporary data dir (Milvus Lite + SQLite)."""

from __future__ import annotations

import dataclasses
import http.server
import threading
from pathlib import Path

import grpc
import pytest
from audiosearch.gateway.v1 import gateway_pb2_grpc

from services.catalog import __main__ as catalog_main
from services.catalog.config import CatalogConfig
from services.common import config as cfg
from services.common import server
from services.common.channels import LOCAL_SUBCHANNELS
from services.embedder import __main__ as embedder_main
from services.embedder.config import EmbedderConfig
from services.gateway import __main__ as gateway_main
from services.gateway.config import GatewayConfig
from services.search import __main__ as search_main
from services.search.config import SearchConfig
from tests.disk import small_disk  # noqa: F401 - a fixture for every test module

# The fast tier (`make check`): every test that needs no running service,
# database, Milvus, network, npm or browser. A test is in the slow tier
# ("services") when it asks for one of these fixtures, directly or through
# another, or sits in a module that starts processes or stores of its own.
SERVICE_FIXTURES = {
    "stack",
    "auth_stack",
    "gateway_stack",
    "env",
    "serve",
    "file_server",
    "database_url",
    "milvus_server",
    "small_disk",
    "direct",
}
SERVICE_MODULES = {
    "test_auth",
    "test_balancing",
    "test_browser",
    "test_catalog",
    "test_cli_json",
    "test_e2e",
    "test_embedder",
    "test_faults",
    "test_fuzz",
    "test_gateway",
    "test_item_updates",
    "test_load",
    "test_milvus_server",
    "test_node_client",
    "test_observability",
    "test_playback",
    "test_reindex",
    "test_search_durability",
    "test_search_store",
    "test_store_contract",
    "test_supervisor",
    "test_tls",
    "test_web",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "services: needs running services, databases, Milvus, npm or a browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SERVICE_MODULES:
            item.add_marker(pytest.mark.services)


@dataclasses.dataclass
class Stack:
    servers: dict[str, server.RunningServer]
    channel: grpc.aio.Channel
    gateway: gateway_pb2_grpc.GatewayServiceStub
    data_dir: Path
    roots: Path

    def address(self, name: str) -> str:
        return self.servers[name].address


async def start_stack(
    tmp_path: Path,
    embedder_overrides: dict[str, object] | None = None,
    base_overrides: dict[str, object] | None = None,
    search_overrides: dict[str, object] | None = None,
    **gateway_overrides: object,
) -> Stack:
    """`base_overrides` go to every service (metrics_listen, say)."""
    data = tmp_path / "data"
    roots = tmp_path / "allowed"
    roots.mkdir()
    base = {"data_dir": data, "listen": "127.0.0.1:0", "shutdown_grace_seconds": 1.0, **(base_overrides or {})}
    servers: dict[str, server.RunningServer] = {}
    catalog_config = cfg.load(CatalogConfig, environ={}, **base)
    servers["catalog"] = await server.start(await catalog_main.build(catalog_config), catalog_config)
    search_config = cfg.load(SearchConfig, environ={}, **base, **(search_overrides or {}))
    servers["search"] = await server.start(await search_main.build(search_config), search_config)
    embedder_settings = {
        "cnn14_checkpoint": tmp_path / "no-weights" / "Cnn14.pth",
        "cnn14_download": False,
        "batch_wait_ms": 2.0,
        **(embedder_overrides or {}),
    }
    embedder_config = cfg.load(EmbedderConfig, environ={}, **base, **embedder_settings)
    servers["embedder"] = await server.start(await embedder_main.build(embedder_config), embedder_config)
    gateway_config = cfg.load(
        GatewayConfig,
        environ={},
        **base,
        embedder_addr=servers["embedder"].address,
        search_addr=servers["search"].address,
        catalog_addr=servers["catalog"].address,
        allowed_roots=(str(roots),),
        **gateway_overrides,
    )
    servers["gateway"] = await server.start(await gateway_main.build(gateway_config), gateway_config)
    channel = grpc.aio.insecure_channel(servers["gateway"].address, options=[LOCAL_SUBCHANNELS])
    return Stack(servers, channel, gateway_pb2_grpc.GatewayServiceStub(channel), data, roots)


async def stop_stack(stack: Stack) -> None:
    await stack.channel.close()
    for name in ("gateway", "embedder", "search", "catalog"):
        await stack.servers[name].stop()


@pytest.fixture
async def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = await start_stack(tmp_path)
    yield s
    await stop_stack(s)


@pytest.fixture
def file_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A static HTTP server on loopback over a temporary folder: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
