from __future__ import annotations

from ._cli import CliCommand, arg


class Command(CliCommand):
    help = "Reject an order that waits for approval (it fails: ApprovalRejected)."
    cli_name = "reject"
    arguments = (
        arg("order_id"),
        arg("--reason", help="Why (recorded as the failure message)."),
        arg("--by", help="Who rejects (default: your user name)."),
    )
