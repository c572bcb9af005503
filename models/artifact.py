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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.network import DropoutMLP, Weights
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
    weights: Weights  # the model's tensors, read out once for inference


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
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # AttributeError: not a JSON object
        raise ArtifactError(f"{path}: invalid {MANIFEST_FILE}: {type(e).__name__}: {str(e)[:200]}") from e


def load_artifact(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the network from the manifest, verify and load the weights, switch to eval mode.

    Every failure is an ArtifactError naming the folder and what is wrong (a corrupt safetensors
    header behind a matching sha256, weights of the wrong dtype or shape, a manifest that does not
    parse, a folder whose name disagrees with its manifest, an unreadable file), so that a caller
    holding several versions refuses this one and keeps the others."""
    try:
        return _load_artifact(path, device)
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"{path}: cannot be loaded: {type(e).__name__}: {str(e)[:200]}") from e


def _load_artifact(path: Path, device: torch.device | str) -> LoadedModel:
    manifest = read_manifest(path)
    check_folder(path, manifest)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ArtifactError(f"{path}: no {WEIGHTS_FILE}")
    actual = sha256_file(weights_path)
    if actual != manifest.weights_sha256:
        raise ArtifactError(
            f"{weights_path}: sha256 {actual} does not match the manifest's "
            f"{manifest.weights_sha256}; refusing to load a modified weights file"
        )
    try:
        weights = load_file(str(weights_path))
    except SafetensorError as e:
        raise ArtifactError(f"{weights_path}: not a readable safetensors file ({str(e)[:200]})") from e
    check_weights(weights_path, weights, manifest)
    model = DropoutMLP(manifest.spec, manifest.normalization)
    model.load_state_dict(weights)
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(model, manifest, path, torch.device(device), Weights.of(model))


def check_folder(path: Path, manifest: Manifest) -> None:
    """A published folder <name>/<version>/ must be the version its manifest says: a folder copied
    to 5/ whose manifest says 1 would answer as version 1 while served as 5."""
    if not path.name.isdigit():
        return  # not inside a repository (a staging folder, a file handed over by path)
    if manifest.version != int(path.name) or manifest.name != path.parent.name:
        raise ArtifactError(
            f"{path}: the folder is {path.parent.name}/{path.name} but its {MANIFEST_FILE} says "
            f"{manifest.name[:100]}/{manifest.version}; publish a copy with save_artifact (it numbers "
            "the version) rather than copying a version folder"
        )


def check_weights(weights_path: Path, weights: Mapping[str, torch.Tensor], manifest: Manifest) -> None:
    """The tensors must be exactly the manifest's network's: names, float32, shapes, finite. The
    expected shapes come from a network built on the meta device, which allocates nothing, so a
    manifest declaring huge layers costs no memory before it is refused."""
    with torch.device("meta"):
        expected = DropoutMLP(manifest.spec, manifest.normalization).state_dict()
    problems = [f"missing {name}" for name in expected if name not in weights]
    problems += [f"unexpected {name}" for name in weights if name not in expected]
    for name, want in expected.items():
        got = weights.get(name)
        if got is None:
            continue
        if got.dtype != want.dtype:
            problems.append(f"{name} is {got.dtype}, not {want.dtype}")
        elif got.shape != want.shape:
            problems.append(f"{name} has shape {tuple(got.shape)}, not {tuple(want.shape)}")
        elif not bool(torch.isfinite(got).all()):
            problems.append(f"{name} holds NaN or infinite values")
    if problems:
        listed = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
        raise ArtifactError(f"{weights_path}: weights do not fit the manifest's architecture: {listed}")
