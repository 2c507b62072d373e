"""Finding model weights on disk, or downloading them once with an md5 check.

An existing file is never overwritten or truncated: a download goes to a
temporary file beside the target, is verified, and only then linked into
place (failing if something appeared there meanwhile)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from services.common.config import env_name
from services.embedder.models.base import ModelUnavailable

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    filename: str
    url: str
    md5: str
    # Used in messages only ("327 MB"); the md5 is the check.
    size: int
    description: str
    # An older EmbedderConfig field (AUDIOSEARCH_<FIELD>) naming the file's
    # path; empty for models that have only the weights directory.
    setting: str = ""
    # Older EmbedderConfig fields overriding the URL and md5 (a mirror).
    url_setting: str = ""
    md5_setting: str = ""


# Whether any checkpoint may be downloaded: one flag, named for the first model.
DOWNLOAD_SETTING = "cnn14_download"
WEIGHTS_DIR_SETTING = "weights_dir"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - integrity check against the published md5
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remedy(ckpt: Checkpoint, path: Path) -> str:
    if ckpt.setting:
        where = f"point {env_name(ckpt.setting)} at it"
    else:
        where = f"point {env_name(WEIGHTS_DIR_SETTING)} at the directory holding it"
    return (
        f"{ckpt.description} weights are not at {path}. Download {ckpt.filename} "
        f"({ckpt.size / 1e6:.0f} MB, md5 {ckpt.md5}) from {ckpt.url} and save it as {path} "
        f"(or {where}, or set {env_name(DOWNLOAD_SETTING)}=true on a machine "
        "with internet). Until then, the weights-free models serve: --model fingerprint-v1 (copies, excerpts) "
        "or --model spectral-v1."
    )


def download(url: str, md5: str, path: Path, timeout: float = 60.0) -> Path:
    """Downloads `url` to `path` with a progress bar; verifies md5."""
    from tqdm import tqdm  # here: the model table, which imports this module, is read by the CLI too

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()  # noqa: S324
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {path.name}") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if digest.hexdigest() != md5:
            raise ModelUnavailable(f"download of {url} has md5 {digest.hexdigest()}, expected {md5}; nothing was saved")
        try:
            os.link(tmp, path)  # fails if the target appeared meanwhile: never clobber
        except FileExistsError:
            log.warning("%s appeared during the download; keeping the existing file", path)
        return path
    finally:
        tmp.unlink(missing_ok=True)


def ensure_checkpoint(ckpt: Checkpoint, path: Path, allow_download: bool) -> Path:
    """Returns a path holding the weights, downloading them if allowed."""
    if path.is_file() and path.stat().st_size > 0:
        return path
    if path.exists() and path.stat().st_size == 0:
        raise ModelUnavailable(f"{path} is an empty file (a failed download?); delete it. " + remedy(ckpt, path))
    if not allow_download:
        raise ModelUnavailable(remedy(ckpt, path))
    try:
        return download(ckpt.url, ckpt.md5, path)
    except ModelUnavailable:
        raise
    except OSError as exc:
        raise ModelUnavailable(f"could not download {ckpt.filename}: {exc}. " + remedy(ckpt, path)) from None
