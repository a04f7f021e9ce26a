"""Before and after a change, in one run: the single-server hot path of two trees.

``python -m bench.before_after REF [--rounds N] [--orders N] [--latency N]`` checks out
``REF`` (a commit, a branch) in a temporary git worktree and measures it and the working
tree in alternating rounds, each side in a process tree of its own (its producer, its
embedded server, its workers, all importing that side's code): throughput (orders/s,
prefork concurrency 2) and latency (one order at a time, p50 and p99). The medians of
the rounds are compared, so the machine's noise falls on both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .harness import ROOT, median

#: run inside one tree: its bench, its fulfillment
PROBE = """
import json, sys
import fulfillment
from bench import ours
from bench.harness import embedded_server, percentile
n, n_lat = int(sys.argv[1]), int(sys.argv[2])
with embedded_server() as server:
    rate = ours.throughput(server, n).rate
    with ours.sequential(server) as one:
        times = [one() for _ in range(n_lat)]
print(json.dumps({"code": fulfillment.__file__, "rate": rate,
                  "p50": percentile(times, 50), "p99": percentile(times, 99)}))
"""


def probe(tree: Path, orders: int, latency: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILLMENT_")}
    env["PYTHONPATH"] = str(tree)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(orders), str(latency)],
        cwd=tree, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"error: the probe in {tree} failed: {out.stderr.strip()[-500:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not str(result.pop("code")).startswith(str(tree)):
        raise SystemExit(f"error: the probe in {tree} did not run that tree's code")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after")
    parser.add_argument("ref", help="the commit (or branch) to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--orders", type=int, default=1000, help="orders per throughput round")
    parser.add_argument("--latency", type=int, default=100, help="orders timed one at a time")
    args = parser.parse_args()
    console = Console(width=160)
    with tempfile.TemporaryDirectory(prefix="fulfillment-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before),
                        args.ref], check=True, capture_output=True)  # fmt: skip
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for i in range(args.rounds):
                sides = [("before", before), ("after", ROOT)]
                for name, tree in sides if i % 2 == 0 else reversed(sides):
                    console.print(f"round {i + 1}: {name} ...")
                    runs[name].append(probe(tree, args.orders, args.latency))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(before)], capture_output=True)  # fmt: skip
    out = Table(title=f"single server: {args.ref} (before) vs the working tree (after)",
                title_justify="left")  # fmt: skip
    for col in ("measure", "before", "after", "after / before", "rounds (before | after)"):
        out.add_column(col)
    for key, label in (("rate", "throughput, orders/s"), ("p50", "latency p50, ms"),
                       ("p99", "latency p99, ms")):  # fmt: skip
        b, a = median([r[key] for r in runs["before"]]), median([r[key] for r in runs["after"]])
        each = (
            " ".join(f"{r[key]:.1f}" for r in runs["before"])
            + " | "
            + " ".join(f"{r[key]:.1f}" for r in runs["after"])
        )
        out.add_row(label, f"{b:.1f}", f"{a:.1f}", f"{a / b:.2f}", each)
    console.print(out)


if __name__ == "__main__":
    main()
