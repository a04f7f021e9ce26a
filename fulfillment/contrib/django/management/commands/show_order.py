from __future__ import annotations

from ._cli import CliCommand, arg


class Command(CliCommand):
    help = "The order's timeline: every step, every attempt, every decision."
    cli_name = "show"
    arguments = (arg("order_id"), arg("--json", action="store_true", help="Print it as JSON."))
