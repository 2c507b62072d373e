"""A child of `audiosearch serve` dies with it: the supervisor puts its pid
in AUDIOSEARCH_PARENT_PID, and `bind_to_parent()`, called first thing in
each service process, asks Linux for SIGTERM when that parent goes (so a
SIGKILLed or OOM-killed serve leaves no service holding its ports).

Linux delivers the parent-death signal when the *thread* that forked the
child exits, not the process: the supervisor therefore starts children
from its main thread only."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "AUDIOSEARCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def bind_to_parent() -> None:
    """SIGTERM this process when the supervisor named by
    AUDIOSEARCH_PARENT_PID dies; exits at once if it is already gone.
    A no-op when the variable is unset (run by hand, in Kubernetes) and,
    for the signal, on systems other than Linux."""
    raw = os.environ.get(PARENT_PID_ENV, "")
    if not raw:
        return
    try:
        parent = int(raw)
    except ValueError:
        return  # not set by our supervisor; nothing to bind to
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died between fork and the prctl above: then the
    # signal never comes, and we were re-parented (to init or a subreaper).
    if os.getppid() != parent:
        sys.stderr.write(f"audiosearch: supervisor (pid {parent}) is gone; exiting\n")
        os._exit(1)
