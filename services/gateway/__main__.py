"""`python -m services.gateway`: run the public gateway."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc

from services.common import config as cfg
from services.common import server
from services.common.channels import open_channel
from services.gateway.access import load_tokens
from services.gateway.audio_store import AudioStore
from services.gateway.auth import AuthInterceptor
from services.gateway.clients import CatalogClient, EmbedderClient, VectorClient, comebacks
from services.gateway.config import GatewayConfig
from services.gateway.facade import Gateway, Settings
from services.gateway.ports import Backends
from services.gateway.recovery import Recovery
from services.gateway.servicer import SERVICE_NAME, GatewayServicer

log = logging.getLogger(__name__)


def interceptors(config: GatewayConfig) -> list[AuthInterceptor]:
    if not config.auth_tokens_file:
        if not server.is_loopback(config.listen):
            log.warning("no AUDIOSEARCH_AUTH_TOKENS_FILE: any caller reaching %s may do everything", config.listen)
        return []
    tokens = load_tokens(Path(config.auth_tokens_file).expanduser())
    log.info("bearer tokens required: %d principals", len(tokens.entries))
    return [AuthInterceptor(tokens)]


def audio_root(config: GatewayConfig) -> Path | None:
    if not config.keep_audio:
        return None
    return Path(config.audio_dir).expanduser() if config.audio_dir else config.data_dir / "audio"


async def build(config: GatewayConfig) -> server.ServiceSpec:
    auth = interceptors(config)  # a bad tokens file fails before anything is opened
    # Its TLS identity, if any, is also its client certificate for these.
    channels = [
        open_channel(a, config.max_message_bytes, config)
        for a in (config.embedder_addr, config.search_addr, config.catalog_addr)
    ]
    timeout = config.rpc_timeout_seconds
    backends = Backends(
        embedder=EmbedderClient(channels[0], timeout),
        vectors=VectorClient(channels[1], timeout),
        catalog=CatalogClient(channels[2], timeout),
        audio=AudioStore(audio_root(config)),
    )
    settings = Settings(
        max_upload_bytes=config.max_upload_bytes,
        max_top_k=config.max_top_k,
        auto_tags=config.auto_tags,
        allowed_roots=config.allowed_roots,
        repair_stale_seconds=config.repair_stale_seconds,
    )
    gateway = Gateway(backends, settings)
    tasks: list[asyncio.Task[None]] = []

    async def startup() -> None:
        if config.repair_on_start:
            recovery = Recovery(gateway.repair)
            tasks.append(asyncio.create_task(recovery.repair("start-up")))
            tasks.append(asyncio.create_task(recovery.after_comebacks(comebacks(channels[1]))))

    async def shutdown() -> None:
        for task in tasks:
            task.cancel()
        for channel in channels:
            await channel.close()

    return server.ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda s: pb_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(gateway), s),
        startup=startup,
        shutdown=shutdown,
        interceptors=auth,
    )


def main() -> None:
    config = cfg.load(GatewayConfig)
    server.run("gateway", lambda: build(config), config)


if __name__ == "__main__":
    main()
