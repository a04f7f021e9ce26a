"""Failover: SIGKILL the worker that runs a step; time from the kill to the order's completion.

Runs with the demo's settings (step time limit 5 s, service latency 1 s) on two
workers, so the figure includes re-running the interrupted step and the step
after it. Target: at most the step time limit + 1 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .harness import Deployment, Server, embedded_server, median


@dataclass
class FailoverResult:
    trials: list[float]
    step_time_limit: float
    latency: float

    @property
    def median(self) -> float:
        return median(self.trials)

    @property
    def max(self) -> float:
        return max(self.trials)


ORDER = {
    "items": [{"itemName": "Smart Watch", "itemPrice": "279.00", "quantity": 1}],
    "payment": {"creditCard": {"number": "4111111111111111", "expiration": "12/39"}},
}


def run(
    server: Server, trials: int = 5, latency: float = 1.0, limit: float = 5.0,
    **overrides: str,
) -> FailoverResult:  # fmt: skip
    """``overrides``: more settings (``FULFILLMENT_BROKER_URL`` for RabbitMQ)."""
    times: list[float] = []
    env = {
        "FULFILLMENT_SERVICE_LATENCY": str(latency),
        "FULFILLMENT_STEP_TIME_LIMIT": str(limit),
        **overrides,
    }
    with Deployment.create(server, **env) as d:
        d.start_workers(2, concurrency=1)
        for _ in range(trials):
            handle = d.client.place_order(ORDER)
            # wait until the inventory step runs, then kill the worker running it
            while True:
                record = d.client.store.record(handle.id)
                if record.get("step") == "inventory" and record.get("phase") == "running":
                    break
                time.sleep(0.005)
            pid = int(record["worker"].rsplit(":", 1)[1])
            d.kill(pid)
            killed = time.monotonic()
            d.client.wait(handle.id, timeout=120)
            times.append(time.monotonic() - killed)
            d.workers = [p for p in d.workers if p.pid != pid]
            d.start_workers(1, concurrency=1)  # back to two workers for the next trial
    return FailoverResult(times, limit, latency)


def main() -> None:
    with embedded_server() as server:
        result = run(server)
    print(
        f"failover (limit {result.step_time_limit:g}s, latency {result.latency:g}s): "
        f"median {result.median:.2f} s, max {result.max:.2f} s over {len(result.trials)} trials: "
        + ", ".join(f"{t:.2f}" for t in result.trials)
    )


if __name__ == "__main__":
    main()
