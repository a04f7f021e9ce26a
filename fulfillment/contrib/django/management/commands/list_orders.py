from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ._cli import CliCommand, flag, value


class Command(CliCommand):
    help = "Newest orders first; --status filters (a status, or retrying)."
    cli_name = "list"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--status", help="A status, or retrying.")
        parser.add_argument("--limit", type=int, help="How many (default 50).")
        parser.add_argument("--json", action="store_true", help="Print the orders as JSON.")

    def arguments(self, options: dict[str, Any]) -> list[str]:
        return [*value(options, "status"), *value(options, "limit"), *flag(options, "json")]
