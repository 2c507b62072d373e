"""The one config mechanism: a frozen dataclass per service, filled once at
start-up from AUDIOSEARCH_<FIELD> environment variables and passed down."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

PREFIX = "AUDIOSEARCH_"
T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable holds a value of the wrong type."""


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def _convert(raw: str, kind: object, name: str) -> object:
    try:
        if kind is bool:
            value = raw.strip().lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw).expanduser()
        if kind == tuple[str, ...]:
            return tuple(part for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from exc


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: object) -> T:
    """Builds `cls` from the environment; `overrides` win (used by tests)."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        name = env_name(field.name)
        if name in environ:
            values[field.name] = _convert(environ[name], hints[field.name], name)
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """TLS settings, PEM files (empty: plaintext). A process's certificate
    and key are its identity both ways: a server with them speaks TLS, and
    its calls to other services present them as a client certificate. The
    CA verifies the peer: clients' certificates on a server, servers'
    certificates on a client. Services, the CLI and `audiosearch serve`
    read the same AUDIOSEARCH_TLS_* variables."""

    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    # A server with a CA requires client certificates signed by it (mTLS);
    # false lets clients in without one (a gateway whose clients use tokens).
    tls_require_client_cert: bool = True
    # The name to verify in the server's certificate when it is not the
    # host of the address dialled (certificates for "audiosearch.internal"
    # reached at 127.0.0.1).
    tls_server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            given, missing = ("cert", "key") if self.tls_cert_file else ("key", "cert")
            raise ConfigError(f"{env_name(f'tls_{given}_file')} is set but {env_name(f'tls_{missing}_file')} is not")

    @property
    def has_identity(self) -> bool:
        """A certificate and its key are configured."""
        return bool(self.tls_cert_file)

    @property
    def client_tls(self) -> bool:
        """Whether calls made with these settings use TLS."""
        return self.has_identity or bool(self.tls_ca_file)

    def read(self, field: str) -> bytes | None:
        """The contents of the file named by `field` (None if unset).
        Errors name the variable and the path, never the contents."""
        path = getattr(self, field)
        if not path:
            return None
        try:
            return Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise ConfigError(f"{env_name(field)}: cannot read {path}: {exc.strerror}") from None


@dataclasses.dataclass(frozen=True)
class ServerConfig(TlsConfig):
    """Settings every service has. `listen` is on loopback unless set: a
    service reachable from other hosts should have TLS (see TlsConfig)."""

    listen: str = "127.0.0.1:0"
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    # Largest message a service accepts or sends (vectors of long audio).
    max_message_bytes: int = 64 * 1024 * 1024
    # Concurrent RPCs before the server sheds load with RESOURCE_EXHAUSTED
    # (health checks and reflection are always answered, never counted).
    max_concurrent_rpcs: int = 256
    # Seconds in-flight RPCs get to finish after SIGTERM.
    shutdown_grace_seconds: float = 10.0
    # Clients are asked to reconnect after this long (0: never), so that
    # they re-resolve the name and spread onto replicas added since.
    max_connection_age_seconds: float = 300.0
    # Prometheus metrics over HTTP at /metrics on this host:port (empty: not
    # served; they are still counted). `audiosearch serve` sets it.
    metrics_listen: str = ""
    # "json" (one object a line, with the trace id) or "text".
    log_format: str = "json"
    # OpenTelemetry traces: "off", "otlp" (to `otlp_endpoint`, gRPC) or
    # "console" (printed, for debugging).
    tracing: str = "off"
    otlp_endpoint: str = "http://localhost:4317"
    # Fraction of traces started here that are kept; a caller's decision,
    # carried in the traceparent header, is followed.
    trace_sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"{env_name('log_format')}={self.log_format!r}: use json or text")
        if self.tracing not in ("off", "otlp", "console"):
            raise ConfigError(f"{env_name('tracing')}={self.tracing!r}: use off, otlp or console")
        if self.tracing == "otlp" and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"{env_name('otlp_endpoint')}={self.otlp_endpoint!r}: "
                "start it with http:// (plaintext) or https:// (TLS)"
            )
        if not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise ConfigError(f"{env_name('trace_sample_ratio')}={self.trace_sample_ratio}: use a number from 0 to 1")
