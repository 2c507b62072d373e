"""Which files on the gateway's own machine a request may have it read:
InsertAudioFromPath, and repair and reindex re-reading an item from the
path it was inserted from. Only files under the allowed roots (after
following symlinks), and none larger than an upload may be."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from services.common import reasons
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from services.common.text import quoted


@dataclasses.dataclass(frozen=True)
class ServerPaths:
    allowed_roots: tuple[str, ...]  # empty: reading by server path is disabled
    max_bytes: int

    def read(self, path: str) -> bytes:
        file = self._allowed_file(path)
        size = file.stat().st_size
        if size > self.max_bytes:
            raise ResourceExhausted(f"{quoted(path)} is {size} bytes; the limit is {self.max_bytes}")
        return file.read_bytes()

    def _allowed_file(self, path: str) -> Path:
        if not self.allowed_roots:
            raise PermissionDenied("inserting by server path is disabled; set AUDIOSEARCH_ALLOWED_ROOTS on the gateway")
        if not path or not os.path.isabs(path):
            raise InvalidArgument(f"path must be absolute, got {quoted(path)}", reason=reasons.BAD_PATH, field="path")
        if "\x00" in path:
            raise InvalidArgument("path must not contain NUL characters", reason=reasons.BAD_PATH, field="path")
        resolved = Path(os.path.realpath(path))  # follows symlinks: a link cannot escape a root
        roots = [Path(os.path.realpath(r)) for r in self.allowed_roots]
        if not any(resolved == root or root in resolved.parents for root in roots):
            raise PermissionDenied(f"{quoted(path)} is outside the allowed roots ({', '.join(map(str, roots))})")
        try:
            is_file = resolved.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise InvalidArgument(
                f"unusable path {quoted(path)}: {exc.strerror}", reason=reasons.BAD_PATH, field="path"
            ) from None
        if not is_file:
            raise NotFound(f"no file at {quoted(path)}")
        return resolved
