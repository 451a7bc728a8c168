"""Train and check the domain classifiers of the sample-quality metrics (``src/metrics/extractor.py``).

    python -m src.metrics.classifier                      # verify the pinned classifiers, measure their test accuracy
    python -m src.metrics.classifier check mnist --data-dir /scratch/data
    python -m src.metrics.classifier train mnist --output research/mnist_8ep.pt --epochs 8

``train`` is for research on other recipes: it writes where you say (never over the pinned files,
nor over an existing file without ``--force``), and ``callbacks.sample_quality.classifier=PATH``
or ``src.evaluate classifier=PATH`` scores with it. A classifier file holds its data set, recipe
and test accuracy beside the weights.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from src import imports_done
from src.data.loaders import to_model_range
from src.data.provision import DATASETS, load_split
from src.files import atomic_write
from src.metrics.extractor import FORMAT, PINNED_RECIPE, DomainClassifier, Recipe, file_sha256, load_classifier
from src.preflight.commands import check_classifier_check, check_classifier_train

log = logging.getLogger(__name__)


def measure_accuracy(model: DomainClassifier, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(to_model_range(images_u8[start : start + batch_size]))
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(len(labels), 1)


def fit_classifier(name: str, data_dir: str | os.PathLike, recipe: Recipe = PINNED_RECIPE) -> tuple[DomainClassifier, float, float]:
    """Train on ``name``'s training split; return (model in eval mode, test accuracy, seconds)."""
    started = time.perf_counter()
    model = train_classifier(*load_split(name, data_dir, train=True), recipe, name)
    accuracy = measure_accuracy(model, *load_split(name, data_dir, train=False))
    return model, accuracy, time.perf_counter() - started


def train_classifier(images_u8: torch.Tensor, labels: torch.Tensor, recipe: Recipe = PINNED_RECIPE, name: str = "") -> DomainClassifier:
    """A classifier trained with ``recipe`` on these uint8 images (N, 1, 28, 28), in eval mode.

    Its own RNG state: the caller's random stream is left where it was."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator().manual_seed(recipe.seed)
        torch.manual_seed(recipe.seed)  # initial weights and dropout
        model = DomainClassifier(recipe.channels, recipe.feature_dim)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
        steps_per_epoch = math.ceil(len(labels) / recipe.batch_size)
        # One-cycle schedule: the few epochs this budget allows reach the accuracy of many more at a fixed rate.
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
        for epoch in range(recipe.epochs):
            model.train()
            order = torch.randperm(len(labels), generator=generator)
            for index in order.split(recipe.batch_size):
                images = to_model_range(images_u8[index])
                # A one-pixel random shift: cheap augmentation that lifts test accuracy by a few tenths.
                shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
                images = torch.roll(images, shifts=shift, dims=(2, 3))
                loss = F.cross_entropy(model(images), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            log.info("classifier %s: epoch %d/%d, last batch loss %.4f", name, epoch + 1, recipe.epochs, float(loss.detach()))
    return model.eval()


def save_classifier(model: DomainClassifier, name: str, recipe: Recipe, accuracy: float, path: Path) -> str:
    """Write a classifier file atomically (no half-written file on failure); return its SHA-256."""
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "data": name, "recipe": recipe.as_dict(), "test_accuracy": accuracy, "state_dict": model.state_dict()}, f)
    return file_sha256(path)


def train_to(name: str, data_dir: str | os.PathLike, output: Path, recipe: Recipe, force: bool = False) -> dict:
    """The ``train`` command: fit a classifier and write it to ``output`` (never a pinned file)."""
    output = Path(output)
    check_classifier_train(name, output, force, str(data_dir))
    model, accuracy, seconds = fit_classifier(name, data_dir, recipe)
    digest = save_classifier(model, name, recipe, accuracy, output)
    return {"data": name, "output": str(output), "sha256": digest, "test_accuracy": accuracy, "train_seconds": round(seconds, 1)}


def check(name: str, data_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> dict:
    """The ``check`` command: load (and verify) a classifier and measure its test accuracy on ``data_dir``'s data."""
    model, info = load_classifier(name, path)
    test_x, test_y = load_split(name, data_dir, train=False, key="--data-dir")
    return {
        "data": name,
        "classifier": info["classifier"],
        "sha256": info["sha256"],
        "recorded_test_accuracy": info["test_accuracy"],
        "test_accuracy": measure_accuracy(model, test_x, test_y),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from src.errors import user_errors

    parser = argparse.ArgumentParser(description="Verify the pinned classifiers of the sample-quality metrics, or train one for research.")
    commands = parser.add_subparsers(dest="command")
    check_parser = commands.add_parser("check", help="verify a classifier and measure its test accuracy (the default command)")
    check_parser.add_argument("names", nargs="*", metavar="NAME", help=f"data sets, of {', '.join(DATASETS)} (default: both)")
    check_parser.add_argument("--data-dir", default="data", help="the data folder (default: data)")
    check_parser.add_argument("--weights", default=None, help="a classifier file to check instead of the pinned one (one NAME)")
    train_parser = commands.add_parser("train", help="train a classifier with the pinned recipe (or another) and write it to --output")
    train_parser.add_argument("name", metavar="NAME", help=f"the data set, one of {', '.join(DATASETS)}")
    train_parser.add_argument("--output", required=True, help="the classifier file to write (never a pinned one)")
    train_parser.add_argument("--data-dir", default="data", help="the data folder (default: data)")
    train_parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    for key, default in Recipe().as_dict().items():
        if key != "channels":
            train_parser.add_argument(f"--{key.replace('_', '-')}", type=type(default), default=default, help=f"recipe (default: {default})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors():
        if args.command == "train":
            recipe = Recipe(feature_dim=args.feature_dim, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
            result = train_to(args.name, args.data_dir, Path(args.output), recipe, args.force)
            print(
                f"{result['data']}: test accuracy {result['test_accuracy']:.4f} after {result['train_seconds']:.0f} s, wrote {result['output']} (SHA-256 {result['sha256']})"
            )
            return 0
        names = getattr(args, "names", None) or list(DATASETS)
        weights = getattr(args, "weights", None)
        check_classifier_check(names, weights)
        for name in names:
            result = check(name, getattr(args, "data_dir", "data"), weights)
            print(
                f"{name}: {result['classifier']} classifier, SHA-256 {result['sha256'][:12]}... verified, test accuracy {result['test_accuracy']:.4f} (recorded {result['recorded_test_accuracy']:.4f})"
            )
    return 0


if __name__ == "__main__":
    imports_done()
    sys.exit(main())
