"""The ``muxi-isolation`` console command.

    muxi-isolation demo                       the seed's scenario over HTTP, then exit
    muxi-isolation serve --config muxi.yaml   the reference server (127.0.0.1:8001)

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
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IsolationError

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
    args = build_parser(commands).parse_args(argv)
    try:
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
    arg("--agent", default="demo", metavar="SPEC",
        help="'demo' (offline), or module:attribute naming an agent, a LangChain chat model "
             "or agent graph, or a LlamaIndex LLM (or a function making one)"),
    arg("--allow-anonymous", action="store_true",
        help="let requests without a key act for users of the default tenant (development)"),
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
    isolation = Isolation.from_config(config)
    print(f"storage: {redact(config.memory.persistent.url)}", file=sys.stderr)
    app = create_app(
        isolation,
        keys,
        agent,
        require_user_header=config.auth.require_user_header,
        allow_anonymous=args.allow_anonymous,
        close_on_shutdown=True,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops cleanly, then re-raises it
        run_server(app, args.host, args.port)
    return 0


@command(
    "demo",
    "play the seed's scenario over HTTP (two users, two tenants) and check isolation",
    arg("--url", metavar="URL",
        help="storage URL (default: a SQLite file in a temporary directory)"),
)
def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url)


def redact(url: str) -> str:
    """A storage URL safe to print: the password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL (memory://): nothing to hide
        return url


if __name__ == "__main__":
    sys.exit(main())
