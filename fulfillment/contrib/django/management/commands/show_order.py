from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ._cli import CliCommand, flag


class Command(CliCommand):
    help = "The order's timeline: every step, every attempt, every decision."
    cli_name = "show"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id")
        parser.add_argument("--json", action="store_true", help="Print the timeline as JSON.")

    def arguments(self, options: dict[str, Any]) -> list[str]:
        return [options["order_id"], *flag(options, "json")]
