"""The management commands are the ``fulfillment`` commands: same semantics, output
and exit codes (each one runs the click command with the arguments it was given)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class CliCommand(BaseCommand):
    """A management command that runs ``fulfillment <cli_name> ...``."""

    cli_name = ""
    requires_system_checks: list[str] = []

    def arguments(self, options: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def add_arguments(self, parser: CommandParser) -> None:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        from fulfillment.cli import main

        main.main(
            args=[self.cli_name, *self.arguments(options)],
            prog_name=f"manage.py {self.cli_name}",
        )


def flag(options: dict[str, Any], name: str, option: str | None = None) -> list[str]:
    """``[--option]`` if the boolean ``name`` is set."""
    return [option or "--" + name.replace("_", "-")] if options.get(name) else []


def value(options: dict[str, Any], name: str, option: str | None = None) -> list[str]:
    """``[--option, value]`` if ``name`` was given."""
    given = options.get(name)
    return [] if given is None else [option or "--" + name.replace("_", "-"), str(given)]
