"""The old engine of `make bench`'s A/B: a git worktree of the baseline commit in a temporary folder,
its C extensions built in place as its own pyproject.toml declares them, with the bench's Python."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

# setuptools reads the ext-modules of the pyproject.toml in its working folder; none is a no-op.
_BUILD = 'from setuptools import setup; setup(script_args=["build_ext", "--inplace"])'
_WHERE = "import models, service; print(models.__file__); print(service.__file__)"


def commit_of(root: Path, ref: str) -> str:
    """The full commit id `ref` names in the repository at `root`."""
    return _git(root, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()


@contextlib.contextmanager
def checkout(root: Path, ref: str, python: str) -> Iterator[Path]:
    """A worktree of `ref` with its extensions built, removed on exit."""
    commit = commit_of(root, ref)
    folder = Path(tempfile.mkdtemp(prefix="dropserve-baseline-"))
    tree = folder / commit[:12]
    _git(root, "worktree", "add", "--detach", str(tree), commit)
    try:
        _run([python, "-c", _BUILD], tree, f"building the C extensions of {ref}")
        # The old server runs with PYTHONPATH = its tree; make sure it imports that tree's code,
        # not the working tree's (the venv holds an editable install of the latter).
        where = _run([python, "-c", _WHERE], tree, f"importing {ref}'s code", {"PYTHONPATH": str(tree)})
        outside = [path for path in where.split() if not Path(path).is_relative_to(tree)]
        if outside:
            raise RuntimeError(f"the baseline's server would import {outside}, not {tree}'s code")
        yield tree
    finally:
        _git(root, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)


def _git(root: Path, *args: str) -> str:
    return _run(["git", *args], root, f"git {' '.join(args)}")


def _run(command: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout
