"""`audiosearch` commands. Every command takes --json and then prints one
JSON document on stdout (errors too: {"error": {"code", "message"}})."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc as pb_grpc
from google.protobuf.json_format import MessageToDict

from services.common import config as cfg
from services.common.channels import open_blocking_channel

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"}
CHUNK = 1 << 20
TIMEOUT = 600.0
INSERT_RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclasses.dataclass(frozen=True)
class CliConfig(cfg.TlsConfig):
    # Where the gateway listens (AUDIOSEARCH_GATEWAY).
    gateway: str = "127.0.0.1:50051"
    # Bearer token for a gateway that requires one (AUDIOSEARCH_TOKEN;
    # --token overrides it). TLS to the gateway: AUDIOSEARCH_TLS_CA_FILE,
    # plus _CERT_FILE and _KEY_FILE where it requires client certificates.
    token: str = ""


class CliError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def stub(args: argparse.Namespace) -> pb_grpc.GatewayServiceStub:
    config = cfg.load(CliConfig)
    token = (args.token or config.token).strip()
    options = [("grpc.max_receive_message_length", 64 << 20)]
    channel = open_blocking_channel(config.gateway, config, token, options)
    return pb_grpc.GatewayServiceStub(channel)


def printable(text: str) -> str:
    """`text` for a terminal: what would move the cursor, recolour or reorder
    it (controls, a right-to-left override in a file name) as escapes."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def item_dict(item: pb.AudioItem) -> dict[str, Any]:
    return MessageToDict(item, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def audio_files(paths: list[str], skipped: list[str] | None = None) -> Iterator[Path]:
    """The audio files named or under the folders named; others found in
    the folders go to `skipped`."""
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
        else:
            raise CliError("NOT_FOUND", f"no such file or directory: {raw}")


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def file_chunks(path: Path, first: Any, make: Any) -> Iterator[Any]:
    with path.open("rb") as f:
        yield make(first, f.read(CHUNK))
        for block in iter(lambda: f.read(CHUNK), b""):
            yield make(None, block)


def ensure_library(
    client: pb_grpc.GatewayServiceStub, name: str, model: str, window: float = 0.0, hop: float = 0.0
) -> pb.Library:
    for lib in client.ListLibraries(pb.ListLibrariesRequest(), timeout=TIMEOUT).libraries:
        if lib.name == name:
            if model and lib.model != model:
                raise CliError(
                    "FAILED_PRECONDITION",
                    f"library {name!r} uses model {lib.model}, not {model}; pick another --library",
                )
            return lib
    try:
        request = pb.CreateLibraryRequest(name=name, model=model, window_seconds=window, hop_seconds=hop)
        return client.CreateLibrary(request, timeout=TIMEOUT).library
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # created concurrently
            return ensure_library(client, name, model, window, hop)
        raise


# Commands: each returns (json document, human text).


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
                    file_chunks(path, meta, lambda m, c: pb.InsertAudioRequest(metadata=m, chunk=c)), timeout=TIMEOUT
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
                (added if result.created else existing).append(item_dict(result.item))
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
            file_chunks(path, params, lambda p, c: pb.SearchAudioRequest(params=p, chunk=c)), timeout=TIMEOUT
        )
    results = []
    for rank, r in enumerate(response.results, 1):
        d = item_dict(r.item)
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


def describe(d: dict[str, Any]) -> str:
    tags = ", ".join(d["user_tags"] + [f"{t['label']} ({t['score']:.2f})" for t in d["auto_tags"]])
    return (
        f"{d['id']}: {d['name']} [{d['library']}] {d['duration_seconds']:.2f}s "
        f"{d['sample_rate']} Hz x{d['channels']}  {d['source_uri']}" + (f"\n    tags: {tags}" if tags else "")
    )


def cmd_get(args: argparse.Namespace) -> tuple[Any, str]:
    d = item_dict(stub(args).GetAudio(pb.GetAudioRequest(id=args.id), timeout=TIMEOUT).item)
    return d, describe(d)


def cmd_ls(args: argparse.Namespace) -> tuple[Any, str]:
    client, items, token = stub(args), [], ""
    while True:
        page = client.ListAudio(
            pb.ListAudioRequest(library=args.library, page_size=500, page_token=token, tag=args.tag or ""),
            timeout=TIMEOUT,
        )
        items.extend(item_dict(i) for i in page.items)
        token = page.next_page_token
        if not token or (args.limit and len(items) >= args.limit):
            break
    if args.limit:
        items = items[: args.limit]
    return items, "\n".join(describe(d) for d in items) or "no items"


def cmd_delete(args: argparse.Namespace) -> tuple[Any, str]:
    stub(args).DeleteAudio(pb.DeleteAudioRequest(id=args.id), timeout=TIMEOUT)
    return {"deleted": args.id}, f"deleted {args.id}"


