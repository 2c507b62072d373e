"""What a reindex reports as it goes (GatewayService.ReindexLibrary's
stream), and the counts it keeps to report it."""

from __future__ import annotations

import dataclasses
import time

from services.gateway.ports import Library

SWITCHED, UNCHANGED, CANCELLED = "switched", "unchanged", "cancelled"
OUTCOMES = (SWITCHED, UNCHANGED, CANCELLED)


@dataclasses.dataclass(frozen=True)
class Failure:
    item_id: int
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Progress:
    """Counts since the call began; the last one also says how it ended."""

    total: int = 0
    reindexed: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed: float = 0.0
    failure: Failure | None = None  # the item this message reports
    outcome: str = ""  # last message: SWITCHED, UNCHANGED or CANCELLED
    library: Library | None = None  # last message: the library as it is now
    previous_model: str = ""  # last message: its model when the call began
    detail: str = ""  # last message: what was done, for people


class Tally:
    """The counts of one reindex call."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seen: set[int] = set()  # READY items met so far
        self.reindexed = self.skipped = 0
        self.failures: dict[int, Failure] = {}

    def progress(
        self,
        failure: Failure | None = None,
        outcome: str = "",
        library: Library | None = None,
        previous_model: str = "",
        detail: str = "",
    ) -> Progress:
        return Progress(
            total=len(self.seen),
            reindexed=self.reindexed,
            skipped=self.skipped,
            failed=len(self.failures),
            elapsed=time.monotonic() - self.started,
            failure=failure,
            outcome=outcome,
            library=library,
            previous_model=previous_model,
            detail=detail,
        )
