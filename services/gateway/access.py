"""Who may read or write which library: the domain side of authentication.

The transport (the gateway's auth interceptor) turns a bearer token into a
`Principal` and runs the request under it; each use case asks `require`
before it touches a library. With auth off there is no principal and
everything is allowed (the embedded default, bound to loopback).

The principals come from a tokens file (`load_tokens`, format in
docs/security.md) that holds SHA-256 hashes of the tokens, not the tokens:

    python -m services.gateway.access new NAME --write 'team-a-*'   # a fresh token and its entry
    python -m services.gateway.access hash < token.txt              # the hash of a token
    python -m services.gateway.access check tokens.toml             # validate a file
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import getpass
import hashlib
import hmac
import json
import re
import secrets
import sys
import tomllib
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from services.common.config import ConfigError
from services.common.errors import NotFound, PermissionDenied
from services.common.text import quoted


@dataclasses.dataclass(frozen=True)
class Grant:
    pattern: str  # a library name or a shell pattern: "team-a-*", "*"
    write: bool  # write implies read


@dataclasses.dataclass(frozen=True)
class Principal:
    name: str  # for messages and logs; never the token itself
    grants: tuple[Grant, ...]

    def may(self, library: str, write: bool) -> bool:
        return any(fnmatchcase(library, g.pattern) and (g.write or not write) for g in self.grants)

    @property
    def admin(self) -> bool:
        """Writes every library: may run repair and see every library."""
        return any(g.pattern == "*" and g.write for g in self.grants)


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def act_as(principal: Principal | None) -> None:
    """Runs the rest of the current request as `principal` (None: auth off)."""
    _current.set(principal)


def current() -> Principal | None:
    """Who the current request runs as (None: auth off)."""
    return _current.get()


def require(library: str, write: bool = False) -> None:
    principal = _current.get()
    if principal is not None and not principal.may(library, write):
        verb = "write to" if write else "read"
        raise PermissionDenied(f"{principal.name} may not {verb} library {quoted(library)}")


def require_item(item_id: int, library: str, write: bool = False) -> None:
    """As `require`, for an item found by id: an item in a library the
    caller may not read is reported as missing, so ids reveal nothing
    about other tenants (not even their library names)."""
    principal = _current.get()
    if principal is not None and not principal.may(library, False):
        raise NotFound(f"audio item {item_id} does not exist")
    require(library, write)


def require_admin(what: str) -> None:
    principal = _current.get()
    if principal is not None and not principal.admin:
        raise PermissionDenied(f"{principal.name} may not {what}: it needs write access to every library ('*')")


def visible(libraries: Iterable[str]) -> set[str]:
    """The libraries the current principal may read."""
    principal = _current.get()
    return {name for name in libraries if principal is None or principal.may(name, False)}


# The tokens file.

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"name", "token_sha256", "token", "read", "write"}


def hash_token(token: str) -> str:
    """What the tokens file stores for `token`: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Tokens:
    """Principals by the SHA-256 of their token."""

    entries: tuple[tuple[bytes, Principal], ...]

    def principal(self, token: str) -> Principal | None:
        """Who `token` belongs to (None: nobody). Every entry is compared,
        each in constant time, so the time taken says nothing about which
        entry (or how much of one) matched."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, principal in self.entries:
            if hmac.compare_digest(digest, known):
                found = principal
        return found

    @property
    def principals(self) -> list[Principal]:
        return [principal for _, principal in self.entries]


def _patterns(entry: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ConfigError(f"{where}: {key!r} must be a list of library names or patterns")
    return [p.strip() for p in value]


def parse_tokens(document: Any, source: str = "tokens file") -> Tokens:
    """Principals from a parsed tokens file:
    {"principals": [{"name", "token_sha256" | "token", "read": [...], "write": [...]}]}.
    Errors name the file and the entry, never a token or a hash."""
    if not isinstance(document, Mapping) or set(document) != {"principals"}:
        raise ConfigError(f"{source}: expected one top-level key, 'principals' (a list)")
    entries = document["principals"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: 'principals' must be a non-empty list")
    names: set[str] = set()
    result: list[tuple[bytes, Principal]] = []
    for number, entry in enumerate(entries, 1):
        where = f"{source}: principal {number}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a table/object")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: 'name' is required")
        name = name.strip()
        where = f"{where} ({name!r})"
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; expected {sorted(_KEYS)}")
        if name in names:
            raise ConfigError(f"{where}: the name is used twice")
        names.add(name)
        hashed, plain = entry.get("token_sha256"), entry.get("token")
        if (hashed is None) == (plain is None):
            raise ConfigError(f"{where}: give exactly one of 'token_sha256' (preferred) or 'token'")
        if hashed is not None:
            if not isinstance(hashed, str) or not _HEX64.fullmatch(hashed.strip().lower()):
                raise ConfigError(f"{where}: 'token_sha256' must be 64 hex digits (python -m {__name__} hash)")
            digest = bytes.fromhex(hashed.strip())
        else:
            if not isinstance(plain, str) or not plain.strip():
                raise ConfigError(f"{where}: 'token' must be a non-empty string")
            digest = hashlib.sha256(plain.strip().encode()).digest()
        if any(hmac.compare_digest(digest, known) for known, _ in result):
            raise ConfigError(f"{where}: the same token as an earlier principal")
        write = _patterns(entry, "write", where)
        read = _patterns(entry, "read", where)
        grants = tuple(Grant(p, True) for p in write) + tuple(Grant(p, False) for p in read if p not in write)
        if not grants:
            raise ConfigError(f"{where}: grants nothing; give 'read' and/or 'write' patterns")
        result.append((digest, Principal(name, grants)))
    return Tokens(tuple(result))


def load_tokens(path: Path) -> Tokens:
    """Reads a tokens file: TOML if it ends in .toml, else JSON."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tokens file {path}: {exc.strerror}") from None
    try:
        document = tomllib.loads(raw.decode()) if path.suffix.lower() == ".toml" else json.loads(raw)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"tokens file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    return parse_tokens(document, f"tokens file {path}")


