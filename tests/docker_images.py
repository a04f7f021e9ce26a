"""Stand-ins for the public images the compose files name, built from Debian's packages.

No image registry is reachable where the tests run, so ``python:3.11-slim``,
``redis:7-alpine`` and ``rabbitmq:3.13-management-alpine`` cannot be pulled. They are
built here instead, under those very names, from a Debian bookworm root made with
``debootstrap`` and imported into Docker; what the compose files and the Dockerfile
use of each is there: Python 3.11 with pip (and the host's CA bundle, which pip needs
to reach PyPI through this machine's proxy), ``redis-server`` and ``redis-cli`` with
``/data`` as the working directory, RabbitMQ with its management plugin, taking its
user from ``RABBITMQ_DEFAULT_USER`` / ``RABBITMQ_DEFAULT_PASS`` as the official image
does. An image already present is not built again.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

BASE = "fulfillment-stand-in/debian:bookworm"
MIRROR = "http://deb.debian.org/debian"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

PYTHON = """\
FROM {base}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-pip \\
      python3-venv python-is-python3 && rm -rf /var/lib/apt/lists/* \\
    && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && ln -sf /usr/bin/pip3 /usr/bin/pip
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
CMD ["python"]
"""

REDIS = """\
FROM {base}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server \\
      redis-tools && rm -rf /var/lib/apt/lists/* && mkdir -p /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
"""

RABBITMQ = """\
FROM {base}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends rabbitmq-server \\
      && rm -rf /var/lib/apt/lists/* && rabbitmq-plugins --offline enable rabbitmq_management
COPY entrypoint.sh /usr/local/bin/rabbitmq-entrypoint
RUN chmod +x /usr/local/bin/rabbitmq-entrypoint
EXPOSE 5672 15672
ENTRYPOINT ["rabbitmq-entrypoint"]
CMD ["rabbitmq-server"]
"""

RABBITMQ_ENTRYPOINT = """\
#!/bin/sh
# the official image's way: the default user from the environment
set -e
mkdir -p /etc/rabbitmq
{
  echo "loopback_users = none"
  [ -n "$RABBITMQ_DEFAULT_USER" ] && echo "default_user = $RABBITMQ_DEFAULT_USER"
  [ -n "$RABBITMQ_DEFAULT_PASS" ] && echo "default_pass = $RABBITMQ_DEFAULT_PASS"
  true
} > /etc/rabbitmq/rabbitmq.conf
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec "$@"
"""

#: the images the compose files and the Dockerfile name, and how each is built
STAND_INS: dict[str, tuple[str, dict[str, str]]] = {
    "python:3.11-slim": (PYTHON, {}),
    "redis:7-alpine": (REDIS, {}),
    "rabbitmq:3.13-management-alpine": (RABBITMQ, {"entrypoint.sh": RABBITMQ_ENTRYPOINT}),
}


def has_image(name: str) -> bool:
    out = subprocess.run(["docker", "image", "inspect", name], capture_output=True)
    return out.returncode == 0


def _base(say: Callable[[str], None]) -> None:
    if has_image(BASE):
        return
    with tempfile.TemporaryDirectory(prefix="fulfillment-rootfs-") as tmp:
        root = Path(tmp) / "root"
        say("debootstrap --variant=minbase bookworm (about 30 s)")
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm",
             str(root), MIRROR],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        (root / "etc/apt/sources.list").write_text(
            f"deb {MIRROR} bookworm main\ndeb {MIRROR} bookworm-updates main\n"
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", BASE], stdin=tar.stdout, check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        tar.wait()


def build_stand_ins(say: Callable[[str], None] = print) -> None:
    """Build every stand-in image that is missing (the base root first)."""
    missing = [name for name in STAND_INS if not has_image(name)]
    if not missing:
        return
    _base(say)
    for name in missing:
        dockerfile, files = STAND_INS[name]
        with tempfile.TemporaryDirectory(prefix="fulfillment-image-") as tmp:
            context = Path(tmp)
            (context / "Dockerfile").write_text(dockerfile.format(base=BASE))
            shutil.copy(HOST_CA, context / "ca-certificates.crt")
            for file, text in files.items():
                (context / file).write_text(text)
            say(f"docker build -t {name} (a stand-in from Debian's packages)")
            out = subprocess.run(["docker", "build", "-q", "-t", name, str(context)],
                                 capture_output=True, text=True, timeout=900)  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(f"building {name} failed: {out.stderr[-2000:]}")