def cmd_stats(args: argparse.Namespace) -> tuple[Any, str]:
    response = stub(args).Stats(pb.StatsRequest(), timeout=TIMEOUT)
    doc = MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    lines = [f"{'library':<20} {'model':<14} {'items':>7} {'pending':>7} {'indexed':>7} {'vectors':>8} {'hours':>7}"]
    for s in response.libraries:
        lines.append(
            f"{s.name:<20} {s.model:<14} {s.items:>7} {s.pending_items:>7} {s.indexed_items:>7} {s.vectors:>8} "
            f"{s.total_duration_seconds / 3600:>7.2f}"
        )
    lines.append(f"models (default {response.default_model}):")
    for m in response.models:
        state = "available" if m.available else f"unavailable: {m.unavailable_reason}"
        lines.append(f"  {m.name} ({m.version}, {m.dim}-d): {state}")
    return doc, "\n".join(lines)


def cmd_libraries(args: argparse.Namespace) -> tuple[Any, str]:
    response = stub(args).ListLibraries(pb.ListLibrariesRequest(), timeout=TIMEOUT)
    docs = [MessageToDict(lib, preserving_proto_field_name=True) for lib in response.libraries]
    return docs, "\n".join(
        f"{lib.name}: {lib.model} ({lib.dim}-d) {lib.description}" for lib in response.libraries
    ) or "no libraries"


def cmd_repair(args: argparse.Namespace) -> tuple[Any, str]:
    request = pb.RepairRequest(dry_run=args.dry_run, stale_after_seconds=args.stale_after)
    response = stub(args).Repair(request, timeout=TIMEOUT)
    actions = [
        {
            "kind": pb.RepairKind.Name(a.kind).removeprefix("REPAIR_KIND_").lower(),
            "library": a.library,
            "item_id": a.item_id,
            "detail": a.detail,
        }
        for a in response.actions
    ]
    verb = "would fix" if args.dry_run else "fixed"
    lines = [f"{verb} {len(actions)} inconsistencies" if actions else "nothing to fix"]
    lines += [
        f"  {a['kind']}: {a['library']}" + (f" item {a['item_id']}" if a["item_id"] else "") + f": {a['detail']}"
        for a in actions
    ]
    return {"dry_run": args.dry_run, "actions": actions}, "\n".join(lines)


def _failure_dict(f: pb.ReindexFailure) -> dict[str, Any]:
    return {"id": f.item_id, "name": f.name, "reason": f.reason}


def cmd_reindex(args: argparse.Namespace) -> tuple[Any, str]:
    from tqdm import tqdm

    client = stub(args)
    request = pb.ReindexLibraryRequest(
        library=args.library, model=args.model, window_seconds=args.window, hop_seconds=args.hop
    )
    failures: dict[int, dict[str, Any]] = {}
    last = pb.ReindexLibraryResponse()

    def doc(**extra: Any) -> dict[str, Any]:
        return {
            "library": args.library,
            "model": args.model,
            "total": last.total_items,
            "reindexed": last.reindexed_items,
            "skipped": last.skipped_items,
            "failed": list(failures.values()),
            "elapsed_seconds": round(last.elapsed_seconds, 3),
            **extra,
        }

    def failed_lines() -> str:
        lines = [
            f"\n  cannot re-embed item {f['id']} ({printable(f['name'])}): {f['reason']}" for f in failures.values()
        ]
        more = f"\n  ... and {len(lines) - 20} more (--json lists all)" if len(lines) > 20 else ""
        return "".join(lines[:20]) + more

    waits = iter(INSERT_RETRY_WAITS)
    desc = f"reindexing {args.library} to {args.model}"
    with tqdm(total=0, unit="item", desc=desc, disable=args.json or None) as bar:

        def note(text: str) -> None:  # beside the bar, on stderr; --json: only the document
            if not args.json:
                bar.write(text, file=sys.stderr)

        try:
            while True:
                # No deadline: a move takes as long as its library needs, and
                # says so as it goes. Ctrl-C cancels it; the library stays on
                # its model and the same command continues later.
                call = client.ReindexLibrary(request)
                try:
                    for message in call:
                        if message.HasField("failure"):
                            failures[message.failure.item_id] = _failure_dict(message.failure)
                            note(
                                f"cannot re-embed item {message.failure.item_id} "
                                f"({printable(message.failure.name)}): {message.failure.reason}"
                            )
                        if message.reindexed_items > last.reindexed_items:
                            waits = iter(INSERT_RETRY_WAITS)  # progress: a later outage gets the full retries again
                        last = message
                        bar.total = message.total_items
                        bar.n = message.reindexed_items + message.skipped_items + message.failed_items
                        bar.set_postfix_str(
                            f"{message.reindexed_items} re-embedded, {message.skipped_items} done earlier, "
                            f"{message.failed_items} failed",
                            refresh=False,
                        )
                        bar.refresh()
                    break
                except grpc.RpcError as exc:
                    # A gateway (or a service behind it) restarting: the same
                    # call again continues where this one stopped.
                    wait = next(waits, None) if exc.code() == grpc.StatusCode.UNAVAILABLE else None
                    if wait is None:
                        error = {"code": exc.code().name, "message": exc.details()}
                        text = f"error: {exc.code().name}: {exc.details()}"  # the failed items were shown as they came
                        raise SystemExitWith(doc(error=error), text, 1) from None
                    note(f"gateway unavailable ({exc.details()}); retrying in {wait:g} s")
                    time.sleep(wait)
        except KeyboardInterrupt:
            call.cancel()
            text = (
                f"interrupted: library {args.library} stays on its model and fully searchable; "
                "run the same command again to continue where it stopped"
            )
            raise SystemExitWith(doc(interrupted=True), text, 130) from None
    outcome = pb.ReindexOutcome.Name(last.outcome).removeprefix("REINDEX_OUTCOME_").lower()
    library = MessageToDict(last.library, preserving_proto_field_name=True)
    result = doc(outcome=outcome, previous_model=last.previous_model, detail=last.detail, library=library)
    text = last.detail
    if last.outcome == pb.REINDEX_OUTCOME_SWITCHED:
        text += (
            f"\n  {last.reindexed_items} re-embedded, {last.skipped_items} already done by an earlier run, "
            f"{last.failed_items} failed, in {last.elapsed_seconds:.1f} s"
        )
    if failures:  # shown as they came; listed again below the summary
        raise SystemExitWith(result, text + failed_lines(), 1)
    return result, text


