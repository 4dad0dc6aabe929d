"""Builds are reproducible: one lock (constraints.txt) for every install, a base image
pinned by digest.

An unpinned build once took in gunicorn 27 unseen, and with it an ERROR on every
container start. The lock is what `make`, CI (which runs `make`) and the Dockerfile
install from; these tests hold the three to it and the installed packages to the lock.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
PROJECT = "baclofen-cds"


def _pins() -> dict[str, str]:
    """Package name -> pinned version, for the pins that apply on this platform."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _installed_closure(name: str, extras: frozenset[str]) -> set[str]:
    """The installed distributions ``name[extras]`` pulls in, itself excluded."""
    seen: set[str] = set()
    pending = [(name, extras)]
    while pending:
        current, current_extras = pending.pop()
        for text in metadata.requires(current) or []:
            requirement = Requirement(text)
            environments = [{**default_environment(), "extra": e} for e in current_extras or {""}]
            if requirement.marker is not None and not any(
                requirement.marker.evaluate(env) for env in environments
            ):
                continue
            key = canonicalize_name(requirement.name)
            if key not in seen:
                seen.add(key)
                pending.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_every_installed_dependency_is_the_locked_version() -> None:
    """`make` installed exactly what the lock says (CI builds its venv the same way)."""
    pins = _pins()
    closure = _installed_closure(PROJECT, frozenset({"test"}))
    assert closure, "the project is not installed"
    assert sorted(closure - pins.keys()) == []
    assert {name: metadata.version(name) for name in closure} == {
        name: pins[name] for name in closure
    }


def test_the_lock_satisfies_the_ranges_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _pins()
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for text in declared:
        requirement = Requirement(text)
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)]), text


def test_make_and_the_dockerfile_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^LOCK := constraints\.txt$", makefile, re.MULTILINE)
    install_lines = [line for line in makefile.splitlines() if "pip install" in line]
    # Every install but the lock tool's own (uv, pinned in the Makefile) is constrained.
    assert all("$(LOCK)" in line or "uv==$(UV_VERSION)" in line for line in install_lines)
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").count("make test") == 1

    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert any("constraints.txt" in line.split() for line in copies)
    wheel = next(line for line in dockerfile.splitlines() if "pip wheel" in line)
    assert "--constraint constraints.txt" in wheel
    assert "--build-constraint constraints.txt" in wheel
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text(encoding="utf-8").split()


def test_the_base_image_is_pinned_by_digest_in_a_build_argument() -> None:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    (default,) = [line.split("=", 1)[1] for line in lines if line.startswith("ARG PYTHON_IMAGE=")]
    assert re.fullmatch(r"[\w./-]+/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", default)
    stages = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
