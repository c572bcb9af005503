"""`python -m training`: train a dropout MLP and publish it to the model repository.

`python -m training study [--quick]` runs the dropout study instead (training/study.py)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from training import study
from training.datasets import DATASETS
from training.job import JobConfig, run
from training.recipes import RECIPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="override the learning rate")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="model repository")
    parser.add_argument("--name", help="model name (default: mnist-mlp / fashion-mlp)")
    parser.add_argument("--data-dir", type=Path, help="a folder with the four IDX files, tried first")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--train-limit", type=int, help="use only the first N training images")
    parser.add_argument("--mc-samples", type=int, default=100, help="MC passes for evaluation")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last epoch checkpoint of an interrupted run with the same options",
    )
    parser.add_argument(
        "--checkpoint-dir", type=Path, help="per-epoch checkpoints (default: ARTIFACTS/.checkpoints/NAME)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["study"]:
        return study.main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    recipe = RECIPES[args.recipe].with_overrides(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate
    )
    path = run(
        JobConfig(
            dataset=args.dataset,
            recipe=recipe,
            seed=args.seed,
            artifacts=args.artifacts,
            name=args.name,
            data_dir=args.data_dir,
            device=args.device,
            train_limit=args.train_limit,
            mc_samples=args.mc_samples,
            progress=not args.no_progress,
            resume=args.resume,
            checkpoint_dir=args.checkpoint_dir,
        )
    )
    if path is None:
        return 0  # a torchrun rank other than 0: rank 0 publishes
    headline = json.loads((path / "model.json").read_text())["metrics"]
    print(f"artifact: {path}")
    print(json.dumps(headline, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
