"""`python -m services.web`: the HTTP/JSON API, /docs and the web page."""

from __future__ import annotations

import asyncio

import uvicorn

from services.common import config as cfg
from services.common import lifeline, logs
from services.common.channels import open_channel
from services.web.app import create_app
from services.web.config import WebConfig


async def serve(config: WebConfig) -> None:
    channel = open_channel(config.gateway_addr, tls=config)  # uploads and audio travel in 256 KiB chunks
    app = create_app(config, channel)
    host, _, port = config.http_listen.rpartition(":")
    server = uvicorn.Server(
        uvicorn.Config(app, host=host.strip("[]"), port=int(port), log_config=None, access_log=False, lifespan="off")
    )
    try:
        await server.serve()  # stops on SIGTERM or SIGINT, letting requests finish
    finally:
        await channel.close()


def main() -> None:
    lifeline.bind_to_parent()  # first: a web page outliving `audiosearch serve` would hold its port
    config = cfg.load(WebConfig)
    logs.setup(config.log_level, config.log_format, "web")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
