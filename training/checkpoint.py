"""Crash-safe training: the whole training state at the end of each epoch, so that `--resume`
continues where a killed run stopped and ends with the same weights, bit for bit, as a run that
was never interrupted.

A checkpoint is a folder `epoch-<N>/` holding `state.safetensors` (the weights, the optimizer's
tensors, the random generators' states) and `state.json` (everything else: epoch, history, the
optimizer's hyper-parameters, the learning-rate schedule, and a fingerprint of the run). No pickle:
torch's optimizer state is flattened into named tensors plus JSON. It is written into a hidden
temporary folder, then renamed: a run killed while writing leaves the previous checkpoint whole.
Only the newest is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

TENSORS_FILE = "state.safetensors"
JSON_FILE = "state.json"
PREFIX = "epoch-"


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed from: unreadable, or made by a different run."""


@dataclass
class Trainer:
    """What a checkpoint captures and restores: the objects the training loop mutates."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffle: torch.Generator  # the epoch order; dropout masks come from torch's default generator


def fingerprint(recipe: dict[str, Any], seed: int, x_train: Tensor, y_train: Tensor, x_val: Tensor) -> str:
    """Identifies a run: a checkpoint is resumed only by the run that wrote it."""
    digest = hashlib.sha256(json.dumps([recipe, seed, list(x_train.shape), list(x_val.shape)]).encode())
    digest.update(y_train.cpu().numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(folder: Path, epoch: int, trainer: Trainer, history: list[dict], run: str) -> Path:
    """Write the state after `epoch` epochs as `folder/epoch-<epoch>/`, atomically; drop older ones."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model.{name}": value.detach().cpu().contiguous()
        for name, value in trainer.model.state_dict().items()
    }
    optimizer_tensors, optimizer_json = _flatten_optimizer(trainer.optimizer.state_dict())
    tensors.update(optimizer_tensors)
    tensors["rng.shuffle"] = trainer.shuffle.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    state = {
        "epoch": epoch,
        "run": run,
        "history": history,
        "optimizer": optimizer_json,
        "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
    }
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{PREFIX}", dir=folder))
    try:
        save_file(tensors, str(staging / TENSORS_FILE))
        (staging / JSON_FILE).write_text(json.dumps(state, indent=1) + "\n")
        for name in (TENSORS_FILE, JSON_FILE):
            with (staging / name).open("rb") as f:
                os.fsync(f.fileno())  # on disk before the rename makes it the newest
        target = folder / f"{PREFIX}{epoch}"
        shutil.rmtree(target, ignore_errors=True)  # a rerun of this epoch, not resumed
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in folder.iterdir():
        if old != target and (old.name.startswith(PREFIX) or old.name.startswith(f".tmp-{PREFIX}")):
            shutil.rmtree(old, ignore_errors=True)  # older epochs, and what a killed write left
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder` (temporary folders are never complete)."""
    if not folder.is_dir():
        return None
    epochs = [
        int(p.name.removeprefix(PREFIX))
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name.removeprefix(PREFIX).isdigit()
    ]
    return folder / f"{PREFIX}{max(epochs)}" if epochs else None


def load_checkpoint(path: Path, trainer: Trainer, run: str) -> tuple[int, list[dict]]:
    """Restore `trainer` from the checkpoint at `path`; returns (epochs done, history so far)."""
    try:
        state = json.loads((path / JSON_FILE).read_text())
        tensors = load_file(str(path / TENSORS_FILE))
    except Exception as e:  # a damaged file: say which, never resume from half a state
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if state.get("run") != run:
        raise CheckpointError(
            f"{path} was written by another run (other recipe, seed or data); delete it, or train "
            "without --resume"
        )
    model = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
    trainer.model.load_state_dict(model)
    trainer.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    if trainer.scheduler is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.shuffle.set_state(tensors["rng.shuffle"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(state["epoch"]), list(state["history"])


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """torch's optimizer state_dict -> named tensors (`optimizer.<param>.<key>`) and the rest as JSON."""
    tensors: dict[str, Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for param, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{param}.{key}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(param), {})[key] = value  # e.g. SGD's momentum_buffer before a step: None
    return tensors, {"state": rest, "param_groups": state_dict["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(p): dict(values) for p, values in saved["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            param, key = name.removeprefix("optimizer.").split(".", 1)
            state.setdefault(int(param), {})[key] = value
    return {"state": state, "param_groups": saved["param_groups"]}
