"""kombu's own Redis transport test suites, run against :mod:`fulfillment.engine.transport`.

The transport subclasses private parts of kombu's Redis channel, so kombu's own
tests (``t/unit/transport/test_redis.py`` and ``t/integration/test_redis.py``
from the sdist of the installed kombu version, fetched from PyPI once and
cached) must pass with our classes in place of kombu's. The two suites run
separately, as kombu's own CI runs them; the integration suite runs in three
shards at once, each talking to a valkey-server of its own.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .servers import OwnServer
from .support import REPO, base_env

pytestmark = pytest.mark.slow

VERSION = importlib.metadata.version("kombu")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fulfillment"


@pytest.fixture(scope="module")
def kombu_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kombu's ``t/`` tree and pytest configuration, from its sdist (no kombu source beside it)."""
    sdist = CACHE / f"kombu-{VERSION}.tar.gz"
    if not sdist.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", f"kombu=={VERSION}", "-d", str(CACHE)],
            check=True, timeout=300,
        )  # fmt: skip
    root = tmp_path_factory.mktemp("kombu-tests")
    with tarfile.open(sdist) as archive:
        top = f"kombu-{VERSION}/"
        members = [
            m for m in archive.getmembers() if m.name.startswith((top + "t/", top + "setup.cfg"))
        ]
        archive.extractall(root, members=members, filter="data")
    return root / f"kombu-{VERSION}"


def pytest_args(path: str | list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "tests.kombu_substitute",
            "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-W", "ignore",
            *([path] if isinstance(path, str) else path)]  # fmt: skip


def check(output: str, returncode: int) -> int:
    """How many of kombu's tests passed, once the run is known to be a pass with our classes."""
    assert "substituted: fulfillment.engine.transport.Transport" in output, output[-3000:]
    assert returncode == 0, output[-6000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed, output[-3000:]
    print(output.strip().splitlines()[-1])
    return int(passed.group(1))


def env_for(**env: str) -> dict[str, str]:
    return {**base_env(), "PYTHONPATH": str(REPO), **env}


def test_kombu_unit_suite_passes_with_our_transport(kombu_tests: Path) -> None:
    proc = subprocess.run(
        pytest_args("t/unit/transport/test_redis.py"), cwd=kombu_tests, capture_output=True,
        text=True, timeout=900, env=env_for(),
    )  # fmt: skip
    assert check(proc.stdout + proc.stderr, proc.returncode) > 100


#: the integration suite mostly waits (queue expiry, health checks: a few seconds
#: of CPU in two minutes), so it runs in shards at once, each on a server of its own
SHARDS = 3


def test_kombu_integration_suite_passes_with_our_transport(
    kombu_tests: Path, tmp_path: Path
) -> None:
    path = "t/integration/test_redis.py"
    listed = subprocess.run(
        [*pytest_args(path), "--collect-only"], cwd=kombu_tests, capture_output=True,
        text=True, timeout=300, env=env_for(),
    )  # fmt: skip
    ids = [line for line in listed.stdout.splitlines() if line.startswith(path + "::")]
    assert len(ids) > 100, listed.stdout[-3000:] + listed.stderr[-3000:]
    with contextlib.ExitStack() as stack:
        runs = []
        for shard in range(SHARDS):
            server = stack.enter_context(OwnServer(tmp_path / f"redis-{shard}"))
            env = env_for(REDIS_HOST="127.0.0.1", REDIS_6379_TCP=str(server.port))
            log = stack.enter_context((tmp_path / f"shard-{shard}.log").open("w+"))
            proc = subprocess.Popen(
                pytest_args(ids[shard::SHARDS]), cwd=kombu_tests, stdout=log,
                stderr=subprocess.STDOUT, text=True, env=env,
            )  # fmt: skip
            stack.callback(proc.kill)
            runs.append((proc, log))
        passed = 0
        for proc, log in runs:
            proc.wait(timeout=900)
            log.seek(0)
            passed += check(log.read(), proc.returncode)
    assert passed == len(ids)
