"""`audiosearch`: parses the command line, runs the command, prints its
document (services/cli/output.py) and returns the exit status."""

from __future__ import annotations

import sys

import grpc

from services.cli.args import parser
from services.cli.client import unreachable
from services.cli.output import CliError, SystemExitWith, emit, emit_error
from services.common import config as cfg

# tests/test_reindex.py reads items as `--json` prints them.

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        doc, text = args.fn(args)
    except SystemExitWith as exc:
        emit(args, exc.doc, exc.text, sys.stderr)
        return exc.code
    except CliError as exc:
        emit_error(args, exc.code, exc.message, f"error: {exc.message}")
        return 1
    except cfg.ConfigError as exc:
        emit_error(args, "INVALID_ARGUMENT", str(exc), f"error: {exc}")
        return 1
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details()
        if code == grpc.StatusCode.UNAVAILABLE:
            message = unreachable(message)
        emit_error(args, code.name, message, f"error: {code.name}: {message}")
        return 1
    except RuntimeError as exc:
        emit_error(args, "INTERNAL", str(exc), f"error: {exc}")
        return 1
    emit(args, doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