def _toml_list(patterns: list[str]) -> str:
    return "[" + ", ".join(json.dumps(p) for p in patterns) + "]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {__name__}", description="Tokens for the gateway's tokens file.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="print the SHA-256 of a token read from stdin (or typed, unechoed)")
    c = sub.add_parser("new", help="make a random token; print it and its tokens-file entry")
    c.add_argument("name")
    c.add_argument("--read", action="append", default=[], help="library name or pattern it may read (repeatable)")
    c.add_argument("--write", action="append", default=[], help="library name or pattern it may write (repeatable)")
    c = sub.add_parser("check", help="validate a tokens file and list its principals and grants")
    c.add_argument("file", type=Path)
    args = p.parse_args(argv)
    try:
        if args.command == "hash":
            token = (getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()).strip()
            if not token:
                raise ConfigError("no token given")
            print(hash_token(token))
        elif args.command == "new":
            token = secrets.token_urlsafe(32)
            entry = {"name": args.name, "token_sha256": hash_token(token), "read": args.read, "write": args.write}
            parse_tokens({"principals": [entry]}, "the new entry")  # the same rules as the file
            print(f"# the token for {args.name}: hand it to the client; it is stored nowhere else", file=sys.stderr)
            print(token)
            print("# its entry for the tokens file (TOML):", file=sys.stderr)
            print(
                f'\n[[principals]]\nname = {json.dumps(args.name)}\ntoken_sha256 = "{entry["token_sha256"]}"\n'
                f"read = {_toml_list(args.read)}\nwrite = {_toml_list(args.write)}",
                file=sys.stderr,
            )
        else:
            for principal in load_tokens(args.file).principals:
                grants = ", ".join(f"{g.pattern} ({'write' if g.write else 'read'})" for g in principal.grants)
                print(f"{principal.name}: {grants}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
