from __future__ import annotations

from ._cli import CliCommand, arg


class Command(CliCommand):
    help = "Approve an order that waits for approval (it resumes at once)."
    cli_name = "approve"
    arguments = (arg("order_id"), arg("--by", help="Who approves (default: your user name)."))
