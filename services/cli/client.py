"""The CLI's connection to the gateway, and what several commands ask of it."""

from __future__ import annotations

import argparse
import dataclasses

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc

from services.cli.output import CliError
from services.common import config as cfg
from services.common.channels import open_blocking_channel

TIMEOUT = 600.0
# The library index, search, ls, monitor and reindex use without --library.
DEFAULT_LIBRARY = "default"
# A service restarting behind the gateway answers UNAVAILABLE for a while:
# the waits between retries of one call, about a minute in all.
INSERT_RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclasses.dataclass(frozen=True)
class CliConfig(cfg.TlsConfig):
    # Where the gateway listens (AUDIOSEARCH_GATEWAY).
    gateway: str = "127.0.0.1:50051"
    # Bearer token for a gateway that requires one (AUDIOSEARCH_TOKEN;
    # --token overrides it). TLS to the gateway: AUDIOSEARCH_TLS_CA_FILE,
    # plus _CERT_FILE and _KEY_FILE where it requires client certificates.
    token: str = ""


def stub(args: argparse.Namespace) -> pb_grpc.GatewayServiceStub:
    config = cfg.load(CliConfig)
    token = (args.token or config.token).strip()
    options = [("grpc.max_receive_message_length", 64 << 20)]
    channel = open_blocking_channel(config.gateway, config, token, options)
    return pb_grpc.GatewayServiceStub(channel)


def unreachable(message: str) -> str:
    """The gateway's UNAVAILABLE, with what the user may check."""
    config = cfg.load(CliConfig)
    message = f"cannot reach the gateway at {config.gateway} ({message}); is `audiosearch serve` running?"
    return message + (
        " Does it speak TLS with a certificate AUDIOSEARCH_TLS_CA_FILE verifies?"
        if config.client_tls
        else " If it speaks TLS, set AUDIOSEARCH_TLS_CA_FILE."
    )


def ensure_library(
    client: pb_grpc.GatewayServiceStub, name: str, model: str, window: float = 0.0, hop: float = 0.0
) -> pb.Library:
    for lib in client.ListLibraries(pb.ListLibrariesRequest(), timeout=TIMEOUT).libraries:
        if lib.name == name:
            if model and lib.model != model:
                raise CliError(
                    "FAILED_PRECONDITION",
                    f"library {name!r} uses model {lib.model}, not {model}; pick another --library",
                )
            return lib
    try:
        request = pb.CreateLibraryRequest(name=name, model=model, window_seconds=window, hop_seconds=hop)
        return client.CreateLibrary(request, timeout=TIMEOUT).library
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # created concurrently
            return ensure_library(client, name, model, window, hop)
        raise
