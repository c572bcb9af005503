"""One training run end to end: data -> train -> evaluate -> calibrate -> artifact."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import models
from models.artifact import save_artifact
from models.network import DropoutMLP
from models.spec import Calibration, Manifest, Normalization
from training import distributed
from training.card import card_files
from training.datasets import DATASETS, load_dataset
from training.loop import train
from training.recipes import Recipe
from training.report import evaluation_report, headline_metrics

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAMES = {"mnist": "mnist-mlp", "fashion-mnist": "fashion-mlp"}


@dataclass
class JobConfig:
    dataset: str = "mnist"
    recipe: Recipe | None = None
    seed: int = 0
    artifacts: Path = Path("artifacts")
    name: str | None = None
    data_dir: Path | None = None
    device: str = "cpu"
    train_limit: int | None = None  # first N training images only (quick runs, tests)
    mc_samples: int = 100
    progress: bool = True
    resume: bool = False  # continue from the newest checkpoint of this run, if any
    checkpoint_dir: Path | None = None  # default: <artifacts>/.checkpoints/<name> (never a version)


def to_tensors(x: np.ndarray, y: np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 28, 28) -> float (N, 784) in [0, 1]; labels -> int64."""
    pixels = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)
    return pixels.to(device), torch.from_numpy(y.astype(np.int64)).to(device)


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def run(config: JobConfig) -> Path | None:
    """Train, evaluate and publish one artifact; returns its folder (None on ranks other than 0)."""
    context = distributed.setup(config.device)
    try:
        return _run(config, context)
    finally:
        distributed.teardown(context)


def _run(config: JobConfig, context: distributed.Context) -> Path | None:
    assert config.recipe is not None, "a recipe is required"
    recipe = config.recipe
    device = context.device
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    with distributed.main_first(context):  # one rank fetches and caches, the others then read
        splits = load_dataset(config.dataset, config.data_dir)
    x_all, y_all = to_tensors(splits.x_train, splits.y_train, device)
    x_train, y_train = x_all[: -recipe.validation_size], y_all[: -recipe.validation_size]
    x_val, y_val = x_all[-recipe.validation_size :], y_all[-recipe.validation_size :]
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    x_test, y_test = to_tensors(splits.x_test, splits.y_test, device)

    mean, std = x_train.mean().item(), x_train.std().item()
    normalization = Normalization(mean=round(mean, 4), std=round(std, 4))
    model = DropoutMLP(recipe.spec, normalization).to(device)

    started = time.perf_counter()
    progress = config.progress and context.is_main
    checkpoints = None if context.distributed else checkpoint_folder(config)
    history = train(
        model, recipe, x_train, y_train, x_val, y_val, config.seed, progress, checkpoints, config.resume
    )
    train_seconds = time.perf_counter() - started
    if not context.is_main:
        return None  # every rank holds the same weights; rank 0 evaluates and publishes

    class_names = list(DATASETS[config.dataset].class_names)
    report = evaluation_report(
        model, config.dataset, x_val, y_val, x_test, y_test, class_names, config.mc_samples, config.seed
    )
    threshold = report.ood_threshold
    metrics = {
        "dataset": config.dataset,
        "recipe": recipe.name,
        "train_seconds": train_seconds,
        "threads": torch.get_num_threads(),
        "train_size": len(x_train),
        "validation_size": len(x_val),
        "history": [h.to_dict() for h in history],
        **report.metrics,
    }
    headline = headline_metrics(metrics)
    manifest = Manifest(
        name=config.name or DEFAULT_MODEL_NAMES[config.dataset],
        spec=recipe.spec,
        normalization=normalization,
        class_names=class_names,
        calibration=Calibration(
            ood_threshold=threshold,
            ood_quantile=0.95,
            samples=config.mc_samples,
            temperature=report.fitted.temperature,
        ),
        conformal=report.fitted.conformal,
        abstention=report.fitted.abstention,
        provenance={
            "dataset": config.dataset,
            "recipe": recipe.to_dict(),
            "seed": config.seed,
            "epochs": recipe.epochs,
            "device": config.device,
            "world_size": context.world_size,
            "train_limit": config.train_limit,
            "created_unix": int(time.time()),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "dropserve": getattr(models, "__version__", None) or _package_version(),
            },
            "git_commit": git_commit(),
        },
        metrics=headline,
    )
    path = save_artifact(
        config.artifacts,
        model.cpu(),
        manifest,
        extra_files={
            "metrics.json": (json.dumps(metrics, indent=2) + "\n").encode(),
            **card_files(manifest.to_dict(), metrics, report.rotation_thumbnails),
        },
    )
    log.info("wrote %s", path)
    if checkpoints is not None:
        shutil.rmtree(checkpoints, ignore_errors=True)  # published: nothing left to resume
    return path


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dropserve")
    except PackageNotFoundError:
        return None


def checkpoint_folder(config: JobConfig) -> Path:
    """Where this run keeps its per-epoch checkpoint: beside the versions, in a hidden folder the
    model repository never lists, so that a Job restarted on the same volume can resume."""
    name = config.name or DEFAULT_MODEL_NAMES[config.dataset]
    return config.checkpoint_dir or config.artifacts / ".checkpoints" / name
