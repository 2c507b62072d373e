"""`make eval`: retrieval quality on real recordings.

Near-duplicate task: a library of real recordings (Milvus Lite, the same
store, windowing and time-consistent voting as the service); seeded random
3 s and 5 s excerpts of indexed recordings under each distortion must find
their source, at the right offset; excerpts of held-out recordings (not
indexed) must find nothing above the model's evidence threshold.

Semantic task: precision@10 of "more like this" (the item's stored vectors as
the query, as the gateway does it) with folder/prefix
categories as labels.

Writes eval/results/latest.json and latest.md."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.distortions import DISTORTIONS  # noqa: E402
from services.embedder.audio import frame, resample  # noqa: E402
from services.embedder.config import EmbedderConfig  # noqa: E402
from services.embedder.models.base import ModelUnavailable  # noqa: E402
from services.embedder.registry import build_models  # noqa: E402
from services.gateway.ports import Hit  # noqa: E402
from services.gateway.voting import items_per_query_window, vote  # noqa: E402
from services.search.contract import WindowVector  # noqa: E402
from services.search.milvus import MilvusStore  # noqa: E402

AUDIO = {".wav", ".flac", ".ogg", ".mp3"}
LENGTHS = (3.0, 5.0)
PER_QUERY = items_per_query_window(10)  # as the gateway does for top-10
# Evidence thresholds at which top-1 and the false-positive rate are also
# reported, for calibrating a model's threshold.
CALIBRATION_GRID = (0.05, 0.06, 0.07, 0.08, 0.085, 0.09, 0.1, 0.12)


def category(path: Path, corpus: Path) -> str:
    rel = path.relative_to(corpus)
    if rel.parts[0] == "sonic-pi":
        return "sonic-pi/" + rel.stem.split("_")[0]
    if rel.parts[0] == "openarena":
        return "openarena/" + rel.parts[1]
    return "music"


def load_corpus(corpus: Path) -> list[dict]:
    # music/ holds the soundtracks of the copy-detection protocol (eval/copies.py), not this one's.
    files = sorted(
        p for p in corpus.rglob("*") if p.suffix.lower() in AUDIO and p.relative_to(corpus).parts[0] != "music"
    )
    out = []
    for i, path in enumerate(files):
        x, rate = sf.read(path, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if len(x) < rate * 0.2 or not np.any(x):
            continue
        out.append(
            {
                "id": i + 1,
                "path": path,
                "audio": x,
                "rate": rate,
                "duration": len(x) / rate,
                "category": category(path, corpus),
            }
        )
    return out


class Index:
    """One model's library in a Milvus Lite collection."""

    def __init__(self, model, workdir: Path) -> None:  # type: ignore[no-untyped-def]
        self.model, self.info = model, model.info
        self.store = MilvusStore(str(workdir / f"{self.info.name}.db"))
        self.store.create("eval", self.info.name, self.info.dim, self.info.sparse)

    def windows(self, x: np.ndarray, rate: int, query: bool) -> tuple[list, list[float]]:
        """As the embedder service does it (embed_signal where the model has it)."""
        y = resample(x, rate, self.info.sample_rate)
        window, hop = self.info.window_seconds, self.info.hop_seconds
        if hasattr(self.model, "embed_signal"):
            return self.model.embed_signal(y, window, hop, query)
        wins, offsets = frame(y, self.info.sample_rate, window, hop, self.info.min_seconds)
        vectors = [v for i in range(0, len(wins), 32) for v in self.model.embed(np.stack(wins[i : i + 32])).vectors]
        return vectors, offsets

    def add(self, item: dict) -> None:
        vectors, offsets = self.windows(item["audio"], item["rate"], query=False)
        rows = [WindowVector(item["id"], i, off, v) for i, (off, v) in enumerate(zip(offsets, vectors, strict=True))]
        for i in range(0, len(rows), 512):
            self.store.upsert("eval", self.info.name, self.info.dim, rows[i : i + 512])

    def query(self, x: np.ndarray, rate: int, exclude: tuple[int, ...] = ()) -> list:
        vectors, offsets = self.windows(x, rate, query=True)
        return self._rank(list(vectors), offsets, len(x) / rate, exclude)

    def more_like(self, item: dict) -> list:
        """The gateway's "more like this": the item's stored vectors
        are the query, the item itself left out."""
        stored = self.store.get("eval", item["id"])
        return self._rank([w.vector for w in stored], [w.offset for w in stored], item["duration"], (item["id"],))

    def _rank(self, vectors: list, offsets: list[float], duration: float, exclude: tuple[int, ...]) -> list:
        hits = self.store.search(
            "eval", self.info.name, self.info.dim, vectors, PER_QUERY, exclude=list(exclude), hits_per_item=1
        )
        converted = [[Hit(h.item_id, h.window, h.offset, h.score) for h in q] for q in hits]
        matches = vote(converted, offsets, self.info.window_seconds, self.info.hop_seconds, duration)
        return sorted(matches.values(), key=lambda m: -m.score)


