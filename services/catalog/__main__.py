"""`python -m services.catalog`: run the catalog service (migrating the
schema first). `python -m services.catalog migrate` only migrates."""

from __future__ import annotations

import asyncio
import sys

from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc

from services.catalog import metrics as service_metrics
from services.catalog.config import CatalogConfig
from services.catalog.database import make_engine, migrate
from services.catalog.repository import Catalog
from services.catalog.servicer import SERVICE_NAME, CatalogServicer
from services.common import config as cfg
from services.common import server


def database_url(config: CatalogConfig) -> str:
    return config.database_url or f"sqlite:///{(config.data_dir / 'catalog.db').resolve()}"


async def build(config: CatalogConfig) -> server.ServiceSpec:
    engine = make_engine(database_url(config))
    catalog = Catalog(engine)

    async def startup() -> None:
        await asyncio.to_thread(migrate, engine)

    async def shutdown() -> None:
        engine.dispose()

    return server.ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda s: pb_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(catalog), s),
        startup=startup,
        shutdown=shutdown,
        register_metrics=lambda metrics: service_metrics.register(catalog, metrics),
    )


def main() -> None:
    config = cfg.load(CatalogConfig)
    if sys.argv[1:] == ["migrate"]:
        migrate(make_engine(database_url(config)))
        return
    server.run("catalog", lambda: build(config), config)


if __name__ == "__main__":
    main()
