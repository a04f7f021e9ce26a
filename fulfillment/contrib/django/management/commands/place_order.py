from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ._cli import CliCommand, flag, value


class Command(CliCommand):
    help = "Place an order (JSON from FILE, or stdin with '-'); --wait prints its result."
    cli_name = "submit"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", nargs="?", default="-", metavar="FILE|-")
        parser.add_argument("--wait", action="store_true", help="Block until it finishes.")
        parser.add_argument("--timeout", type=float, help="With --wait: give up after SECONDS.")
        parser.add_argument("--approval-timeout", type=float, help="Seconds to wait for approval.")

    def arguments(self, options: dict[str, Any]) -> list[str]:
        return [
            options["source"],
            *flag(options, "wait"),
            *value(options, "timeout"),
            *value(options, "approval_timeout"),
        ]
