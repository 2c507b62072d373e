"""Commands on items: index, get, ls, tag, rename, delete (search: services/cli/commands/search.py)."""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli.client import DEFAULT_LIBRARY, INSERT_RETRY_WAITS, TIMEOUT, ensure_library, stub
from services.cli.files import audio_files, size_of, upload
from services.cli.output import CliError, SystemExitWith, describe, printable
from services.common.jsonview import message_dict


def cmd_index(args: argparse.Namespace) -> tuple[Any, str]:
    from tqdm import tqdm

    client = stub(args)
    skipped: list[str] = []
    missing: list[str] = []
    files = list(audio_files(args.paths, skipped, missing))
    lib = ensure_library(client, args.library, args.model, args.window, args.hop)
    added: list[Any] = []
    existing: list[Any] = []
    # A path that does not exist is a failed entry; the rest still goes in.
    failed = [{"path": raw, "code": "NOT_FOUND", "message": "no such file or directory"} for raw in missing]
    stop = threading.Event()  # Ctrl-C: no new upload, no retry
    calls: set[Any] = set()  # the uploads in flight, cancelled on Ctrl-C
    lock = threading.Lock()

    def call(path: Path, meta: pb.InsertAudioMetadata) -> Any:
        requests = upload(path, meta, lambda m, c: pb.InsertAudioRequest(metadata=m, chunk=c))
        future = client.InsertAudio.future(requests, timeout=TIMEOUT)
        with lock:
            calls.add(future)
        try:
            if stop.is_set():
                future.cancel()
            return future.result()
        finally:
            with lock:
                calls.discard(future)

    def insert(path: Path) -> tuple[Path, Any]:
        if stop.is_set():
            return path, None
        meta = pb.InsertAudioMetadata(library=lib.name, name=path.name, source_uri=str(path.resolve()), tags=args.tag)
        try:
            path.open("rb").close()  # unreadable (a broken link, no permission): a failed file, not a crash
        except OSError as exc:
            return path, exc
        # A service restarting behind the gateway answers UNAVAILABLE: the
        # same upload is retried (items are keyed by content, so a retry
        # resumes or finds the item, never duplicates it) for up to about
        # a minute before the file counts as failed.
        for wait in (*INSERT_RETRY_WAITS, None):
            try:
                return path, call(path, meta)
            except grpc.FutureCancelledError:
                return path, None
            except grpc.RpcError as exc:
                if wait is None or exc.code() != grpc.StatusCode.UNAVAILABLE or stop.wait(wait):
                    return path, None if stop.is_set() else exc
        raise AssertionError("unreachable")

    def summary(interrupted: bool = False) -> tuple[dict[str, Any], str]:
        done = len(added) + len(existing) + len(failed) - len(missing)
        doc = {
            "library": lib.name,
            "model": lib.model,
            "added": len(added),
            "existing": len(existing),
            "failed": failed,
            "skipped": len(skipped),
        }
        text = (
            f"{lib.name} ({lib.model}): {len(added)} added, {len(existing)} already indexed (duplicates), "
            f"{len(failed)} failed, {len(skipped)} not audio (skipped by extension)"
        )
        for f in failed[:20]:
            text += f"\n  failed: {printable(f['path'])}: {f['code']}: {f['message']}"
        if len(failed) > 20:
            text += f"\n  ... and {len(failed) - 20} more (--json lists all)"
        if interrupted:
            doc.update(interrupted=True, done=done, total=len(files))
            text += f"\ninterrupted: {done} of {len(files)} done; run the same command again to continue"
        return doc, text

    # Progress in bytes (rate in MB/s, time left), the files done beside it.
    def tally(path: Path, result: Any) -> None:
        if isinstance(result, grpc.RpcError):
            failed.append({"path": str(path), "code": result.code().name, "message": result.details()})
        elif isinstance(result, OSError):
            failed.append({"path": str(path), "code": "NOT_FOUND", "message": f"cannot read: {result.strerror}"})
        elif result is not None:  # None: cancelled by Ctrl-C
            (added if result.created else existing).append(message_dict(result.item))

    total = sum(size_of(f) for f in files)
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    futures = [pool.submit(insert, f) for f in files]
    counted = 0
    try:
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"indexing into {lib.name}", disable=args.json or None
        ) as bar:
            for future in futures:
                path, result = future.result()
                counted += 1  # before the tally: an interrupt in between undercounts, never counts twice
                tally(path, result)
                bar.update(size_of(path))
                bar.set_postfix_str(f"{counted}/{len(files)} files, {len(failed)} failed", refresh=False)
    except KeyboardInterrupt:
        # The uploads in flight are cancelled (a cancelled insert leaves
        # nothing that the next run, or `repair`, does not finish or clear);
        # what finished, in order or not, is counted.
        stop.set()
        with lock:
            for c in list(calls):
                c.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures[counted:]:
            if future.done() and not future.cancelled() and future.exception() is None:
                tally(*future.result())
        doc, text = summary(interrupted=True)
        raise SystemExitWith(doc, text, 130) from None
    pool.shutdown(wait=True)
    doc, text = summary()
    if failed:
        raise SystemExitWith(doc, text, 1)
    return doc, text


def cmd_get(args: argparse.Namespace) -> tuple[Any, str]:
    d = message_dict(stub(args).GetAudio(pb.GetAudioRequest(id=args.id), timeout=TIMEOUT).item)
    return d, describe(d)


def cmd_ls(args: argparse.Namespace) -> tuple[Any, str]:
    client, items, token = stub(args), [], ""
    library = "" if args.all else args.library or DEFAULT_LIBRARY  # "": every library
    while True:
        request = pb.ListAudioRequest(library=library, page_size=500, page_token=token, tag=args.tag or "")
        try:
            page = client.ListAudio(request, timeout=TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and not args.library and not args.all:
                hint = "; `audiosearch libraries` lists the libraries, `ls --all` the items of every library"
                raise CliError("NOT_FOUND", f"{exc.details()}{hint}") from None
            raise
        items.extend(message_dict(i) for i in page.items)
        token = page.next_page_token
        if not token or (args.limit and len(items) >= args.limit):
            break
    if args.limit:
        items = items[: args.limit]
    return items, "\n".join(describe(d) for d in items) or "no items"


def cmd_delete(args: argparse.Namespace) -> tuple[Any, str]:
    stub(args).DeleteAudio(pb.DeleteAudioRequest(id=args.id), timeout=TIMEOUT)
    return {"deleted": args.id}, f"deleted {args.id}"


def _update(args: argparse.Namespace, request: pb.UpdateAudioRequest) -> tuple[Any, str]:
    d = message_dict(stub(args).UpdateAudio(request, timeout=TIMEOUT).item)
    return d, describe(d)


def cmd_tag(args: argparse.Namespace) -> tuple[Any, str]:
    return _update(args, pb.UpdateAudioRequest(id=args.id, add_tags=args.add, remove_tags=args.remove))


def cmd_rename(args: argparse.Namespace) -> tuple[Any, str]:
    return _update(args, pb.UpdateAudioRequest(id=args.id, name=args.name))
