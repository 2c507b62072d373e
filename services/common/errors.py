"""Domain exceptions. Domain code raises these; `services.common.status`
maps them to gRPC status codes in one place (and back, for clients).

Each may carry a `reason` (one of `services.common.reasons`: what a client
branches on, sent as google.rpc.ErrorInfo) and the request `field` at fault
(sent as a google.rpc.BadRequest field violation); no grpc here."""

from __future__ import annotations

import errno


class ServiceError(Exception):
    """Base of every error a service reports to its caller on purpose."""

    def __init__(self, message: str, *, reason: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason  # a constant of services.common.reasons, or None
        self.field = field  # the request field at fault (its .proto name), or None


class InvalidArgument(ServiceError):
    """The request itself is wrong: bad audio, bad name, top-k out of range."""


class NotFound(ServiceError):
    """A named library or item does not exist."""


class AlreadyExists(ServiceError):
    """Something with that name exists already."""


class FailedPrecondition(ServiceError):
    """The system is not in a state that allows this (model unavailable,
    library bound to another model)."""


class Unauthenticated(ServiceError):
    """The caller did not say who it is, or said it wrongly (no bearer
    token, an unknown token)."""


class PermissionDenied(ServiceError):
    """The caller may not do this (a path outside the allowed roots, a
    library its token does not grant)."""


class ResourceExhausted(ServiceError):
    """A size or rate limit was hit (upload too large, too long audio)."""


class Unavailable(ServiceError):
    """A dependency cannot be reached right now; retrying may help."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the work finished."""


class Internal(ServiceError):
    """A bug or an unexpected state; the message says what was expected."""


# How a full disk shows, as an OSError or inside the message of a library
# that wraps one (Milvus, a database driver).
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("no space left", f"errno {errno.ENOSPC}", "disk quota exceeded")


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says a disk is full: retrying will not help until
    someone frees space, so callers answer ResourceExhausted, not Unavailable."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _FULL_TEXT)
