from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ._cli import CliCommand, value


class Command(CliCommand):
    help = "Reject an order that waits for approval (it fails: ApprovalRejected)."
    cli_name = "reject"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id")
        parser.add_argument("--reason", help="Why (recorded as the failure message).")
        parser.add_argument("--by", help="Who rejects (default: your user name).")

    def arguments(self, options: dict[str, Any]) -> list[str]:
        return [options["order_id"], *value(options, "reason"), *value(options, "by")]
