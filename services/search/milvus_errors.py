"""What a failure of Milvus (or of the disk under Milvus Lite) means for
the caller, as domain errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
from pymilvus import MilvusException

from services.common.errors import ResourceExhausted, ServiceError, Unavailable, disk_full

# Milvus's "collection not loaded" (a collection released by a restart of
# Milvus Lite or by an operator): load it and try again.
NOT_LOADED = 101
# What a call to Milvus may raise: pymilvus passes some gRPC errors through
# unwrapped (a deadline, a refused token).
FAILURES = (MilvusException, grpc.RpcError, grpc.FutureTimeoutError, OSError)


def store_error(exc: BaseException) -> ServiceError:
    """A full disk is RESOURCE_EXHAUSTED, anything else of the store's is
    UNAVAILABLE (retryable), never an internal error."""
    if disk_full(exc):
        return ResourceExhausted("the vector store's disk is full: free space on it, then retry")
    return Unavailable(f"vector store error, retry: {str(exc)[:300]}")


def not_loaded(exc: BaseException) -> bool:
    return isinstance(exc, MilvusException) and (
        getattr(exc, "code", None) == NOT_LOADED or "released" in str(exc) or "not loaded" in str(exc)
    )


def gone(exc: BaseException) -> bool:
    """A collection dropped meanwhile: nothing of the store is damaged."""
    return isinstance(exc, MilvusException) and ("not exist" in str(exc) or "not found" in str(exc))


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    try:
        yield
    except ServiceError:
        raise
    except FAILURES as exc:
        raise store_error(exc) from None
