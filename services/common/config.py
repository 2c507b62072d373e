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
class ServerConfig:
    """Settings every service has."""

    listen: str = "127.0.0.1:0"
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    # Largest message a service accepts or sends (vectors of long audio).
    max_message_bytes: int = 64 * 1024 * 1024
    # Concurrent RPCs before the server sheds load with RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 256
    # Seconds in-flight RPCs get to finish after SIGTERM.
    shutdown_grace_seconds: float = 10.0
