"""``muxi-isolation import``, ``export-user``, ``forget-user``, ``forget-tenant`` and
``purge-expired``: migration and the data lifecycle (``muxi_isolation.migrate``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._cli_args import CONFIG, JSON_OUT, arg, declare
from .migrate.sources import SOURCE_KINDS

__all__ = [
    "export_user",
    "forget_tenant",
    "forget_user",
    "import_",
    "opened",
    "purge_expired",
]


@contextmanager
def opened(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """The configuration (``--config``) and its storage, closed after the block."""
    from .config import load_config
    from .migrate import open_configured_backend

    config = load_config(None if args.config is None else Path(args.config))
    backend = open_configured_backend(config)
    try:
        yield config, backend
    finally:
        backend.close()


def _emit(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        import json

        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(result.format())


_KINDS_HELP = "; ".join(f"{kind}: {what}" for kind, what in SOURCE_KINDS.items())


def _seconds(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more seconds")
    return value


@declare(
    "import",
    "import a store that knows nothing of users (or an export) into the configured storage",
    CONFIG,
    arg("kind", metavar="KIND", help=f"the source's kind. {_KINDS_HELP}"),
    arg("source", metavar="SOURCE", help="a file path or a postgresql:// URL"),
    arg(
        "--map",
        dest="map_template",
        metavar="TEMPLATE",
        help="owner of each key by template, e.g. '{tenant}:{user}:{session}' (or one fixed "
        "owner, 'tenant_a:user_1'); muxi-export defaults to the exported user",
    ),
    arg("--map-file", metavar="PATH", help="a JSON/YAML mapping of key -> owner"),
    arg("--map-python", metavar="MODULE:ATTR", help="a callable key -> owner (None skips)"),
    arg("--table", help="the source table (database sources)"),
    arg("--schema", help="the source schema (database sources)"),
    arg(
        "--collection",
        action="append",
        dest="collections",
        metavar="NAME",
        help="a PGVector collection to import (repeatable; default: all)",
    ),
    arg(
        "--key-field",
        metavar="FIELD",
        help="vector sources: key each record by this metadata field (default: the "
        "collection, table or file name)",
    ),
    arg("--dry-run", action="store_true", help="read and check everything, write nothing"),
    arg(
        "--replace",
        action="store_true",
        help="overwrite what the target holds differently (default: report a conflict)",
    ),
    arg(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    ),
    JSON_OUT,
)
def import_(args: argparse.Namespace) -> int:
    from .migrate import load_mapping, run_import
    from .migrate.sources import open_source

    mapping = load_mapping(template=args.map_template, file=args.map_file, python=args.map_python)
    if mapping is None:
        if args.kind != "muxi-export":
            print("muxi-isolation: import needs --map, --map-file or --map-python", file=sys.stderr)
            return 2
        mapping = _same_owner
    source = open_source(
        args.kind,
        args.source,
        table=args.table,
        schema=args.schema,
        collections=args.collections,
        key_field=args.key_field,
    )
    with opened(args) as (config, backend):
        report = run_import(
            source,
            backend,
            mapping,
            dry_run=args.dry_run,
            replace=args.replace,
            progress=args.progress,
            session_timeout=config.memory.session_timeout,
        )
    _emit(args, report)
    return 0 if report.ok else 1


def _same_owner(key: str) -> str:
    return key


@declare(
    "export-user",
    "write everything stored for a user as JSON Lines (sessions, messages, memories)",
    CONFIG,
    arg("user_id", metavar="USER", help="the X-Muxi-User-Id form: tenant_a:user_1"),
    arg("-o", "--output", metavar="PATH", help="the file to write (default: stdout)"),
)
def export_user(args: argparse.Namespace) -> int:
    from .migrate import export_user as export
    from .scope import Scope

    user = Scope.parse(args.user_id)
    with opened(args) as (_, backend):
        if args.output is None:
            counts = export(backend, user, sys.stdout)
        else:
            with open(args.output, "w", encoding="utf-8") as out:
                counts = export(backend, user, out)
    summary = ", ".join(f"{n} {kind}s" for kind, n in counts.items()) or "nothing stored"
    print(f"exported {user.header}: {summary}", file=sys.stderr)
    return 0


YES = arg("--yes", action="store_true", help="really delete (required)")


@declare(
    "forget-user",
    "delete every row of a user in every table, with counts",
    CONFIG,
    arg("user_id", metavar="USER", help="the X-Muxi-User-Id form: tenant_a:user_1"),
    YES,
    JSON_OUT,
)
def forget_user(args: argparse.Namespace) -> int:
    from .migrate import forget_user as forget
    from .scope import Scope

    user = Scope.parse(args.user_id)
    return _delete_all(args, user.header, lambda backend: forget(backend, user))


@declare(
    "forget-tenant",
    "delete every row of every user of a tenant (PostgreSQL: needs admin_connection_string)",
    CONFIG,
    arg("tenant_id", metavar="TENANT"),
    YES,
    JSON_OUT,
)
def forget_tenant(args: argparse.Namespace) -> int:
    from .migrate import forget_tenant as forget
    from .scope import Scope

    tenant = Scope(args.tenant_id).tenant_id
    return _delete_all(args, f"tenant {tenant}", lambda backend: forget(backend, tenant))


def _delete_all(args: argparse.Namespace, whose: str, forget: Callable[[Any], Any]) -> int:
    """Only with ``--yes``: run ``forget`` on the storage and print its counts."""
    if not args.yes:
        print(f"muxi-isolation: this deletes everything of {whose}; add --yes", file=sys.stderr)
        return 2
    with opened(args) as (_, backend):
        _emit(args, forget(backend))
    return 0


@declare(
    "purge-expired",
    "delete sessions expired longer ago than memory.expired_session_retention (memories stay)",
    CONFIG,
    arg(
        "--retention",
        type=_seconds,
        metavar="SECONDS",
        help="override memory.expired_session_retention for this run",
    ),
    arg("--tenant", metavar="TENANT", help="only this tenant (default: every tenant)"),
    JSON_OUT,
)
def purge_expired(args: argparse.Namespace) -> int:
    from .migrate import purge_expired as purge

    with opened(args) as (config, backend):
        retention = args.retention if args.retention is not None else config
        _emit(args, purge(backend, retention, tenant_id=args.tenant))
    return 0
