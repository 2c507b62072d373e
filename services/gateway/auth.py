"""Bearer-token authentication for the gateway: the transport side of
`services.gateway.access`. Reads `authorization: Bearer <token>` metadata,
refuses a call without a known token with UNAUTHENTICATED, and runs a known
one's handler as its principal. Health and reflection need no token (probes,
`grpcurl list`). Neither tokens nor other metadata are ever logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from services.common.errors import Unauthenticated
from services.common.status import rewrap
from services.gateway import access

log = logging.getLogger(__name__)

# Method prefixes served without a token.
OPEN = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
HOW = "send metadata 'authorization: Bearer <token>' (audiosearch: AUDIOSEARCH_TOKEN or --token)"


def authenticate(tokens: access.Tokens, metadata: Sequence[tuple[str, Any]] | None) -> access.Principal:
    """The principal of a call's metadata; Unauthenticated if there is none."""
    values = [value for key, value in metadata or () if key.lower() == "authorization"]
    if not values:
        raise Unauthenticated(f"missing bearer token: {HOW}")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0].decode(errors="replace") if isinstance(values[0], bytes) else str(values[0])
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(f"authorization metadata is not a bearer token: {HOW}")
    principal = tokens.principal(token.strip())
    if principal is None:
        raise Unauthenticated("invalid bearer token")
    return principal


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Goes inside the error mapping (ServiceSpec.interceptors), which turns
    the Unauthenticated it raises into the status."""

    def __init__(self, tokens: access.Tokens) -> None:
        self.tokens = tokens

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN):
            return handler
        try:
            principal: access.Principal | Unauthenticated = authenticate(
                self.tokens, handler_call_details.invocation_metadata
            )
        except Unauthenticated as exc:
            log.warning("refused %s: %s", method, exc.message)
            principal = exc
        # The principal is set inside the wrapped behaviour, in the call's
        # own task: a context variable set here would not reach the handler.
        return rewrap(handler, _unary(principal), _streaming(principal))


def _act_as(principal: access.Principal | Unauthenticated) -> None:
    if isinstance(principal, Unauthenticated):
        raise Unauthenticated(principal.message)
    access.act_as(principal)


def _unary(principal: access.Principal | Unauthenticated) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _act_as(principal)
            return await behavior(request, context)

        return wrapper

    return wrap


def _streaming(principal: access.Principal | Unauthenticated) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _act_as(principal)
            async for response in behavior(request, context):
                yield response

        return wrapper

    return wrap
