"""`python -m services.embedder`: run the embedder service."""

from __future__ import annotations

from audiosearch.embedder.v1 import embedder_pb2_grpc as pb_grpc

from services.common import config as cfg
from services.common import server
from services.embedder import metrics as service_metrics
from services.embedder.config import EmbedderConfig
from services.embedder.embedding import Embedder
from services.embedder.registry import Registry, build_models
from services.embedder.servicer import SERVICE_NAME, EmbedderServicer


async def build(config: EmbedderConfig) -> server.ServiceSpec:
    registry = Registry(build_models(config), config.default_model)
    embedder = Embedder(registry, config)
    return server.ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda s: pb_grpc.add_EmbedderServiceServicer_to_server(EmbedderServicer(embedder), s),
        startup=registry.load_all,
        shutdown=embedder.close,
        register_metrics=lambda metrics: service_metrics.register(embedder, metrics),
    )


def main() -> None:
    config = cfg.load(EmbedderConfig)
    server.run("embedder", lambda: build(config), config)


if __name__ == "__main__":
    main()
