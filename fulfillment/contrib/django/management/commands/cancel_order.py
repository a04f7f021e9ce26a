from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ._cli import CliCommand, value


class Command(CliCommand):
    help = "Cancel an unfinished order (a running step finishes first); effects are undone."
    cli_name = "cancel"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id")
        parser.add_argument("--reason", help="Why (recorded on the order).")
        parser.add_argument("--by", help="Who cancels (default: your user name).")

    def arguments(self, options: dict[str, Any]) -> list[str]:
        return [options["order_id"], *value(options, "reason"), *value(options, "by")]
