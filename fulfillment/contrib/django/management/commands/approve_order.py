from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ._cli import CliCommand, value


class Command(CliCommand):
    help = "Approve an order that waits for approval (it resumes at once)."
    cli_name = "approve"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id")
        parser.add_argument("--by", help="Who approves (default: your user name).")

    def arguments(self, options: dict[str, Any]) -> list[str]:
        return [options["order_id"], *value(options, "by")]
