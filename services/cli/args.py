"""The `audiosearch` command line: its commands and their options."""

from __future__ import annotations

import argparse
from typing import Any

from services.cli.client import DEFAULT_LIBRARY
from services.cli.commands.items import cmd_delete, cmd_get, cmd_index, cmd_ls, cmd_rename, cmd_tag
from services.cli.commands.libraries import cmd_delete_library, cmd_libraries, cmd_reindex, cmd_repair, cmd_stats
from services.cli.commands.local import cmd_fetch_weights, cmd_serve
from services.cli.commands.monitor import cmd_monitor
from services.cli.commands.search import cmd_search
from services.cli.version import version

EPILOG = """\
library: index, search, ls, monitor and reindex work on the library "default"
  unless --library says another; search --like ID searches the item's own
  library; ls --all lists every library's items.
exit status:
  0    done
  1    the service refused or failed (the error names the gRPC code), or at
       least one file of an index failed (the rest went in)
  2    a usage error: bad or missing flags, options that do not go together
  130  interrupted (Ctrl-C); index prints what it did so far and the same
       command continues (duplicates are skipped)
  141  stdout closed early (audiosearch ls | head): the output stops, silently
"""
LIBRARY_HELP = 'the library (default: "default")'


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audiosearch",
        description="Find the recordings most similar to a sound.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(
        name: str, fn: Any, help: str, gateway: bool = True, json_lines: bool = False
    ) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        if json_lines:  # a command whose output streams: one object per line as it comes
            c.add_argument("--json", action="store_true", help="print JSON Lines on stdout, the summary last")
        else:
            c.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        c.set_defaults(json_lines=json_lines)
        if gateway:
            c.add_argument(
                "--token",
                default="",
                help="bearer token for the gateway; on the command line it is visible to other users in `ps`: "
                "prefer the environment variable AUDIOSEARCH_TOKEN (the default)",
            )
        c.set_defaults(fn=fn)
        return c

    c = command("serve", cmd_serve, "run all services locally, healing them, until interrupted", gateway=False)
    c.add_argument("--data-dir", default="data", help="where Milvus Lite, SQLite and logs live (default ./data)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=50051, help="gateway port; the others use the next three")
    c.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="the gateway's /metrics port, the others' the next three (default: --port + 100; 0: none)",
    )
    c.add_argument("--http-port", type=int, default=8080, help="the web page and HTTP/JSON API (default 8080; 0: none)")
    c.add_argument(
        "--start-timeout",
        type=float,
        default=120.0,
        help="seconds a service may take to become SERVING (search loads every collection first; default 120)",
    )
    c.add_argument(
        "--unhealthy-after",
        type=float,
        default=30.0,
        help="restart a service whose health check fails this many seconds in a row (default 30)",
    )
    c = command("index", cmd_index, "add audio files or folders (recursive) to a library")
    c.add_argument("paths", nargs="+", help="files or folders; one that does not exist is a failed entry")
    c.add_argument("--library", default=DEFAULT_LIBRARY, help=LIBRARY_HELP + "; created if missing")
    c.add_argument("--model", default="", help="model for a new library (default: the server's default)")
    c.add_argument("--tag", action="append", default=[], help="tag every file (repeatable)")
    c.add_argument("--jobs", type=int, default=4, help="parallel uploads (default 4)")
    c.add_argument("--window", type=float, default=0.0, help="window length in s for a new library (model default)")
    c.add_argument("--hop", type=float, default=0.0, help="window hop in s for a new library (model default)")
    c = command("search", cmd_search, "find the items most similar to a clip")
    c.add_argument("file", nargs="?")
    c.add_argument("--like", type=int, metavar="ID", help="search with an indexed item instead of a file")
    c.add_argument("--library", default=None, help=LIBRARY_HELP[:-1] + "; with --like: the item's own library)")
    c.add_argument("--top-k", type=int, default=10)
    c.add_argument("--tag", action="append", default=[], help="only items with this tag (repeatable: any of)")
    c.add_argument(
        "--min-score",
        type=float,
        default=0.0,
        help="drop results below this score (0: the model's calibrated threshold; -1: keep all)",
    )
    c = command(
        "monitor",
        cmd_monitor,
        "find every occurrence of a library's items in a long recording or a stream (- : raw s16le PCM on stdin)",
        json_lines=True,
    )
    c.add_argument("file", help="an audio file, or - for raw signed 16-bit little-endian PCM on stdin")
    c.add_argument("--library", default=DEFAULT_LIBRARY, help='a fingerprint-v2 library (default: "default")')
    c.add_argument("--rate", type=int, default=0, help="stdin: frames per second")
    c.add_argument("--channels", type=int, default=1, help="stdin: interleaved channels (default 1)")
    c.add_argument(
        "--min-score", type=float, default=0.0, help="the confidence a match needs (0: the model's calibrated one)"
    )
    c = command("get", cmd_get, "show one item")
    c.add_argument("id", type=int)
    c = command("ls", cmd_ls, 'list the items of a library ("default" unless --library or --all)')
    which = c.add_mutually_exclusive_group()
    which.add_argument("--library", default=None, help=LIBRARY_HELP)
    which.add_argument("--all", action="store_true", help="every library's items")
    c.add_argument("--tag", default="")
    c.add_argument("--limit", type=int, default=0)
    c = command("tag", cmd_tag, "add or remove user tags of one item")
    c.add_argument("id", type=int)
    c.add_argument("--add", action="append", default=[], metavar="TAG", help="add this tag (repeatable)")
    c.add_argument("--remove", action="append", default=[], metavar="TAG", help="remove this tag (repeatable)")
    c = command("rename", cmd_rename, "give one item a new name")
    c.add_argument("id", type=int)
    c.add_argument("name")
    c = command("delete", cmd_delete, "delete one item")
    c.add_argument("id", type=int)
    c = command("delete-library", cmd_delete_library, "delete a library with all its items (needs --yes)")
    c.add_argument("name")
    c.add_argument("--yes", action="store_true", help="confirm: every item of the library is deleted for good")
    command("stats", cmd_stats, "counts per library and model status")
    c = command("repair", cmd_repair, "find and fix inconsistencies between the catalog and the vector store")
    c.add_argument("--dry-run", action="store_true", help="only report what would be fixed")
    c.add_argument(
        "--stale-after",
        type=float,
        default=0.0,
        help="seconds after which a PENDING insert counts as abandoned (default: the server's, 900)",
    )
    c = command(
        "reindex",
        cmd_reindex,
        "move a library to another embedding model: re-embeds every item, then switches it over",
    )
    c.add_argument("--library", default=DEFAULT_LIBRARY, help=LIBRARY_HELP)
    c.add_argument("--model", required=True, help="the model to move the library to (`stats` lists them)")
    c.add_argument("--window", type=float, default=0.0, help="window length in s for the new model (its default)")
    c.add_argument("--hop", type=float, default=0.0, help="window hop in s for the new model (its default)")
    command("libraries", cmd_libraries, "list libraries")
    c = command("fetch-weights", cmd_fetch_weights, "download a PANNs checkpoint (md5-checked)", gateway=False)
    # The names come from the embedder's table of models (docs/models.md);
    # importing it here would slow every CLI call down.
    c.add_argument("--model", default="", help="whose weights (default: the default PANNs model; see docs/models.md)")
    return p


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The usage errors argparse cannot see: the command's usage, the message, exit status 2."""
    problem = usage_problem(args)
    if problem:
        commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(problem)


def usage_problem(args: argparse.Namespace) -> str:
    """What is wrong with a parsed command line that argparse accepted ("" if nothing)."""
    if args.command == "search":
        if args.file and args.like:
            return "give either FILE or --like ID, not both"
        if not args.file and not args.like:
            return "give a FILE to search with, or --like ID"
    if args.command == "index" and args.jobs < 1:
        return f"--jobs must be at least 1, got {args.jobs}"
    if args.command == "monitor":
        if args.file == "-" and args.rate <= 0:
            return "raw PCM on stdin (-) needs --rate (and --channels unless mono)"
        if args.channels < 1:
            return f"--channels must be at least 1, got {args.channels}"
    if args.command == "tag" and not (args.add or args.remove):
        return "give at least one --add TAG or --remove TAG"
    if args.command == "delete-library" and not args.yes:
        return f"this deletes library {args.name!r} with all its items for good: add --yes to confirm"
    if args.command == "ls" and args.limit < 0:
        return f"--limit must be 0 (all) or more, got {args.limit}"
    return ""
