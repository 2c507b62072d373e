"""`audiosearch search`: the items most similar to a clip or to an indexed
item, and, when nothing matches, the reason."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli.client import DEFAULT_LIBRARY, TIMEOUT, stub
from services.cli.files import upload
from services.cli.output import CliError, printable
from services.common import reasons
from services.common.jsonview import message_dict


def cmd_search(args: argparse.Namespace) -> tuple[Any, str]:
    client = stub(args)
    # --like without --library: "" lets the gateway search the item's own library.
    library = args.library or ("" if args.like else DEFAULT_LIBRARY)
    params = pb.SearchParams(
        library=library, top_k=args.top_k, item_id=args.like or 0, tags=args.tag, min_score=args.min_score
    )
    if args.like:
        response = client.SearchAudio(iter([pb.SearchAudioRequest(params=params)]), timeout=TIMEOUT)
    else:
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
    if not results and not args.like:
        too_short(Path(args.file), response.model)
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
        lines.append(no_match(client, args, library, response.model))
    return results, "\n".join(lines)


def min_seconds(model: str) -> float:
    """The shortest clip `model` embeds as it is (shorter ones are padded
    with silence); 0 where the embedder's table is not installed here."""
    try:
        from services.embedder.models.table import MODELS  # slow to import: only for an empty result
    except ImportError:
        return 0.0
    entry = MODELS.get(model)
    return entry.info.min_seconds if entry else 0.0


def too_short(path: Path, model: str) -> None:
    """A query under the model's minimum length matches nothing: say so."""
    import soundfile as sf

    try:
        duration = sf.info(str(path)).duration
    except (RuntimeError, sf.LibsndfileError):
        return  # the server decoded it; not this check's business
    shortest = min_seconds(model)
    if duration < shortest:
        raise CliError(
            "INVALID_ARGUMENT",
            f"the query {printable(str(path))} is {duration:.2f} s long; {model} needs at least {shortest:g} s "
            "(a shorter clip is padded with silence and matches nothing)",
            reason=reasons.AUDIO_TOO_SHORT,
        )


def no_match(client: Any, args: argparse.Namespace, library: str, model: str) -> str:
    """Why the search found nothing, as precisely as the gateway lets us tell."""
    if args.tag:
        if not library:  # --like: the item's library
            library = client.GetAudio(pb.GetAudioRequest(id=args.like), timeout=TIMEOUT).item.library
        tagged = any(
            client.ListAudio(pb.ListAudioRequest(library=library, page_size=1, tag=t), timeout=TIMEOUT).items
            for t in args.tag
        )
        if not tagged:
            names = ", ".join(repr(t) for t in args.tag)
            return f"  no match: no item in library {library!r} has the tag {names}"
    if model.startswith("fingerprint"):
        return (
            f"  no match (nothing reaches the {model} threshold; --min-score -1 shows all). {model} finds copies "
            'and excerpts of the same recording, not similar sounds; for "sounds like this" index into a '
            "library on spectral-v1 (offline) or a PANNs model (needs weights: audiosearch fetch-weights)"
        )
    return f"  no match (no item reaches the {model} threshold; --min-score -1 shows all)"
