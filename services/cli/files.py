"""Local audio files: finding them, and streaming one to the gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.cli.output import CliError
from services.common.chunks import Make, file_messages

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"}


def audio_files(paths: list[str], skipped: list[str] | None = None, missing: list[str] | None = None) -> Iterator[Path]:
    """The audio files named or under the folders named; others found in
    the folders go to `skipped`, paths that do not exist to `missing`
    (without it: an error)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                        yield Path(root) / name
                    elif skipped is not None:
                        skipped.append(str(Path(root) / name))
        elif path.is_file():
            yield path
        elif missing is not None:
            missing.append(raw)
        else:
            raise CliError("NOT_FOUND", f"no such file or directory: {raw}")


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def upload(path: Path, first: Any, make: Make) -> Iterator[Any]:
    """The request stream of one file: `first` (the call's parameters) with
    its first chunk, then the rest, a chunk at a time."""
    with path.open("rb") as f:
        yield from file_messages(f, first, make)
