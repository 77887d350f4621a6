"""What a ``muxi-isolation`` subcommand is made of, and the list the command groups fill:
each group's functions are declared with ``declare`` (``cli.command`` for anyone else)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONFIG", "DECLARED", "JSON_OUT", "Arg", "Command", "Runner", "arg", "declare"]

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


DECLARED: list[Command] = []  # in the order the groups load: the order of the help's list
CONFIG = arg("--config", metavar="PATH", help="a muxi.yaml file (default: built-in defaults)")
JSON_OUT = arg("--json", action="store_true", help="print the result as JSON")


def declare(name: str, help: str, *args: Arg) -> Callable[[Runner], Runner]:
    """Declare ``run`` as the subcommand ``name`` (``cli.COMMANDS`` is made of these)."""

    def register(run: Runner) -> Runner:
        DECLARED.append(Command(name, help, run, args))
        return run

    return register
