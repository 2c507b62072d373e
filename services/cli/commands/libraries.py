"""Commands on libraries and the whole store: libraries, delete-library, stats, repair, reindex."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli.client import INSERT_RETRY_WAITS, TIMEOUT, stub
from services.cli.output import SystemExitWith, printable
from services.common.jsonview import message_dict


def model_purposes(client: Any) -> dict[str, str]:
    """What each model finds, by name (the gateway's Stats); empty when the
    gateway cannot tell (the embedder is down): the purpose is a courtesy."""
    try:
        response = client.Stats(pb.StatsRequest(), timeout=TIMEOUT)
    except grpc.RpcError:
        return {}
    return {m.name: m.purpose for m in response.models if m.purpose}


def cmd_libraries(args: argparse.Namespace) -> tuple[Any, str]:
    client = stub(args)
    response = client.ListLibraries(pb.ListLibrariesRequest(), timeout=TIMEOUT)
    # --json: the HTTP API's libraries, as they are; `stats` has each model's purpose.
    docs = [message_dict(lib) for lib in response.libraries]
    if getattr(args, "json", False) or not response.libraries:
        return docs, "no libraries"
    purposes = model_purposes(client)
    lines = []
    for lib in response.libraries:
        line = f"{lib.name}: {lib.model} ({lib.dim}-d)"
        if purpose := purposes.get(lib.model):
            line += f": {purpose}"
        if lib.description:
            line += f"\n  {printable(lib.description)}"
        lines.append(line)
    return docs, "\n".join(lines)


def cmd_delete_library(args: argparse.Namespace) -> tuple[Any, str]:
    # args.yes is checked as a usage error before this runs (services/cli/args.py).
    deleted = stub(args).DeleteLibrary(pb.DeleteLibraryRequest(name=args.name), timeout=TIMEOUT).deleted_items
    items = "item" if deleted == 1 else "items"
    doc = {"library": args.name, "deleted_items": deleted}
    return doc, f"deleted library {printable(args.name)} with its {deleted} {items}, their vectors and kept uploads"


def cmd_stats(args: argparse.Namespace) -> tuple[Any, str]:
    response = stub(args).Stats(pb.StatsRequest(), timeout=TIMEOUT)
    doc = message_dict(response)
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
        if m.purpose:
            lines.append(f"    {m.purpose}")
        if m.score_meaning:
            lines.append(f"    score: {m.score_meaning}")
    return doc, "\n".join(lines)


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
    library = message_dict(last.library)
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