def cmd_serve(args: argparse.Namespace) -> tuple[Any, str]:
    from services.cli.supervisor import Interrupted, Stack, StackError

    stack = Stack(
        Path(args.data_dir),
        args.host,
        args.port,
        metrics_port=args.metrics_port,
        http_port=args.http_port,
        start_timeout=args.start_timeout,
        unhealthy_after=args.unhealthy_after,
    )
    try:
        # One signal handler from start to stop: a SIGTERM right after the
        # "serving" line still stops the stack in order.
        with stack.stop_on_signals():
            stack.start()  # preflight first: a live serve on DATA_DIR or a taken port fails in well under 5 s
            metrics = ", ".join(f"{name} http://{a}/metrics" for name, a in stack.metrics_addresses.items())
            web = (
                f"; web page and HTTP API on http://{stack.addresses['web']}/ (docs at /docs)" if args.http_port else ""
            )
            print(
                f"audiosearch serving on {stack.addresses['gateway']}{web} "
                f"(data in {stack.data_dir}, logs in {stack.data_dir / 'logs'}"
                f"{'; metrics: ' + metrics if metrics else ''}); Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            stack.watch()
    except Interrupted:
        pass
    except StackError as exc:
        doc = {"error": {"code": "UNAVAILABLE", "message": str(exc)}}
        raise SystemExitWith(doc, f"audiosearch: {exc}", 1) from None
    finally:
        stack.stop()
    return {"stopped": True}, "stopped"


def cmd_fetch_weights(args: argparse.Namespace) -> tuple[Any, str]:
    from services.embedder.config import EmbedderConfig
    from services.embedder.models.base import ModelUnavailable
    from services.embedder.models.checkpoint import CHECKPOINTS, ensure_checkpoint

    ckpt = CHECKPOINTS.get(args.model)
    if ckpt is None:
        raise CliError("INVALID_ARGUMENT", f"no weights to fetch for {args.model!r}; known: {', '.join(CHECKPOINTS)}")
    config = cfg.load(EmbedderConfig)
    try:
        path = ensure_checkpoint(ckpt, getattr(config, ckpt.setting), allow_download=True)
    except ModelUnavailable as exc:
        raise CliError("UNAVAILABLE", str(exc)) from None
    return {"model": args.model, "path": str(path)}, f"{ckpt.description} weights at {path}"


class SystemExitWith(Exception):
    """A command finished with a document to print and a non-zero status."""

    def __init__(self, doc: Any, text: str, code: int) -> None:
        super().__init__(text)
        self.doc, self.text, self.code = doc, text, code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiosearch", description="Find the recordings most similar to a sound.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Any, help: str, gateway: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        if gateway:
            c.add_argument(
                "--token", default="", help="bearer token for the gateway (default $AUDIOSEARCH_TOKEN, hidden from ps)"
            )
        c.set_defaults(fn=fn)
        return c

    c = command("serve", cmd_serve, "run all services locally, healing them, until interrupted", gateway=False)
    c.add_argument("--data-dir", default="data", help="where Milvus Lite, SQLite and logs live (default ./data)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=50051, help="gateway port; the others use the next three")
    c.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="the gateway's /metrics port, the others' the next three (default: --port + 100; 0: none)",
    )
    c.add_argument("--http-port", type=int, default=8080, help="the web page and HTTP/JSON API (default 8080; 0: none)")
    c.add_argument(
        "--start-timeout",
        type=float,
        default=120.0,
        help="seconds a service may take to become SERVING (search loads every collection first; default 120)",
    )
    c.add_argument(
        "--unhealthy-after",
        type=float,
        default=30.0,
        help="restart a service whose health check fails this many seconds in a row (default 30)",
    )
    c = command("index", cmd_index, "add audio files or folders (recursive) to a library")
    c.add_argument("paths", nargs="+")
    c.add_argument("--library", default="default")
    c.add_argument("--model", default="", help="model for a new library (default: the server's default)")
    c.add_argument("--tag", action="append", default=[], help="tag every file (repeatable)")
    c.add_argument("--jobs", type=int, default=4, help="parallel uploads")
    c.add_argument("--window", type=float, default=0.0, help="window length in s for a new library (model default)")
    c.add_argument("--hop", type=float, default=0.0, help="window hop in s for a new library (model default)")
    c = command("search", cmd_search, "find the items most similar to a clip")
    c.add_argument("file", nargs="?")
    c.add_argument("--like", type=int, help="search with an indexed item instead of a file")
    c.add_argument("--library", default="default")
    c.add_argument("--top-k", type=int, default=10)
    c.add_argument("--tag", action="append", default=[], help="only items with this tag (repeatable: any of)")
    c.add_argument(
        "--min-score",
        type=float,
        default=0.0,
        help="drop results below this score (0: the model's calibrated threshold; -1: keep all)",
    )
    c = command("get", cmd_get, "show one item")
    c.add_argument("id", type=int)
    c = command("ls", cmd_ls, "list items")
    c.add_argument("--library", default="")
    c.add_argument("--tag", default="")
    c.add_argument("--limit", type=int, default=0)
    c = command("delete", cmd_delete, "delete one item")
    c.add_argument("id", type=int)
    command("stats", cmd_stats, "counts per library and model status")
    c = command("repair", cmd_repair, "find and fix inconsistencies between the catalog and the vector store")
    c.add_argument("--dry-run", action="store_true", help="only report what would be fixed")
    c.add_argument(
        "--stale-after",
        type=float,
        default=0.0,
        help="seconds after which a PENDING insert counts as abandoned (default: the server's, 900)",
    )
    c = command(
        "reindex",
        cmd_reindex,
        "move a library to another embedding model: re-embeds every item, then switches it over",
    )
    c.add_argument("--library", default="default")
    c.add_argument("--model", required=True, help="the model to move the library to (`stats` lists them)")
    c.add_argument("--window", type=float, default=0.0, help="window length in s for the new model (its default)")
    c.add_argument("--hop", type=float, default=0.0, help="window hop in s for the new model (its default)")
    command("libraries", cmd_libraries, "list libraries")
    c = command("fetch-weights", cmd_fetch_weights, "download a PANNs checkpoint (md5-checked)", gateway=False)
    c.add_argument(
        "--model",
        default="panns-cnn14",
        help="whose weights: panns-cnn14 (default), panns-cnn14-16k or panns-mobilenetv1",
    )
    return p


def emit(args: argparse.Namespace, doc: Any, text: str, stream: Any = None) -> None:
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(text, file=stream or sys.stdout)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        doc, text = args.fn(args)
    except SystemExitWith as exc:
        emit(args, exc.doc, exc.text, sys.stderr)
        return exc.code
    except CliError as exc:
        emit(args, {"error": {"code": exc.code, "message": exc.message}}, f"error: {exc.message}", sys.stderr)
        return 1
    except cfg.ConfigError as exc:
        emit(args, {"error": {"code": "INVALID_ARGUMENT", "message": str(exc)}}, f"error: {exc}", sys.stderr)
        return 1
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details()
        if code == grpc.StatusCode.UNAVAILABLE:
            config = cfg.load(CliConfig)
            message = f"cannot reach the gateway at {config.gateway} ({message}); is `audiosearch serve` running?"
            message += (
                " Does it speak TLS with a certificate AUDIOSEARCH_TLS_CA_FILE verifies?"
                if config.client_tls
                else " If it speaks TLS, set AUDIOSEARCH_TLS_CA_FILE."
            )
        emit(args, {"error": {"code": code.name, "message": message}}, f"error: {code.name}: {message}", sys.stderr)
        return 1
    except RuntimeError as exc:
        emit(args, {"error": {"code": "INTERNAL", "message": str(exc)}}, f"error: {exc}", sys.stderr)
        return 1
    emit(args, doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
