"""The training loop over in-memory tensors: no per-sample Dataset, one index shuffle per epoch."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from models.network import DropoutMLP
from training import distributed
from training.checkpoint import Trainer, fingerprint, latest_checkpoint, load_checkpoint, save_checkpoint
from training.recipes import Recipe

log = logging.getLogger(__name__)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def make_optimizer(model: DropoutMLP, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.learning_rate,
        momentum=recipe.momentum,
        nesterov=recipe.momentum > 0,
        weight_decay=recipe.weight_decay,
    )


def l1_penalty(model: DropoutMLP) -> Tensor:
    """Sum of |w| over every weight matrix (biases excluded)."""
    return torch.stack([layer.weight.abs().sum() for layer in (*model.hidden, model.output)]).sum()


@torch.no_grad()
def evaluate_loss(model: DropoutMLP, x: Tensor, y: Tensor, batch: int = 4096) -> tuple[float, float]:
    """Eval-mode mean cross-entropy and accuracy."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), batch):
        logits = model(x[start : start + batch])
        loss += F.cross_entropy(logits, y[start : start + batch], reduction="sum").item()
        correct += (logits.argmax(-1) == y[start : start + batch]).sum().item()
    model.train(was_training)
    return loss / max(1, len(x)), correct / max(1, len(x))


def train(
    model: DropoutMLP,
    recipe: Recipe,
    x_train: Tensor,  # (N, 784) float in [0, 1]
    y_train: Tensor,  # (N,) int64
    x_val: Tensor,
    y_val: Tensor,
    seed: int,
    progress: bool = True,
    checkpoints: Path | None = None,
    resume: bool = False,
) -> list[EpochStats]:
    """Train in place; the same seed, data and thread count give the same weights.

    Under torchrun each rank takes its shard of every epoch's shuffle and DDP averages gradients.
    """
    net = distributed.wrap(model)
    optimizer = make_optimizer(model, recipe)
    shard_size = len(distributed.shard(torch.arange(len(x_train))))
    steps_per_epoch = math.ceil(shard_size / recipe.batch_size)
    scheduler = None
    if recipe.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(seed)
    history: list[EpochStats] = []
    # With `checkpoints`, the state after each epoch is saved there (training/checkpoint.py); with
    # `resume` too, training continues from the newest one and ends with the same weights.
    trainer = Trainer(model, optimizer, scheduler, shuffle)
    run = fingerprint(recipe.to_dict(), seed, x_train, y_train, x_val)
    first_epoch = 1
    found = latest_checkpoint(checkpoints) if checkpoints is not None and resume else None
    if found is not None:
        done, saved = load_checkpoint(found, trainer, run)
        history, first_epoch = [EpochStats(**stats) for stats in saved], done + 1
        log.info("resuming from %s: %d of %d epochs done", found, done, recipe.epochs)
    for epoch in range(first_epoch, recipe.epochs + 1):
        model.train()
        order = distributed.shard(torch.randperm(len(x_train), generator=shuffle)).to(x_train.device)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{recipe.epochs}", disable=not progress)
        for step in bar:
            index = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            xb, yb = x_train[index], y_train[index]
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)  # the data term: what the history reports
            objective = loss + recipe.l1 * l1_penalty(model) if recipe.l1 else loss
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            model.apply_max_norm()
            if scheduler is not None:
                scheduler.step()
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(-1) == yb).sum().item()
            if step % 50 == 0 or step == steps_per_epoch - 1:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        val_loss, val_accuracy = evaluate_loss(model, x_val, y_val)
        stats = EpochStats(epoch, loss_sum / seen, correct / seen, val_loss, val_accuracy)
        history.append(stats)
        if checkpoints is not None:
            save_checkpoint(checkpoints, epoch, trainer, [h.to_dict() for h in history], run)
        if progress:
            tqdm.write(
                f"epoch {epoch}: train loss {stats.train_loss:.4f} acc {stats.train_accuracy:.4f}"
                f" | val loss {val_loss:.4f} acc {val_accuracy:.4f}"
            )
    model.eval()
    return history
