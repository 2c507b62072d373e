"""Client channels to other services: large messages, keepalive, a retry
policy for UNAVAILABLE so a restarting peer is not an error, and TLS (a
client certificate for mTLS) when the process has TLS settings."""

from __future__ import annotations

import collections
import ipaddress
import json
from collections.abc import Sequence

import grpc

from services.common import tracing
from services.common.config import ConfigError, TlsConfig

_RETRY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


# Connections of this channel only: gRPC otherwise shares them across the
# process's channels by address, and a new channel to an address whose old
# server went away (a restart, a port reused) inherits a connection in
# reconnect backoff and fails at once with "Connection refused" while the
# new server is already listening (seen as a flaky test under load).
LOCAL_SUBCHANNELS = ("grpc.use_local_subchannel_pool", 1)


def reconnect_backoff(max_ms: int = 2000) -> list[tuple[str, object]]:
    """A peer that restarts is reached again within `max_ms` of being back,
    not after gRPC's default backoff (up to 120 s after a long outage)."""
    return [
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", max_ms),
    ]


def channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _RETRY),
        # Calls spread over every address the name resolves to (a headless
        # Kubernetes Service: all replicas), not just the first.
        ("grpc.lb_policy_name", "round_robin"),
        LOCAL_SUBCHANNELS,
        *reconnect_backoff(),
    ]


def client_credentials(tls: TlsConfig | None) -> grpc.ChannelCredentials | None:
    """TLS credentials for calls made with `tls` (None: plaintext). With a
    certificate and key they are presented as the client's (mTLS); without
    a CA file the system's roots verify the server."""
    if tls is None or not tls.client_tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.read("tls_ca_file"),
        private_key=tls.read("tls_key_file"),
        certificate_chain=tls.read("tls_cert_file"),
    )


def _secure(
    options: list[tuple[str, object]], tls: TlsConfig | None
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, object]]]:
    credentials = client_credentials(tls)
    if credentials is not None and tls is not None and tls.tls_server_name:
        options = [*options, ("grpc.ssl_target_name_override", tls.tls_server_name)]
    return credentials, options


def open_channel(
    address: str, max_message_bytes: int = 64 * 1024 * 1024, tls: TlsConfig | None = None
) -> grpc.aio.Channel:
    """An asyncio channel (services calling services); its calls carry the
    trace context when tracing is on."""
    credentials, options = _secure(channel_options(max_message_bytes), tls)
    interceptors = tracing.client_interceptors(address)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (over TLS or, on
    loopback, plaintext; gRPC's call credentials refuse the latter)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def open_blocking_channel(
    address: str,
    tls: TlsConfig | None = None,
    token: str = "",
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A synchronous channel (the CLI, `audiosearch serve`'s health polls),
    sending `token` as a bearer token on every call when given."""
    credentials, opts = _secure([LOCAL_SUBCHANNELS, *options], tls)
    if credentials is None and token and not is_loopback(address):
        raise ConfigError(
            f"refusing to send a bearer token in plaintext to {address}: set AUDIOSEARCH_TLS_CA_FILE (TLS) "
            "or reach the gateway on a loopback address"
        )
    if credentials is None:
        channel = grpc.insecure_channel(address, options=opts)
    else:
        channel = grpc.secure_channel(address, credentials, options=opts)
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (with or without a port)."""
    host = address.rsplit(":", 1)[0].strip("[]") if address.count(":") == 1 or "]" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
