"""Gateway settings (AUDIOSEARCH_* environment variables)."""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig


@dataclasses.dataclass(frozen=True)
class GatewayConfig(ServerConfig):
    listen: str = "127.0.0.1:50051"
    embedder_addr: str = "127.0.0.1:50052"
    search_addr: str = "127.0.0.1:50053"
    catalog_addr: str = "127.0.0.1:50054"
    # Directories InsertAudioFromPath may read from (comma-separated).
    # Empty: inserting by server path is disabled.
    allowed_roots: tuple[str, ...] = ()
    max_upload_bytes: int = 512 * 1024 * 1024
    max_top_k: int = 100
    # Automatic tags stored per item (models that produce tags).
    auto_tags: int = 5
    # Upper bound for any downstream call; the caller's deadline may cut it.
    rpc_timeout_seconds: float = 300.0
    # Bearer-token authentication: a TOML (.toml) or JSON file of principals,
    # their token hashes and the libraries they may read or write
    # (docs/security.md). Empty: no authentication, every caller may do
    # everything; keep such a gateway on loopback.
    auth_tokens_file: str = ""
    # Repair (GatewayService.Repair): a PENDING item untouched this long is
    # an abandoned insert. The gateway also repairs once on start, in the
    # background, retrying until the other services answer, and again each
    # time the search service comes back from a restart.
    repair_stale_seconds: float = 900.0
    repair_on_start: bool = True
    # Keep each upload (in `audio_dir`, default <data_dir>/audio) so matches
    # can be played back (GetAudioSegment) and re-embedded by repair. Off:
    # only vectors and metadata are stored.
    keep_audio: bool = True
    audio_dir: str = ""
