"""constraints.txt: the exact releases that `make setup` and the image install.

pyproject.toml states what the code needs (ranges); constraints.txt what was tested (one release of
each package), so that a fresh clone, CI and the Docker image run what passed here, and a new
upstream release changes nothing until `make lock` takes it in.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in requirements}


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    return [Requirement(name) for name in names]


def test_every_pin_is_one_release() -> None:
    for name, pin in pins().items():
        (specifier,) = pin.specifier
        assert specifier.operator == "==" and "*" not in specifier.version, f"{name}: {pin}"


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in constraints.txt: run make lock"
        release = Version(next(iter(pinned[name].specifier)).version)
        assert requirement.specifier.contains(release), (
            f"constraints.txt pins {release}, outside {requirement}"
        )


def test_this_environment_holds_the_pinned_releases() -> None:
    """`make setup` installed with the constraints (torch's local label, +cpu, matches its pin)."""
    for name, pin in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # needed only on another Python or platform
        assert pin.specifier.contains(installed), f"{name} {installed} installed, constraints.txt says {pin}"
