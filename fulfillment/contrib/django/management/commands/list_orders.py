from __future__ import annotations

from ._cli import CliCommand, arg


class Command(CliCommand):
    help = "Newest orders first; --status filters (a status, or retrying)."
    cli_name = "list"
    arguments = (
        arg("--status", help="A status, or retrying."),
        arg("--limit", type=int, help="How many (default 50)."),
        arg("--json", action="store_true", help="Print the orders as JSON."),
    )
