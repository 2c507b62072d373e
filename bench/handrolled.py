"""The indexing baseline users start from: a script in the style of the Milvus
bootcamp's audio search, with its known faults fixed (the model is loaded
once, short clips are padded to 1 s) and the same work as ours (10 s
windows every 5 s, the tail window aligned to the end, 2048-d Cnn14
embeddings, one Milvus row per window and one SQL row per file). It runs
file after file: decode (soundfile, soxr to 32 kHz, mono) -> embed
(`panns_inference.AudioTagging.inference`, fp32) -> Milvus Lite insert ->
SQLite insert."""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from pymilvus import DataType, MilvusClient
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, insert

from services.embedder.audio import window_starts
from tests.reference_models import audio_tagging

RATE, WINDOW, HOP, MINIMUM = 32000, 10.0, 5.0, 1.0


def windows(path: Path) -> tuple[np.ndarray, list[float], float]:
    """The file's 10 s windows at 32 kHz mono (one shorter window for a short
    file, padded to 1 s), their offsets, and the file's duration."""
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = soxr.resample(x.mean(axis=1), rate, RATE).astype(np.float32)
    size = int(WINDOW * RATE)
    if len(mono) <= size:
        return np.pad(mono, (0, max(0, int(MINIMUM * RATE) - len(mono))))[None, :], [0.0], len(x) / rate
    starts = window_starts(len(mono), RATE, WINDOW, HOP)
    return np.stack([mono[round(s * RATE) : round(s * RATE) + size] for s in starts]), starts, len(x) / rate


def index_handrolled(files: list[Path], data_dir: Path, checkpoint: Path) -> float:
    """Seconds to index `files` one after another."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tagger = audio_tagging(Path(tempfile.mkdtemp(prefix="panns-home-")), checkpoint)
    milvus = MilvusClient(str(data_dir / "milvus.db"))
    schema = milvus.create_schema(auto_id=True)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("item_id", DataType.INT64)
    schema.add_field("offset", DataType.FLOAT)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2048)
    index = milvus.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="IP")
    milvus.create_collection("audio", schema=schema, index_params=index)
    engine = create_engine(f"sqlite:///{data_dir / 'catalog.db'}")
    items = Table(
        "items",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String),
        Column("sha256", String),
        Column("duration", Float),
    )
    items.metadata.create_all(engine)
    tagger.inference(np.zeros((1, RATE), dtype=np.float32))  # warm-up, as ours gets at load
    start = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        batch, offsets, duration = windows(path)
        _, embeddings = tagger.inference(batch)
        vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        with engine.begin() as connection:
            sha = hashlib.sha256(data).hexdigest()
            item_id = connection.execute(insert(items).values(name=path.name, sha256=sha, duration=duration))
            item_id = item_id.inserted_primary_key[0]
        rows = [{"item_id": item_id, "offset": o, "vector": v.tolist()} for o, v in zip(offsets, vectors, strict=True)]
        milvus.insert("audio", rows)
    seconds = time.perf_counter() - start
    milvus.close()
    return seconds
