"""The one error mapping and deadline propagation."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common import deadlines, errors, reasons
from services.common.status import (
    DETAILS_KEY,
    VIOLATION_LIMIT,
    Details,
    ErrorInterceptor,
    code_for,
    details_of,
    from_rpc_error,
    rich_status,
)
from services.common.text import MESSAGE_LIMIT, bounded


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.Internal("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_round_trip_through_a_status(exc: errors.ServiceError, code: grpc.StatusCode) -> None:
    assert code_for(exc) == code
    back = from_rpc_error(FakeRpcError(code, "the message"), "catalog")
    assert type(back) is type(exc)


def test_downstream_unavailability_names_the_service() -> None:
    exc = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"), "search")
    assert isinstance(exc, errors.Unavailable) and "search service" in exc.message
    exc = from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, ""), "embedder")
    assert isinstance(exc, errors.DeadlineExceeded) and "embedder" in exc.message


async def test_downstream_calls_get_what_is_left_of_the_deadline() -> None:
    async def handler() -> tuple[float, float]:
        deadlines.set_time_remaining(2.0)
        first = deadlines.timeout(300)
        await asyncio.sleep(0.2)
        return first, deadlines.timeout(300)

    first, later = await asyncio.create_task(handler())
    # Bounds from the sleep alone, not from how fast this machine is.
    assert 0 < first <= 2.0 and later <= first - 0.19  # asyncio may wake up to a clock tick early
    assert deadlines.timeout(300) == 300  # another task: no deadline leaks across requests
    deadlines.set_time_remaining(None)
    assert deadlines.timeout(5) == 5


# Rich details: ErrorInfo reasons and BadRequest field violations, both ways.


class DetailedRpcError(FakeRpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailer: tuple[tuple[str, bytes], ...]) -> None:
        super().__init__(code, details)
        self._trailer = trailer

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailer


def sent(exc: errors.ServiceError) -> DetailedRpcError:
    """`exc` as a client receives it from a server's error mapping."""
    code, message = code_for(exc), bounded(exc.message)
    rich = rich_status(exc, code, message)
    trailer = () if rich is None else rpc_status.to_status(rich).trailing_metadata
    return DetailedRpcError(code, message, trailer)


def test_reason_and_field_survive_a_hop() -> None:
    exc = errors.InvalidArgument("top_k must be 1..100", reason=reasons.TOP_K_OUT_OF_RANGE, field="top_k")
    back = from_rpc_error(sent(exc), "gateway")
    assert type(back) is errors.InvalidArgument
    assert (back.reason, back.field, back.message) == (reasons.TOP_K_OUT_OF_RANGE, "top_k", exc.message)
    # ...and again, the next service along passes on what it got.
    again = from_rpc_error(sent(back), "gateway")
    assert (again.reason, again.field) == (reasons.TOP_K_OUT_OF_RANGE, "top_k")


def test_rich_status_holds_error_info_and_bad_request() -> None:
    exc = errors.InvalidArgument("x" * 5000, reason=reasons.NOT_AUDIO, field="chunk")
    rich = rich_status(exc, grpc.StatusCode.INVALID_ARGUMENT, bounded(exc.message))
    assert rich is not None and rich.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert rich.details[0].Unpack(info) and rich.details[1].Unpack(bad)
    assert (info.reason, info.domain) == (reasons.NOT_AUDIO, reasons.DOMAIN)
    assert bad.field_violations[0].field == "chunk"
    assert len(bad.field_violations[0].description.encode()) <= VIOLATION_LIMIT
    assert len(rich.SerializeToString()) < 2 * MESSAGE_LIMIT  # the trailer stays far below 8 KiB


@pytest.mark.parametrize("exc", [errors.InvalidArgument("x"), errors.FailedPrecondition("x")])
def test_every_invalid_argument_and_failed_precondition_has_a_reason(exc: errors.ServiceError) -> None:
    back = from_rpc_error(sent(exc), "catalog")
    assert back.reason == code_for(exc).name and back.field is None


def test_other_codes_without_a_reason_send_no_details() -> None:
    assert rich_status(errors.NotFound("x"), grpc.StatusCode.NOT_FOUND, "x") is None
    exc = errors.ResourceExhausted("big", reason=reasons.AUDIO_TOO_LONG)
    assert from_rpc_error(sent(exc), "embedder").reason == reasons.AUDIO_TOO_LONG


def test_unreadable_or_contradicting_details_are_ignored() -> None:
    garbage = DetailedRpcError(grpc.StatusCode.INVALID_ARGUMENT, "m", ((DETAILS_KEY, b"\xff\xff\xff"),))
    assert details_of(garbage) == Details()
    other = sent(errors.FailedPrecondition("m", reason=reasons.MODEL_UNAVAILABLE))
    lying = DetailedRpcError(grpc.StatusCode.NOT_FOUND, "m", other.trailing_metadata())
    assert from_rpc_error(lying, "catalog").reason is None
    assert from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "m"), "catalog").reason is None


async def test_the_interceptor_sends_what_a_plain_client_reads() -> None:
    async def failing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise errors.InvalidArgument("top_k out of range", reason=reasons.TOP_K_OUT_OF_RANGE, field="top_k")

    async def streaming(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        yield b"first"
        raise errors.FailedPrecondition("no weights", reason=reasons.MODEL_UNAVAILABLE)

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(failing),
        "Stream": grpc.unary_stream_rpc_method_handler(streaming),
    }
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Errors", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Errors/Unary")(b"")
            status = rpc_status.from_call(caught.value)  # grpcio-status' own reader agrees
            assert status is not None and status.message == "top_k out of range"
            assert details_of(caught.value) == Details(reasons.TOP_K_OUT_OF_RANGE, (("top_k", "top_k out of range"),))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in channel.unary_stream("/test.Errors/Stream")(b""):
                    pass
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert from_rpc_error(caught.value, "x").reason == reasons.MODEL_UNAVAILABLE
    finally:
        await server.stop(None)
