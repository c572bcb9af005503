"""The model artifact: artifacts/<name>/<version>/{model.safetensors, model.json, ...}.

Weights are safetensors (no pickle); the manifest's sha256 of the weights is checked at load.
Versions are published atomically: written into a hidden temporary folder, then renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.network import DropoutMLP
from models.spec import Manifest

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"


class ArtifactError(Exception):
    """An artifact is missing, malformed or fails its integrity check."""


@dataclass
class LoadedModel:
    """An eval-mode network and the manifest it was built from."""

    model: DropoutMLP
    manifest: Manifest
    path: Path
    device: torch.device  # where the weights live; inputs go there


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_versions(model_dir: Path) -> list[int]:
    """Published versions of one model, ascending; temporary folders are never listed."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def scan_repository(root: Path) -> dict[str, list[int]]:
    """{model name: [versions]} for every model folder with at least one published version."""
    if not root.is_dir():
        return {}
    found = {p.name: list_versions(p) for p in sorted(root.iterdir()) if p.is_dir()}
    return {name: versions for name, versions in found.items() if versions}


def save_artifact(
    root: Path,
    model: DropoutMLP,
    manifest: Manifest,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Publish `model` as the next version of `manifest.name` under `root`; return its folder.

    Everything is written to a temporary folder beside the versions and renamed into place, so
    a reader sees either the whole version or nothing.
    """
    model_dir = root / manifest.name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(staging / WEIGHTS_FILE))
        manifest.weights_sha256 = sha256_file(staging / WEIGHTS_FILE)
        for name, content in (extra_files or {}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(content)
        while True:
            manifest.version = (list_versions(model_dir) or [0])[-1] + 1
            write_json(staging / MANIFEST_FILE, manifest.to_dict())
            target = model_dir / str(manifest.version)
            try:
                os.rename(staging, target)  # atomic; fails if another writer took this version
                return target
            except OSError:
                if not target.exists():
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(path: Path, data: object) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_manifest(path: Path) -> Manifest:
    try:
        return Manifest.from_dict(json.loads((path / MANIFEST_FILE).read_text()))
    except FileNotFoundError as e:
        raise ArtifactError(f"{path}: no {MANIFEST_FILE}") from e
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: invalid {MANIFEST_FILE}: {e}") from e


def load_artifact(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the network from the manifest, verify and load the weights, switch to eval mode."""
    manifest = read_manifest(path)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ArtifactError(f"{path}: no {WEIGHTS_FILE}")
    actual = sha256_file(weights_path)
    if actual != manifest.weights_sha256:
        raise ArtifactError(
            f"{weights_path}: sha256 {actual} does not match the manifest's "
            f"{manifest.weights_sha256}; refusing to load a modified weights file"
        )
    model = DropoutMLP(manifest.spec, manifest.normalization)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except RuntimeError as e:
        raise ArtifactError(f"{weights_path}: weights do not fit the manifest's architecture: {e}") from e
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(model, manifest, path, torch.device(device))
