"""The one config mechanism."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError, load
from services.embedder.config import EmbedderConfig
from services.gateway.config import GatewayConfig


def test_reads_typed_values_from_the_environment() -> None:
    env = {
        "AUDIOSEARCH_MAX_BATCH": "32",
        "AUDIOSEARCH_CNN14_DOWNLOAD": "no",
        "AUDIOSEARCH_CNN14_CHECKPOINT": "/w/c.pth",
        "AUDIOSEARCH_MODELS": "spectral-v1",
        "AUDIOSEARCH_BATCH_WAIT_MS": "2.5",
    }
    config = load(EmbedderConfig, env)
    assert config.max_batch == 32 and config.cnn14_download is False and config.batch_wait_ms == 2.5
    assert config.cnn14_checkpoint == Path("/w/c.pth") and config.models == ("spectral-v1",)
    assert load(EmbedderConfig, {}).listen == "127.0.0.1:50052"
    assert load(GatewayConfig, {"AUDIOSEARCH_ALLOWED_ROOTS": "/a,/b"}).allowed_roots == ("/a", "/b")


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="AUDIOSEARCH_MAX_BATCH"):
        load(EmbedderConfig, {"AUDIOSEARCH_MAX_BATCH": "many"})
    with pytest.raises(ConfigError, match="AUDIOSEARCH_CNN14_DOWNLOAD"):
        load(EmbedderConfig, {"AUDIOSEARCH_CNN14_DOWNLOAD": "perhaps"})
