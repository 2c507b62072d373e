"""`audiosearch`: parses the command line, runs the command, prints its
document (services/cli/output.py) and returns the exit status: 0 done, 1
an error of the service (or a failed file of `index`), 2 a usage error
(argparse's, or services/cli/args.py's `check`), 130 Ctrl-C, 141 stdout
closed early (args.EPILOG)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import grpc

from services.cli.args import check, parser
from services.cli.client import unreachable
from services.cli.output import CliError, SystemExitWith, emit, emit_error
from services.common import config as cfg
from services.common.status import details_of

INTERRUPTED, BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE, as a shell reports them


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check(p, args)
    try:
        code = run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`audiosearch ls | head -1`): stop, quietly.
        # What is still buffered goes nowhere, rather than into a second
        # BrokenPipeError as the interpreter exits.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
    except KeyboardInterrupt:  # while printing
        return INTERRUPTED


def run(args: argparse.Namespace) -> int:
    try:
        doc, text = args.fn(args)
    except SystemExitWith as exc:
        emit(args, exc.doc, exc.text, sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # `index` reports its own; any other command: no traceback
        doc = {"error": {"code": "CANCELLED", "message": "interrupted"}, "interrupted": True}
        emit(args, doc, "interrupted", sys.stderr)
        return INTERRUPTED
    except CliError as exc:
        emit_error(args, exc.code, exc.message, f"error: {exc.message}", reason=exc.reason)
        return 1
    except cfg.ConfigError as exc:
        emit_error(args, "INVALID_ARGUMENT", str(exc), f"error: {exc}")
        return 1
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details()
        if code == grpc.StatusCode.UNAVAILABLE:
            message = unreachable(message)
        emit_error(args, code.name, message, f"error: {code.name}: {message}", reason=details_of(exc).reason)
        return 1
    except RuntimeError as exc:
        emit_error(args, "INTERNAL", str(exc), f"error: {exc}")
        return 1
    emit(args, doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