def excerpt_query(index: Index, length: float, distort, seeds: list[int], q: int, item: dict, start: float) -> list:  # type: ignore[no-untyped-def]
    """Query q: `length` s of `item` from `start`, distorted with its own seeded generator."""
    a, b = int(start * item["rate"]), int((start + length) * item["rate"])
    x, rate = distort(item["audio"][a:b], item["rate"], np.random.default_rng([seeds[0], q, seeds[1]]))
    return index.query(x, rate)


def held_out_query(index: Index, length: float, q: int, item: dict, start: float, *, seed: int) -> list:
    """False-positive query q: distortions taken in turn."""
    name = list(DISTORTIONS)[q % len(DISTORTIONS)]
    return excerpt_query(index, length, DISTORTIONS[name], [seed, 7], q, item, start)


def near_duplicate(
    index: Index,
    items: list[dict],
    held_out: list[dict],
    n_queries: int,
    n_fp: int,
    seed: int,
    lengths: tuple[float, ...] = LENGTHS,
) -> dict:
    threshold = index.info.min_evidence
    eligible = [it for it in items if it["duration"] >= max(LENGTHS) + 1]
    report: dict = {}
    for length in lengths:
        key = f"{length:.0f}s"
        rng = np.random.default_rng(seed + int(length))
        picks = []
        weights = np.array([it["duration"] for it in eligible])
        for _ in range(n_queries):  # longer recordings get proportionally more queries
            it = eligible[rng.choice(len(eligible), p=weights / weights.sum())]
            picks.append((it, float(rng.uniform(0, it["duration"] - length))))
        per: dict = {}
        offset_errors_all: list[float] = []
        for name, distort in DISTORTIONS.items():
            top1 = top1_raw = recall = 0
            offset_errors = []
            correct_evidence = []  # of correct unthresholded top-1 results: top-1 at any threshold
            ask = functools.partial(excerpt_query, index, length, distort, [seed, len(name)])
            answers = map(ask, range(len(picks)), *zip(*picks, strict=True))
            for (it, start), ranked in zip(picks, answers, strict=True):
                ids = [m.item_id for m in ranked]
                served = [m for m in ranked if m.evidence >= threshold]
                if ids[:1] == [it["id"]]:
                    top1_raw += 1
                    correct_evidence.append(ranked[0].evidence)
                if served[:1] and served[0].item_id == it["id"]:
                    top1 += 1
                    offset_errors.append(abs((served[0].item_start - served[0].query_start) - start))
                if it["id"] in [m.item_id for m in served[:10]]:
                    recall += 1
            per[name] = {
                "top1": top1 / len(picks),
                "recall@10": recall / len(picks),
                "top1_without_threshold": top1_raw / len(picks),
                "offset_error_median_s": statistics.median(offset_errors) if offset_errors else None,
                "top1_at_threshold": {
                    f"{t:.3f}": sum(e >= t for e in correct_evidence) / len(picks) for t in CALIBRATION_GRID
                },
            }
            offset_errors_all += offset_errors
            print(
                f"  {index.info.name} {key} {name:28s} top1 {per[name]['top1']:.3f} r@10 {per[name]['recall@10']:.3f}",
                flush=True,
            )
        # False positives: excerpts of recordings that are not in the library.
        # A held-out recording that is itself a copy of an indexed one (a
        # corpus may hold the same sound twice, e.g. a quieter export) is a
        # true match, not a false positive: it is found by querying with the
        # whole clean recording and left out of this set (and reported).
        copies = copies_of_indexed(index, held_out, items)
        fp_eligible = [it for it in held_out if it["duration"] >= length + 0.5 and it["id"] not in copies]
        fp_picks = [fp_eligible[q % len(fp_eligible)] for q in range(n_fp)]
        fp_starts = [float(rng.uniform(0, it["duration"] - length)) for it in fp_picks]
        ask = functools.partial(held_out_query, index, length, seed=seed)
        fp_scores = [max((m.evidence for m in r), default=0.0) for r in map(ask, range(n_fp), fp_picks, fp_starts)]
        fp = sum(s >= threshold for s in fp_scores) / max(1, len(fp_scores)) if threshold > 0 else 1.0
        per["false_positive_rate"] = fp
        per["threshold"] = threshold
        per["threshold_for_1pct_fp"] = float(np.quantile(fp_scores, 0.99)) if fp_scores else None
        per["false_positive_rate_at_threshold"] = {
            f"{t:.3f}": sum(s >= t for s in fp_scores) / max(1, len(fp_scores)) for t in CALIBRATION_GRID
        }
        per["offset_error_median_s"] = statistics.median(offset_errors_all) if offset_errors_all else None
        per["queries"] = len(picks)
        per["false_positive_queries"] = len(fp_scores)
        per["held_out_copies_excluded"] = sorted(copies.values())
        report[key] = per
    return report


