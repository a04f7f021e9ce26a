"""kombu's own Redis transport test suites, run against :mod:`fulfillment.engine.transport`.

The transport subclasses private parts of kombu's Redis channel, so kombu's own
tests (``t/unit/transport/test_redis.py`` and ``t/integration/test_redis.py``
from the sdist of the installed kombu version, fetched from PyPI once and
cached) must pass with our classes in place of kombu's. The two suites run
separately, as kombu's own CI runs them; the integration suite talks to a
valkey-server of its own.
"""

from __future__ import annotations

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


def run_suite(root: Path, path: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.kombu_substitute", "-p", "no:cacheprovider",
         "-q", "-W", "ignore", path],
        cwd=root, capture_output=True, text=True, timeout=900,
        env={**base_env(), "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert "substituted: fulfillment.engine.transport.Transport" in output, output[-3000:]
    assert proc.returncode == 0, output[-6000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > 100, output[-3000:]
    print(output.strip().splitlines()[-1])
    return output


def test_kombu_unit_suite_passes_with_our_transport(kombu_tests: Path) -> None:
    run_suite(kombu_tests, "t/unit/transport/test_redis.py")


def test_kombu_integration_suite_passes_with_our_transport(
    kombu_tests: Path, tmp_path: Path
) -> None:
    with OwnServer(tmp_path / "redis") as server:
        run_suite(
            kombu_tests,
            "t/integration/test_redis.py",
            REDIS_HOST="127.0.0.1",
            REDIS_6379_TCP=str(server.port),
        )
