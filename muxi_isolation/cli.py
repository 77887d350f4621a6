"""The ``muxi-isolation`` console command.

    muxi-isolation demo                       the seed's scenario over HTTP, then exit
    muxi-isolation serve --config muxi.yaml   the reference server (127.0.0.1:8001)
    muxi-isolation import KIND SOURCE --map '{tenant}:{user}:{session}'
                                              import an unscoped store (or an export)
    muxi-isolation export-user USER -o u.jsonl   a user's data as JSON Lines
    muxi-isolation forget-user USER --yes     delete every row of a user
    muxi-isolation forget-tenant TENANT --yes delete every row of a tenant
    muxi-isolation purge-expired              drop sessions past expired_session_retention
    muxi-isolation rotate-scope-key [--finish]
                                              rotate the key behind PostgreSQL's signed scope
    muxi-isolation embedding-dimension [N --clear]
                                              show or change the memories' vector dimension
    muxi-isolation audit [verify | prune] [--tenant T] [--user U] [--since ISO]
                         [--outcome denied] [--json]
                                              the audit trail; verify exits 1 on a break

Each subcommand is one function registered with ``@command``; its arguments are listed
in the decorator, so adding one touches nothing else:

    @command("forget-user", "delete every row of a user", CONFIG, arg("user_id"))
    def forget_user(args: argparse.Namespace) -> int:
        ...
        return 0

Web dependencies are imported inside the commands that need them, so the core and the
storage commands work without the ``server`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import IsolationError
from .migrate.sources import SOURCE_KINDS

__all__ = ["COMMANDS", "CONFIG", "Arg", "Command", "arg", "build_parser", "command", "main"]

Runner = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Arg:
    """The arguments of one ``ArgumentParser.add_argument`` call."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Runner
    args: tuple[Arg, ...] = ()


COMMANDS: dict[str, Command] = {}
SERVERS = frozenset({"serve", "demo"})  # commands whose calls come in over HTTP
CONFIG = arg("--config", metavar="PATH", help="a muxi.yaml file (default: built-in defaults)")


def command(name: str, help: str, *args: Arg) -> Callable[[Runner], Runner]:
    """Register ``run`` as the subcommand ``name``; it returns the exit status."""

    def register(run: Runner) -> Runner:
        COMMANDS[name] = Command(name, help, run, args)
        return run

    return register


