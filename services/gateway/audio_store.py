"""The uploaded recordings, kept so that a match can be played back: one
file per item under <root>/<library in hex>/<item id>, written before the
item's vectors (so a READY item has its audio) and removed with it.

Segments are decoded here and re-encoded as 16-bit WAV, which every
browser plays, whatever the original format was."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from services.common import reasons
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    disk_full,
)
from services.gateway.ports import Segment

# Longest stretch one request may ask for: 10 min of 48 kHz stereo WAV is 110 MB.
MAX_SEGMENT_SECONDS = 600.0


@contextlib.contextmanager
def _disk_errors(root: Path) -> Iterator[None]:
    """A failing disk under the kept uploads, as the caller should see it."""
    try:
        yield
    except OSError as exc:
        if disk_full(exc):
            raise ResourceExhausted(
                f"the gateway's disk is full (kept uploads in {root}): free space on it, then retry"
            ) from None
        raise Unavailable(f"cannot write the kept upload under {root}: {exc.strerror}; retry") from None


class AudioStore:
    """The audio port (`ports.AudioPort`) over a local folder."""

    def __init__(self, root: Path | None) -> None:
        """`root` None: audio is not kept (AUDIOSEARCH_KEEP_AUDIO=false)."""
        self.root = root

    def _folder(self, library: str) -> Path:
        assert self.root is not None
        return self.root / library.encode().hex()  # any library name, a safe file name

    def _file(self, library: str, item_id: int) -> Path:
        return self._folder(library) / str(int(item_id))

    async def put(self, library: str, item_id: int, data: bytes) -> None:
        if self.root is not None:
            with _disk_errors(self.root):
                await asyncio.to_thread(self._put, self._file(library, item_id), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())  # on disk before the item can become READY
            os.replace(tmp, path)  # readers see the whole file or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def read(self, library: str, item_id: int) -> bytes | None:
        """The kept upload, or None (not kept, or gone)."""
        if self.root is None:
            return None
        path = self._file(library, item_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def delete(self, library: str, item_id: int) -> None:
        if self.root is not None:
            await asyncio.to_thread(self._file(library, item_id).unlink, True)

    async def drop(self, library: str) -> None:
        if self.root is not None:
            await asyncio.to_thread(shutil.rmtree, self._folder(library), True)

    async def segment(self, library: str, item_id: int, duration: float, start: float, end: float) -> Segment:
        """Seconds `start` to `end` (0: the end of the item, or the longest
        segment allowed) of an item `duration` s long."""
        if self.root is None:
            raise FailedPrecondition(
                "this gateway does not keep audio (AUDIOSEARCH_KEEP_AUDIO=false): no playback",
                reason=reasons.PLAYBACK_DISABLED,
            )
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end < 0:
            raise InvalidArgument(
                f"start and end must be seconds from 0, got {start} and {end}",
                reason=reasons.SEGMENT_OUT_OF_RANGE,
                field="start_seconds",
            )
        if duration and start >= duration:
            raise InvalidArgument(
                f"start {start} s is past the end of the item ({duration:.2f} s)",
                reason=reasons.SEGMENT_OUT_OF_RANGE,
                field="start_seconds",
            )
        if end == 0:
            end = min(duration or start + MAX_SEGMENT_SECONDS, start + MAX_SEGMENT_SECONDS)
        elif duration:
            end = min(end, duration)  # clipped first: a range past the end is fine, as at the end
        if end <= start:
            raise InvalidArgument(
                f"end ({end} s) must be after start ({start} s)",
                reason=reasons.SEGMENT_OUT_OF_RANGE,
                field="end_seconds",
            )
        if end - start > MAX_SEGMENT_SECONDS:
            raise InvalidArgument(
                f"a segment is at most {MAX_SEGMENT_SECONDS:.0f} s; asked {end - start:.1f} s",
                reason=reasons.SEGMENT_OUT_OF_RANGE,
                field="end_seconds",
            )
        path = self._file(library, item_id)
        if not path.is_file():
            raise NotFound(f"the audio of item {item_id} is not stored (inserted while audio was not kept?)")
        return await asyncio.to_thread(self._cut, path, start, end)

    @staticmethod
    def _cut(path: Path, start: float, end: float) -> Segment:
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            first = min(round(start * rate), f.frames)
            f.seek(first)
            frames = f.read(max(0, min(round(end * rate), f.frames) - first), dtype="int16", always_2d=True)
        out = io.BytesIO()
        sf.write(out, frames, rate, format="WAV", subtype="PCM_16")
        return Segment(out.getvalue(), first / rate, (first + len(frames)) / rate)
