"""Every Python sample in README.md and docs/ runs, as a reader would run it.

Each ```python block is preceded by an HTML comment that says what it is:

- ``<!-- sample: file NAME.py -->``: a module; it is written into a project directory
  of the document's own;
- ``<!-- sample: run -->`` or ``<!-- sample: run with a worker of MODULE -->``: a
  script, run in that directory (the document's modules importable) against a fresh
  deployment, after starting a real worker of ``MODULE`` (``celery -A MODULE worker``);
  it must exit 0 (its ``assert`` statements are the checks);
- ``<!-- sample: skip REASON -->``: not run, for the reason given (a fragment of a file,
  a project of its own that another test runs).

A block without such a comment fails the suite: no sample goes untested by accident.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support import REPO, Deployment

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
DIRECTIVE = re.compile(r"<!-- sample: (file|run|skip)\b ?(.*?) ?-->\s*\Z", re.S)


@dataclass(frozen=True)
class Sample:
    document: Path
    line: int
    kind: str  # file | run | skip
    detail: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"

    @property
    def worker(self) -> str | None:
        found = re.fullmatch(r"with a worker of ([\w.]+)", self.detail)
        return found.group(1) if found else None


def samples(document: Path) -> list[Sample]:
    text = document.read_text()
    out = []
    for fence in FENCE.finditer(text):
        before = text[: fence.start()].rstrip("\n")
        directive = DIRECTIVE.search(before[-300:])
        line = text.count("\n", 0, fence.start()) + 1
        if directive is None:
            out.append(Sample(document, line, "missing", "", fence.group(1)))
        else:
            out.append(
                Sample(document, line, directive.group(1), directive.group(2), fence.group(1))
            )
    return out


ALL = [s for d in DOCUMENTS for s in samples(d)]
RUNS = [s for s in ALL if s.kind == "run"]


def test_every_python_sample_says_how_it_is_tested() -> None:
    missing = [s.name for s in ALL if s.kind == "missing"]
    assert missing == [], f"```python blocks without a '<!-- sample: ... -->' comment: {missing}"
    unexplained = [s.name for s in ALL if s.kind == "skip" and len(s.detail) < 10]
    assert unexplained == [], f"skipped samples must say why: {unexplained}"
    for s in ALL:
        if s.kind == "file":
            assert re.fullmatch(r"[\w/]+\.py", s.detail), (
                f"{s.name}: 'file NAME.py', not {s.detail!r}"
            )
        if s.kind == "run":
            assert s.detail == "" or s.worker, f"{s.name}: 'run' or 'run with a worker of MODULE'"
    assert RUNS, "no runnable sample at all"


def _project(document: Path, root: Path) -> Path:
    """The document's modules, written where its scripts run."""
    project = root / document.stem
    project.mkdir(parents=True, exist_ok=True)
    for s in samples(document):
        if s.kind == "file":
            path = project / s.detail
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(s.code)
    return project


@pytest.mark.parametrize("sample", RUNS, ids=[s.name for s in RUNS])
def test_sample_runs(sample: Sample, deploy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = _project(sample.document, tmp_path)
    d: Deployment = deploy()
    env = {**d.env, "PYTHONPATH": f"{project}:{REPO}"}
    if sample.worker:
        worker = d.start_worker(
            concurrency=2, app=sample.worker, wait=False, PYTHONPATH=env["PYTHONPATH"]
        )
        d.wait_for_worker(worker)
    script = project / f"sample_{sample.line}.py"
    script.write_text(sample.code)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=project, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, f"{sample.name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
