"""The management commands are the ``fulfillment`` commands: same semantics, output
and exit codes. Each one declares its arguments once, in the CLI's spelling, and runs
the click command with the arguments it was given."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

#: one argument: its names (a positional name, or ``--option``) and argparse's keywords
Argument = tuple[str, dict[str, Any]]


def arg(name: str, **kwargs: Any) -> Argument:
    return name, kwargs


class CliCommand(BaseCommand):
    """A management command that runs ``fulfillment <cli_name> ...``."""

    cli_name = ""
    arguments: tuple[Argument, ...] = ()
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, with a usage error said in one line (as the CLI says it)."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        where = f"{prog_name} {subcommand}"

        def one_line(message: str) -> None:
            sys.stderr.write(f"error: {message} (see '{where} --help')\n")
            sys.exit(2)

        parser.error = one_line
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        for name, kwargs in self.arguments:
            parser.add_argument(name, **kwargs)

    def handle(self, *args: Any, **options: Any) -> None:
        from fulfillment.ops.cli import main

        argv = [self.cli_name]
        for name, kwargs in self.arguments:
            given = options.get(name.lstrip("-").replace("-", "_"))
            if not name.startswith("-"):
                argv.append(str(given))
            elif kwargs.get("action") == "store_true":
                argv += [name] if given else []
            elif given is not None:
                argv += [name, str(given)]
        main.main(args=argv, prog_name=f"manage.py {self.cli_name}")
