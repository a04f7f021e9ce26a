"""The management commands are the ``fulfillment`` commands: same semantics, output
and exit codes. Each one declares its arguments once, in the CLI's spelling, and runs
the click command with the arguments it was given."""

from __future__ import annotations

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
