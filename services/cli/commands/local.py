"""Commands that run here rather than ask the gateway: serve, fetch-weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services.cli.output import CliError, SystemExitWith
from services.common import config as cfg


def cmd_serve(args: argparse.Namespace) -> tuple[Any, str]:
    from services.cli.stack_errors import Interrupted, StackError
    from services.cli.supervisor import Stack

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
    from services.embedder.models.checkpoint import ensure_checkpoint
    from services.embedder.models.table import AUTO_DEFAULT, downloadable

    model = args.model or AUTO_DEFAULT
    if model not in downloadable():
        raise CliError("INVALID_ARGUMENT", f"no weights to fetch for {model!r}; known: {', '.join(downloadable())}")
    config = cfg.load(EmbedderConfig)
    ckpt = config.checkpoint(model)  # with any mirror URL and md5 set for it
    try:
        path = ensure_checkpoint(ckpt, config.checkpoint_path(model), allow_download=True)
    except ModelUnavailable as exc:
        raise CliError("UNAVAILABLE", str(exc)) from None
    return {"model": model, "path": str(path)}, f"{ckpt.description} weights at {path}"