COPY_EVIDENCE = 1.0  # far above any chance match (those stay under ~0.1)


def copies_of_indexed(index: Index, held_out: list[dict], library: list[dict]) -> dict[int, str]:
    """Held-out recordings whose whole clean audio strongly matches an
    indexed recording: id -> "held-out name = indexed name"."""
    if index.info.min_evidence <= 0:
        return {}
    by_id = {it["id"]: it["path"].name for it in library}
    names = {}
    for it in held_out:
        ranked = index.query(it["audio"], it["rate"])
        best = max(ranked, key=lambda m: m.evidence, default=None)
        if best is not None and best.evidence >= COPY_EVIDENCE:
            names[it["id"]] = f"{it['path'].name} = {by_id[best.item_id]}"
    return names


def semantic(index: Index, items: list[dict]) -> dict:
    counts = defaultdict(int)
    for it in items:
        counts[it["category"]] += 1
    labelled = [it for it in items if counts[it["category"]] >= 5]
    precisions = []
    for it in labelled:
        ranked = index.more_like(it)
        top = [m.item_id for m in ranked[:10]]
        by_id = {x["id"]: x for x in items}
        precisions.append(sum(by_id[i]["category"] == it["category"] for i in top) / 10)
    return {
        "precision@10": float(np.mean(precisions)),
        "queries": len(precisions),
        "categories": len({it["category"] for it in labelled}),
    }


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        f"# Evaluation ({meta['date']}, commit {meta['commit']})",
        "",
        f"Corpus: {meta['corpus_files']} recordings, {meta['corpus_hours']:.2f} h "
        f"({meta['library_files']} indexed, {meta['held_out_files']} held out). Seed {meta['seed']}.",
        "",
    ]
    for model, res in results["models"].items():
        lines += [f"## {model}", ""]
        if "near_duplicate" in res:
            for key, per in res["near_duplicate"].items():
                lines += [
                    f"### {key} queries ({per['queries']} per distortion), evidence threshold {per['threshold']}",
                    "",
                    "| distortion | top-1 | recall@10 | top-1 without threshold | median offset error (s) |",
                    "|---|---|---|---|---|",
                ]
                for name in DISTORTIONS:
                    d = per[name]
                    err = "-" if d["offset_error_median_s"] is None else f"{d['offset_error_median_s']:.3f}"
                    lines.append(
                        f"| {name} | {d['top1']:.3f} | {d['recall@10']:.3f} | "
                        f"{d['top1_without_threshold']:.3f} | {err} |"
                    )
                lines += [
                    "",
                    f"False-positive rate on {per['false_positive_queries']} held-out queries: "
                    f"{per['false_positive_rate']:.3f} (threshold for 1%: {per['threshold_for_1pct_fp']:.3f}); "
                    f"median offset error {per['offset_error_median_s']}. "
                    "Held-out recordings left out as copies of indexed ones: "
                    f"{per['held_out_copies_excluded'] or 'none'}",
                    "",
                ]
        if "semantic" in res:
            s = res["semantic"]
            lines += [
                f"Semantic precision@10: {s['precision@10']:.3f} over {s['queries']} queries, "
                f"{s['categories']} categories.",
                "",
            ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="eval/.cache/corpus")
    parser.add_argument("--models", default="fingerprint-v1,spectral-v1,panns-cnn14")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--false-positive-queries", type=int, default=220)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--distortions", default=",".join(DISTORTIONS), help="comma-separated subset")
    parser.add_argument("--lengths", default="3,5", help="query lengths in seconds, a subset of 3,5")
    parser.add_argument("--skip-semantic", action="store_true", help="only the near-duplicate task")
    parser.add_argument("--out", default="eval/results")
    args = parser.parse_args()
    for name in set(DISTORTIONS) - set(args.distortions.split(",")):
        del DISTORTIONS[name]
    began = time.monotonic()
    corpus = Path(args.corpus)
    items = load_corpus(corpus)
    rng = np.random.default_rng(args.seed)
    long_ids = [it["id"] for it in items if it["duration"] >= max(LENGTHS) + 1]
    held = set(rng.choice(long_ids, size=max(1, len(long_ids) // 4), replace=False).tolist())
    library = [it for it in items if it["id"] not in held]
    held_out = [it for it in items if it["id"] in held]
    print(
        f"{len(items)} recordings ({sum(i['duration'] for i in items) / 3600:.2f} h); "
        f"{len(library)} indexed, {len(held_out)} held out",
        flush=True,
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout  # noqa: S607
    results: dict = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": commit.strip() or "unknown",
            "seed": args.seed,
            "corpus_files": len(items),
            "corpus_hours": sum(i["duration"] for i in items) / 3600,
            "library_files": len(library),
            "held_out_files": len(held_out),
            "distortions": list(DISTORTIONS),
        },
        "models": {},
    }
    config = EmbedderConfig(models=tuple(args.models.split(",")), cnn14_download=False)
    with tempfile.TemporaryDirectory() as tmp:
        for model in build_models(config):
            try:
                model.load()
            except ModelUnavailable as exc:
                print(f"skipping {model.info.name}: {str(exc)[:120]}", flush=True)
                continue
            t = time.monotonic()
            index = Index(model, Path(tmp))
            for it in library:
                index.add(it)
            index.store.flush()
            print(f"{model.info.name}: indexed in {time.monotonic() - t:.1f} s", flush=True)
            res: dict = {
                "version": model.info.version,
                "window_seconds": model.info.window_seconds,
                "hop_seconds": model.info.hop_seconds,
            }
            if not args.skip_semantic:
                res["semantic"] = semantic(index, library)
                print(f"  semantic precision@10 {res['semantic']['precision@10']:.3f}", flush=True)
            # Models without a calibrated threshold get a quarter of the queries (they are not the copy detector).
            share = 1 if model.info.min_evidence > 0 else 4
            res["near_duplicate"] = near_duplicate(
                index,
                library,
                held_out,
                args.queries // share,
                args.false_positive_queries // share,
                args.seed,
                tuple(float(x) for x in args.lengths.split(",")),
            )
            results["models"][model.info.name] = res
            index.store.close()
    results["meta"]["seconds"] = round(time.monotonic() - began, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out / 'latest.json'} in {results['meta']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
