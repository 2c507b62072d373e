"""How many threads torch may use: the CPUs this process may actually run
on. torch's default is every core of the host, which in a container
limited to 2 CPUs (a Kubernetes limit, a cgroup quota) means dozens of
threads time-slicing on two: slower than two threads, and it starves the
decoding and gRPC threads beside them."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota of this cgroup in CPUs (v2 `cpu.max`, else v1
    `cpu.cfs_quota_us / cpu.cfs_period_us`); None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP) -> int:
    """CPUs in this process's affinity mask, capped by the cgroup quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def configure_torch(threads: int) -> int:
    """Sets torch's intra-op threads (0: the usable CPUs) and returns it."""
    import torch

    threads = threads or usable_cpus()
    torch.set_num_threads(threads)
    log.info("torch uses %d threads", threads)
    return threads
