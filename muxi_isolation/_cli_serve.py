"""``muxi-isolation serve`` and ``demo``: the commands whose calls come in over HTTP."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ._cli_args import CONFIG, arg, declare

__all__ = ["demo", "redact", "serve"]


@declare(
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


@declare(
    "demo",
    "play the seed's scenario over HTTP (two users, two tenants) and check isolation",
    arg(
        "--url", metavar="URL", help="storage URL (default: a SQLite file in a temporary directory)"
    ),
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
