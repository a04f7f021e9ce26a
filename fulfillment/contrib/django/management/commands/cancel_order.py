from __future__ import annotations

from ._cli import CliCommand, arg


class Command(CliCommand):
    help = "Cancel an unfinished order (a running step finishes first); effects are undone."
    cli_name = "cancel"
    arguments = (
        arg("order_id"),
        arg("--reason", help="Why (recorded on the order)."),
        arg("--by", help="Who cancels (default: your user name)."),
    )
