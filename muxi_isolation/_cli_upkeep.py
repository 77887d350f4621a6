"""``muxi-isolation rotate-scope-key``, ``embedding-dimension`` and ``audit``: the owner's
maintenance of one store."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any

from ._cli_args import CONFIG, JSON_OUT, arg, declare
from ._cli_stores import opened

__all__ = ["audit", "embedding_dimension", "rotate_scope_key"]


@declare(
    "rotate-scope-key",
    "rotate the key that signs PostgreSQL's row-level-security scope (no downtime): add a "
    "new key now, drop the old ones with --finish once every app has restarted or run a while",
    CONFIG,
    arg("--finish", action="store_true", help="drop every key but the newest"),
)
def rotate_scope_key(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .stores.sql import SQLBackend

    with opened(args) as (_, backend):
        if not isinstance(backend, SQLBackend):
            raise ConfigError("the scope key signs PostgreSQL's row-level security only")
        result = backend.rotate_scope_key(finish=args.finish)
    if args.finish:
        print(f"dropped {result} old scope key{'' if result == 1 else 's'}; the newest stays")
    else:
        print(
            f"added scope key {result}; old keys stay valid until "
            "`muxi-isolation rotate-scope-key --finish`"
        )
    return 0


@declare(
    "embedding-dimension",
    "show the memories' embedding dimension, or change it (stored vectors must be dropped "
    "with --clear and embedded again)",
    CONFIG,
    arg("dimension", nargs="?", type=int, help="the new dimension (omit to show the current)"),
    arg("--clear", action="store_true", help="drop the stored vectors (their text stays)"),
)
def embedding_dimension(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .stores.sql import SQLBackend

    with opened(args) as (_, backend):
        if not isinstance(backend, SQLBackend):
            raise ConfigError("the in-memory store keeps no embedding dimension")
        if args.dimension is None:
            current = backend.embedding_dimension()
            print(
                "not fixed yet (the first vector written sets it)" if current is None else current
            )
            return 0
        dropped = backend.set_embedding_dimension(args.dimension, clear=args.clear)
    cleared = f"; {dropped} stored vector{'' if dropped == 1 else 's'} dropped" if dropped else ""
    print(f"embedding dimension is now {args.dimension}{cleared}")
    return 0


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _event_line(e: Any) -> str:
    who = f"{e.tenant_id or '-'}:{e.user_id or '-'}" + (f"/{e.session_id}" if e.session_id else "")
    what = f"{e.actor} {e.interface} {e.operation} {e.outcome}"
    return f"{e.at.isoformat()} {who} {what} {','.join(e.targets)}".rstrip()


@declare(
    "audit",
    "the audit trail: list its events (newest last), verify its hash chains (exit 1 on a "
    "break), or prune the events older than audit.retention_days",
    CONFIG,
    arg("action", nargs="?", choices=["list", "verify", "prune"], default="list"),
    arg("--tenant", metavar="TENANT", help="only this tenant's events"),
    arg("--user", metavar="USER", help="only this user's (a user id, or tenant:user)"),
    arg("--since", metavar="ISO", type=_moment, help="only events at or after this time"),
    arg("--outcome", choices=["ok", "denied", "missing", "dropped"]),
    arg("--limit", type=int, metavar="N", help="at most N events"),
    JSON_OUT,
)
def audit(args: argparse.Namespace) -> int:
    from . import audit as trail
    from .scope import Scope

    with opened(args) as (_, backend):
        if args.action == "verify":
            breaks, heads = trail.verify(backend, args.tenant), trail.heads(backend)
            report = {"ok": not breaks, "breaks": [vars(b) for b in breaks], "heads": heads}
            if args.json:
                print(json.dumps(report, ensure_ascii=False, indent=2))
            for b in breaks if not args.json else ():
                print(f"BROKEN {b.tenant_id or '-'} #{b.seq}: {b.reason}")
            if not args.json and not breaks:
                print(f"ok: {len(heads)} chain{'' if len(heads) == 1 else 's'} verified")
            return 1 if breaks else 0
        if args.action == "prune":
            print(f"pruned {trail.prune(backend)} event(s)")
            return 0
        tenant, user = args.tenant, args.user
        if user is not None and ":" in user:
            parsed = Scope.parse(user)
            tenant, user = parsed.tenant_id, parsed.user_id
        query = trail.AuditQuery(tenant, user, args.since, args.outcome, args.limit)
        events = trail.read_events(backend, query)
    if args.json:
        print(json.dumps([e.to_dict() for e in events], ensure_ascii=False, indent=2))
    for e in events if not args.json else ():
        print(_event_line(e))
    return 0