def build_parser(commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muxi-isolation", description="MUXI-style multi-user isolation for agent apps."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in (COMMANDS if commands is None else commands).values():
        child = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for a in cmd.args:
            child.add_argument(*a.flags, **a.options)
        child.set_defaults(run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None, commands: Mapping[str, Command] | None = None) -> int:
    from .audit import acting

    args = build_parser(commands).parse_args(argv)
    # The storage commands' audit events name the CLI; a server names each request itself.
    edge = contextlib.nullcontext() if args.command in SERVERS else acting("app", "cli")
    try:
        with edge:
            status: int = args.run(args)
    except IsolationError as exc:
        print(f"muxi-isolation: {exc}", file=sys.stderr)
        return 2
    return status


# -- commands -----------------------------------------------------------------------------------


@command(
    "serve",
    "run the reference HTTP server",
    CONFIG,
    arg("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)"),
    arg("--port", type=int, default=8001, help="port (default: 8001)"),
    arg(
        "--agent",
        default="demo",
        metavar="SPEC",
        help="'demo' (offline), or module:attribute naming an agent, a LangChain chat model "
        "or agent graph, or a LlamaIndex LLM (or a function making one)",
    ),
    arg(
        "--allow-anonymous",
        action="store_true",
        help="let requests without a key act for users of the default tenant (development)",
    ),
)
def serve(args: argparse.Namespace) -> int:
    from .agent import load_agent
    from .config import load_config
    from .facade import Isolation
    from .keys import KeyRing
    from .server import create_app, run_server

    config = load_config(None if args.config is None else Path(args.config))
    keys = KeyRing.from_config(config.auth)
    if not len(keys):
        client = keys.add_client_key("default")
        admin = keys.add_admin_key()
        print("no keys in the config; generated for this run:", file=sys.stderr)
        print(f"  client key (tenant default): {client}", file=sys.stderr)
        print(f"  admin key:                   {admin}", file=sys.stderr)
    agent = load_agent(args.agent)
    deadline = config.server.request_timeout
    isolation = Isolation.from_config(config, statement_timeout=deadline)
    print(f"storage: {redact(config.memory.persistent.url)}", file=sys.stderr)
    app = create_app(
        isolation,
        keys,
        agent,
        require_user_header=config.auth.require_user_header,
        allow_anonymous=args.allow_anonymous,
        close_on_shutdown=True,
        request_timeout=deadline,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops cleanly, then re-raises it
        run_server(app, args.host, args.port)
    return 0


@command(
    "demo",
    "play the seed's scenario over HTTP (two users, two tenants) and check isolation",
    arg(
        "--url", metavar="URL", help="storage URL (default: a SQLite file in a temporary directory)"
    ),
)
def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url)


# -- migration and the data lifecycle (muxi_isolation.migrate) ---------------------------------

JSON_OUT = arg("--json", action="store_true", help="print the result as JSON")


def _backend(args: argparse.Namespace) -> Any:
    from .config import load_config
    from .migrate import open_configured_backend

    config = load_config(None if args.config is None else Path(args.config))
    return config, open_configured_backend(config)


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


@command(
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
    from .migrate import run_import
    from .migrate._scopemap import load_mapping
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
    config, backend = _backend(args)
    try:
        report = run_import(
            source,
            backend,
            mapping,
            dry_run=args.dry_run,
            replace=args.replace,
            progress=args.progress,
            session_timeout=config.memory.session_timeout,
        )
    finally:
        backend.close()
    _emit(args, report)
    return 0 if report.ok else 1


def _same_owner(key: str) -> str:
    return key


@command(
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
    _, backend = _backend(args)
    try:
        if args.output is None:
            counts = export(backend, user, sys.stdout)
        else:
            with open(args.output, "w", encoding="utf-8") as out:
                counts = export(backend, user, out)
    finally:
        backend.close()
    summary = ", ".join(f"{n} {kind}s" for kind, n in counts.items()) or "nothing stored"
    print(f"exported {user.header}: {summary}", file=sys.stderr)
    return 0


YES = arg("--yes", action="store_true", help="really delete (required)")


@command(
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
    if not args.yes:
        print(
            f"muxi-isolation: this deletes everything of {user.header}; add --yes", file=sys.stderr
        )
        return 2
    _, backend = _backend(args)
    try:
        _emit(args, forget(backend, user))
    finally:
        backend.close()
    return 0


@command(
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
    if not args.yes:
        print(
            f"muxi-isolation: this deletes everything of tenant {tenant}; add --yes",
            file=sys.stderr,
        )
        return 2
    _, backend = _backend(args)
    try:
        _emit(args, forget(backend, tenant))
    finally:
        backend.close()
    return 0


@command(
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

    config, backend = _backend(args)
    retention = args.retention if args.retention is not None else config
    try:
        _emit(args, purge(backend, retention, tenant_id=args.tenant))
    finally:
        backend.close()
    return 0


def redact(url: str) -> str:
    """A storage URL safe to print: the password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL (memory://): nothing to hide
        return url


@command(
    "rotate-scope-key",
    "rotate the key that signs PostgreSQL's row-level-security scope (no downtime): add a "
    "new key now, drop the old ones with --finish once every app has restarted or run a while",
    CONFIG,
    arg("--finish", action="store_true", help="drop every key but the newest"),
)
def rotate_scope_key(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .stores.sql import SQLBackend

    _, backend = _backend(args)
    try:
        if not isinstance(backend, SQLBackend):
            raise ConfigError("the scope key signs PostgreSQL's row-level security only")
        result = backend.rotate_scope_key(finish=args.finish)
    finally:
        backend.close()
    if args.finish:
        print(f"dropped {result} old scope key{'' if result == 1 else 's'}; the newest stays")
    else:
        print(
            f"added scope key {result}; old keys stay valid until "
            "`muxi-isolation rotate-scope-key --finish`"
        )
    return 0


@command(
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

    _, backend = _backend(args)
    try:
        if not isinstance(backend, SQLBackend):
            raise ConfigError("the in-memory store keeps no embedding dimension")
        if args.dimension is None:
            current = backend.embedding_dimension()
            print(
                "not fixed yet (the first vector written sets it)" if current is None else current
            )
            return 0
        dropped = backend.set_embedding_dimension(args.dimension, clear=args.clear)
    finally:
        backend.close()
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


@command(
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

    _, backend = _backend(args)
    try:
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
    finally:
        backend.close()
    if args.json:
        print(json.dumps([e.to_dict() for e in events], ensure_ascii=False, indent=2))
    for e in events if not args.json else ():
        print(_event_line(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
