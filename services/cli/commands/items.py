"""Commands on items: index, search, get, ls, delete."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli.client import INSERT_RETRY_WAITS, TIMEOUT, ensure_library, stub
from services.cli.files import audio_files, size_of, upload
from services.cli.output import CliError, SystemExitWith, describe, printable
from services.common.jsonview import message_dict


def cmd_index(args: argparse.Namespace) -> tuple[Any, str]:
    from tqdm import tqdm

    client = stub(args)
    skipped: list[str] = []
    files = list(audio_files(args.paths, skipped))
    lib = ensure_library(client, args.library, args.model, args.window, args.hop)
    added, existing, failed = [], [], []

    def insert(path: Path) -> tuple[Path, Any]:
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
                return path, client.InsertAudio(
                    upload(path, meta, lambda m, c: pb.InsertAudioRequest(metadata=m, chunk=c)), timeout=TIMEOUT
                )
            except grpc.RpcError as exc:
                if wait is None or exc.code() != grpc.StatusCode.UNAVAILABLE:
                    return path, exc
            time.sleep(wait)
        raise AssertionError("unreachable")

    # Progress in bytes (rate in MB/s, time left), the files done beside it.
    total = sum(size_of(f) for f in files)
    with (
        ThreadPoolExecutor(max_workers=args.jobs) as pool,
        tqdm(
            total=total, unit="B", unit_scale=True, desc=f"indexing into {lib.name}", disable=args.json or None
        ) as bar,
    ):
        for done, (path, result) in enumerate(pool.map(insert, files), 1):
            bar.update(size_of(path))
            if isinstance(result, grpc.RpcError):
                failed.append({"path": str(path), "code": result.code().name, "message": result.details()})
            elif isinstance(result, OSError):
                failed.append({"path": str(path), "code": "NOT_FOUND", "message": f"cannot read: {result.strerror}"})
            else:
                (added if result.created else existing).append(message_dict(result.item))
            bar.set_postfix_str(f"{done}/{len(files)} files, {len(failed)} failed", refresh=False)
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
    if failed:
        raise SystemExitWith(doc, text, 1)
    return doc, text


def cmd_search(args: argparse.Namespace) -> tuple[Any, str]:
    client = stub(args)
    params = pb.SearchParams(
        library=args.library, top_k=args.top_k, item_id=args.like or 0, tags=args.tag, min_score=args.min_score
    )
    if args.like:
        if args.file:
            raise CliError("INVALID_ARGUMENT", "give either FILE or --like ID, not both")
        response = client.SearchAudio(iter([pb.SearchAudioRequest(params=params)]), timeout=TIMEOUT)
    else:
        if not args.file:
            raise CliError("INVALID_ARGUMENT", "give a FILE to search with, or --like ID")
        path = Path(args.file)
        if not path.is_file():
            raise CliError("NOT_FOUND", f"no such file: {args.file}")
        response = client.SearchAudio(
            upload(path, params, lambda p, c: pb.SearchAudioRequest(params=p, chunk=c)), timeout=TIMEOUT
        )
    results = []
    for rank, r in enumerate(response.results, 1):
        d = message_dict(r.item)
        d.update(
            rank=rank,
            score=round(r.score, 6),
            evidence=round(r.evidence, 6),
            item_range=[round(r.item_range.start_seconds, 2), round(r.item_range.end_seconds, 2)],
            query_range=[round(r.query_range.start_seconds, 2), round(r.query_range.end_seconds, 2)],
        )
        if r.speed:  # a landmark model: the score is a confidence, the copy's speed and pitch are estimated
            d.update(speed=round(r.speed, 4), pitch=round(r.pitch, 4))
        results.append(d)
    factors = any("speed" in d for d in results)
    head = f"{'#':>3}  {'score':>6}  {'id':>6}  {'duration':>8}  {'match in item':>15}  "
    lines = [head + ("speed  pitch  " if factors else "") + "name  (source)"]
    for d in results:
        span = f"{d['item_range'][0]:.1f}-{d['item_range'][1]:.1f}s"
        played = f"x{d['speed']:.3f} x{d['pitch']:.3f}  " if factors else ""
        lines.append(
            f"{d['rank']:>3}  {d['score']:6.3f}  {d['id']:>6}  {d['duration_seconds']:7.2f}s  {span:>15}  "
            f"{played}{d['name']}  ({d['source_uri']})"
        )
    if not results:
        lines.append(f"  no match (no item reaches the {response.model} threshold; --min-score -1 shows all)")
    return results, "\n".join(lines)


def cmd_get(args: argparse.Namespace) -> tuple[Any, str]:
    d = message_dict(stub(args).GetAudio(pb.GetAudioRequest(id=args.id), timeout=TIMEOUT).item)
    return d, describe(d)


def cmd_ls(args: argparse.Namespace) -> tuple[Any, str]:
    client, items, token = stub(args), [], ""
    while True:
        page = client.ListAudio(
            pb.ListAudioRequest(library=args.library, page_size=500, page_token=token, tag=args.tag or ""),
            timeout=TIMEOUT,
        )
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
