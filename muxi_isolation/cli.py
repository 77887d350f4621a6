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

The commands live by group, each declared the same way (``_cli_args.declare``):
``_cli_serve`` (serve, demo), ``_cli_stores`` (import, export, forget, purge) and
``_cli_upkeep`` (scope key, embedding dimension, audit trail). Web dependencies are
imported inside the commands that need them, so the core and the
storage commands work without the ``server`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence

from ._cli_args import CONFIG, DECLARED, Arg, Command, Runner, arg
from ._cli_serve import redact
from .errors import IsolationError

# The command groups declare their commands (``_cli_args.declare``) as they load.
from . import _cli_stores, _cli_upkeep  # noqa: F401  isort: skip

__all__ = [
    "COMMANDS",
    "CONFIG",
    "Arg",
    "Command",
    "arg",
    "build_parser",
    "command",
    "main",
    "redact",
]

COMMANDS: dict[str, Command] = {c.name: c for c in DECLARED}  # the groups', in order
SERVERS = frozenset({"serve", "demo"})  # commands whose calls come in over HTTP


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


if __name__ == "__main__":
    sys.exit(main())
