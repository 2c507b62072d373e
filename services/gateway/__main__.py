"""`python -m services.gateway`: run the public gateway."""

from __future__ import annotations

from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc

from services.common import config as cfg
from services.common import server
from services.common.channels import open_channel
from services.gateway.clients import CatalogClient, EmbedderClient, VectorClient
from services.gateway.config import GatewayConfig
from services.gateway.orchestrator import Gateway, Settings
from services.gateway.servicer import SERVICE_NAME, GatewayServicer


async def build(config: GatewayConfig) -> server.ServiceSpec:
    channels = [
        open_channel(a, config.max_message_bytes)
        for a in (config.embedder_addr, config.search_addr, config.catalog_addr)
    ]
    timeout = config.rpc_timeout_seconds
    gateway = Gateway(
        EmbedderClient(channels[0], timeout),
        VectorClient(channels[1], timeout),
        CatalogClient(channels[2], timeout),
        Settings(config.max_upload_bytes, config.max_top_k, config.auto_tags, config.allowed_roots),
    )

    async def shutdown() -> None:
        for channel in channels:
            await channel.close()

    return server.ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda s: pb_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(gateway), s),
        shutdown=shutdown,
    )


def main() -> None:
    config = cfg.load(GatewayConfig)
    server.run(lambda: build(config), config)


if __name__ == "__main__":
    main()
