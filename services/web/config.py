"""HTTP service settings (AUDIOSEARCH_* environment variables)."""

from __future__ import annotations

import dataclasses

from services.common.config import ConfigError, TlsConfig, env_name


@dataclasses.dataclass(frozen=True)
class WebConfig(TlsConfig):
    """The TLS settings are for its calls to the gateway; serve it behind
    an ingress or a reverse proxy for HTTPS."""

    # host:port of the HTTP server (the API, /docs and the web page).
    http_listen: str = "127.0.0.1:8080"
    gateway_addr: str = "127.0.0.1:50051"
    # Largest multipart upload accepted (the gateway applies its own limit too).
    max_upload_bytes: int = 512 * 1024 * 1024
    # The gateway's AUDIOSEARCH_MAX_TOP_K (the same variable): the largest
    # top_k a search may ask for, written into /openapi.json and checked here.
    max_top_k: int = 100
    # Upper bound for one call to the gateway.
    rpc_timeout_seconds: float = 300.0
    log_level: str = "INFO"
    log_format: str = "json"

    def __post_init__(self) -> None:
        super().__post_init__()
        host, _, port = self.http_listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{env_name('http_listen')}={self.http_listen!r}: use host:port")
        if self.max_top_k < 1:
            raise ConfigError(f"{env_name('max_top_k')}={self.max_top_k}: use 1 or more")
