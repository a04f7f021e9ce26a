"""The tree's own rules, checked in CI: layers point one way, the engine names no order
step, nothing cites a file outside the repository, lint and types are clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fulfillment.orders.settings import load_settings
from fulfillment.orders.workflow import order_workflow

from .support import REPO

BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_layers_point_one_way() -> None:
    """engine <- order workflow <- operations (import-linter, pyproject.toml)."""
    out = run(str(BIN / "lint-imports"), "--no-cache")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_engine_lua_names_no_order_step() -> None:
    wf = order_workflow(load_settings(redis_url="redis://unused"))
    names = {s.name for s in wf.steps} | {s.undo.name for s in wf.activities if s.undo}
    names |= {wf.task_name(s) for s in wf.steps} | {"order", "orders", "ledger", "stock"}
    names |= {"charge", "charged", "refund", "refunded", "shipment", "shipped", "card"}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b", re.I)
    scripts = sorted((REPO / "fulfillment" / "engine" / "lua").glob("*.lua"))
    assert scripts
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in scripts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)  # comments included
    ]
    assert found == [], found


def test_nothing_cites_files_outside_the_repository() -> None:
    pattern = re.compile(r"CELERY-NOTES|DESIGN(\.md| section)")
    roots = [REPO / "fulfillment", REPO / "tests", REPO / "bench", REPO / "docs"]
    files = [REPO / "celeryconfig.py", REPO / "README.md", REPO / "pyproject.toml"]
    files += [p for root in roots for p in root.rglob("*") if p.suffix in (".py", ".lua", ".md")]
    files = [p for p in files if p != Path(__file__)]
    cited = [str(p.relative_to(REPO)) for p in files if pattern.search(p.read_text())]
    assert cited == [], cited


@pytest.mark.parametrize(
    "cmd",
    [("ruff", "format", "--check", "."), ("ruff", "check", "."), ("mypy",)],
    ids=["ruff format", "ruff check", "mypy"],
)
def test_lint_and_types_are_clean(cmd: tuple[str, ...]) -> None:
    out = run(str(BIN / cmd[0]), *cmd[1:])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_the_configuration_reference_matches_the_settings_models() -> None:
    """docs/configuration.md is generated from the settings (``./dev docs`` writes it)."""
    from fulfillment.ops.reference import markdown

    assert (REPO / "docs" / "configuration.md").read_text() == markdown(), (
        "docs/configuration.md is out of date: run ./dev docs"
    )


def test_every_data_file_is_packaged() -> None:
    """A non-editable install (the Docker image's ``pip install .``) gets every Lua
    script, template and catalogue: ``package-data`` in pyproject.toml covers them."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packaged = set()
    for package, patterns in data["package-data"].items():
        root = REPO / package.replace(".", "/")
        for pattern in patterns:
            packaged |= {p.relative_to(REPO) for p in root.glob(pattern)}
    present = {
        p.relative_to(REPO)
        for suffix in ("*.lua", "*.html", "*.json")
        for p in (REPO / "fulfillment").rglob(suffix)
    }
    assert present and present <= packaged, sorted(present - packaged)


def test_a_script_is_loaded_with_the_helpers_it_uses_and_only_those() -> None:
    from fulfillment.engine.scripts import ENGINE_SCRIPTS, library, linked, source

    helpers = (
        "-- a\nlocal A = 1\nlocal function b(x)\n  return A + x\nend\n\nlocal function c()\nend\n"
    )
    text = linked(helpers, "return b(2)")
    assert "local A = 1" in text and "local function b" in text and "function c" not in text
    assert text.index("local A") < text.index("local function b") < text.index("return b(2)")
    with pytest.raises(ValueError, match="one name per top-level local"):
        linked("local x, y = 1, 2\n", "return x")
    defined = set(re.findall(r"^local (?:function )?(\w+)", library(), re.M))
    for name in ENGINE_SCRIPTS:
        loaded = source("fulfillment.engine", name)
        named = set(re.findall(r"\w+", loaded)) & defined
        missing = {n for n in named if not re.search(rf"^local (?:function )?{n}\b", loaded, re.M)}
        assert not missing, f"{name}.lua names helpers it is loaded without: {missing}"
    charge = source("fulfillment.orders.services", "charge")
    assert "local function stale_attempt" in charge and "send_outbox" not in charge
