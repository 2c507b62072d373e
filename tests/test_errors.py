"""The one error mapping and deadline propagation."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common import deadlines, errors
from services.common.status import code_for, from_rpc_error


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
