from __future__ import annotations

from ._cli import CliCommand, arg


class Command(CliCommand):
    help = "Place an order (JSON from FILE, or stdin with '-'); --wait prints its result."
    cli_name = "submit"
    arguments = (
        arg("source", nargs="?", default="-", metavar="FILE|-"),
        arg("--wait", action="store_true", help="Block until it finishes."),
        arg("--timeout", type=float, help="With --wait: give up after SECONDS."),
        arg("--approval-timeout", type=float, help="Seconds to wait for approval."),
    )
