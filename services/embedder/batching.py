"""Dynamic batching: windows from concurrent requests are gathered into one
model call (up to `max_batch`, waiting at most `wait_ms` for company), so
an accelerator sees full batches. One worker per model runs the calls in
order on its own thread; the event loop never blocks on the model."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from services.embedder.models.base import EmbeddingModel, Embeddings

MAX_IN_FLIGHT = 2  # batches per request queued at once


@dataclasses.dataclass
class _Job:
    windows: np.ndarray  # [N, samples], equal lengths
    future: asyncio.Future[Embeddings]


class Batcher:
    def __init__(self, model: EmbeddingModel, max_batch: int, wait_ms: float) -> None:
        self.model, self.max_batch, self.wait = model, max(1, max_batch), wait_ms / 1000
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{model.info.name}")
        self._worker: asyncio.Task[None] | None = None
        self.calls = 0  # model calls made, for tests and metrics
        # Windows queued and not yet in a model call (the queue depth metric).
        self.waiting = 0
        # Called with each model call's number of windows (the batch size metric).
        self.on_batch: Callable[[int], None] = lambda size: None

    async def embed(self, windows: list[np.ndarray]) -> Embeddings:
        """Embeds windows of any lengths; equal lengths are batched together.
        At most `MAX_IN_FLIGHT` batches of one request exist as copies at a
        time, so a long recording is never duplicated whole."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        loop = asyncio.get_running_loop()
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            groups.setdefault(len(w), []).append(i)
        vectors = np.zeros((len(windows), self.model.info.dim), dtype=np.float32)
        tags: np.ndarray | None = None
        in_flight: list[tuple[list[int], _Job]] = []

        async def collect(part: list[int], job: _Job) -> None:
            nonlocal tags
            result = await job.future
            vectors[part] = result.vectors
            if result.tag_scores is not None:
                if tags is None:
                    tags = np.zeros((len(windows), result.tag_scores.shape[1]), dtype=np.float32)
                tags[part] = result.tag_scores

        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch):
                part = indices[start : start + self.max_batch]
                job = _Job(np.stack([windows[i] for i in part]), loop.create_future())
                self._queue.put_nowait(job)
                self.waiting += len(part)
                in_flight.append((part, job))
                if len(in_flight) >= MAX_IN_FLIGHT:
                    await collect(*in_flight.pop(0))
        for part, job in in_flight:
            await collect(part, job)
        return Embeddings(vectors, tags)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].windows)
            deadline = time.monotonic() + self.wait
            # Gather more jobs of the same window length until full or timed out.
            pending: list[_Job] = []
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                if job.windows.shape[1] == batch[0].windows.shape[1] and size + len(job.windows) <= self.max_batch:
                    batch.append(job)
                    size += len(job.windows)
                else:
                    pending.append(job)
            for job in pending:  # back of the line keeps order among the rest
                self._queue.put_nowait(job)
            self.waiting -= size
            batch = [job for job in batch if not job.future.cancelled()]
            if not batch:
                continue
            stacked = np.concatenate([job.windows for job in batch])
            self.on_batch(len(stacked))
            try:
                result = await loop.run_in_executor(self._executor, self.model.embed, stacked)
                self.calls += 1
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            start = 0
            for job in batch:
                end = start + len(job.windows)
                if not job.future.done():
                    tags = None if result.tag_scores is None else result.tag_scores[start:end]
                    job.future.set_result(Embeddings(result.vectors[start:end], tags))
                start = end

    async def close(self) -> None:
        if self._worker:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
