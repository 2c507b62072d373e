"""Why `audiosearch serve` cannot start or go on: each message is for the user."""

from __future__ import annotations


class StackError(RuntimeError):
    """The stack cannot start or go on; the message says why, for the user."""


class PortInUse(StackError):
    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use (another audiosearch serve?)")
        self.port = port


class DataDirInUse(StackError):
    pass


class StartFailed(StackError):
    pass


class CrashLoop(StackError):
    pass


class Interrupted(StackError):
    """SIGINT or SIGTERM arrived during `start`; what had started is stopped."""
