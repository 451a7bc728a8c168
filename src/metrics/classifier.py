"""The domain classifier that stands in for Inception: a compact CNN per data set, trained here.

FID and Inception Score need Inception-v3 weights from the internet; on MNIST-like data the
published practice (TF-GAN's MNIST score and Frechet distance) is a small classifier trained on
the real training split. Its penultimate layer is the feature space of FID/KID, its softmax
gives the classifier score, the predicted-class entropy and the conditional accuracy.

    python -m src.metrics.classifier                     # both data sets, cached under ./data
    python -m src.metrics.classifier --root /scratch/data mnist
    make classifiers

A trained classifier is cached as ``<root>/classifiers/<name>.pt`` beside a ``<name>.json``
holding the file's SHA-256, the SHA-256 of the training images it was fitted on, its recipe and
its test accuracy. Loading checks all three and retrains when the file is missing, altered, or
was fitted on other data or another recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from src.data.loaders import to_model_range
from src.data.provision import DATASETS, RAW_FILES, dataset_class, raw_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights; a cached classifier with another recipe is retrained."""

    channels: tuple[int, ...] = (32, 64)
    feature_dim: int = 128
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))


class DomainClassifier(nn.Module):
    """Images in [-1, 1], shape (N, 1, 28, 28) -> class logits; ``features`` is the penultimate layer.

    Stride-2 Conv-BN-ReLU blocks (28 -> 14 -> 7), then one hidden Linear layer whose ReLU output
    (``feature_dim`` values) is the FID/KID feature space. Strided convolutions rather than
    max-pooling: a quarter of the arithmetic, so it trains in minutes on two CPU cores.
    """

    def __init__(self, channels: Sequence[int] = (32, 64), feature_dim: int = 128, num_classes: int = 10, img_size: int = 28) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels, size = 1, img_size
        for out_channels in channels:
            blocks += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]
            in_channels, size = out_channels, (size + 1) // 2
        self.body = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(in_channels * size * size, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))
        self.num_features = feature_dim

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate layer as a torchmetrics feature extractor (FID/KID ``feature=``).

    Always in eval mode (torchmetrics may call ``train()`` on its children) and gradient-free.
    ``num_features`` spares torchmetrics its probe with a dummy image.
    """

    def __init__(self, classifier: DomainClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = classifier.num_features

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())


@dataclass
class CachedInfo:
    sha256: str
    train_data_sha256: str
    recipe: dict
    test_accuracy: float
    train_seconds: float
    torch_version: str = field(default_factory=lambda: torch.__version__)


def cache_paths(name: str, root: str | os.PathLike) -> tuple[Path, Path]:
    dataset_class(name)  # fail early on an unknown name
    folder = Path(root) / "classifiers"
    return folder / f"{name}.pt", folder / f"{name}.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_split(name: str, root: str | os.PathLike, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 1, 28, 28), int64 labels) of one split, read by torchvision from the raw IDX files."""
    dataset = dataset_class(name)(str(root), train=train)
    return dataset.data.unsqueeze(1), dataset.targets


def _accuracy(model: DomainClassifier, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(to_model_range(images_u8[start : start + batch_size]))
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(len(labels), 1)


def fit_classifier(name: str, root: str | os.PathLike, recipe: Recipe = Recipe()) -> tuple[DomainClassifier, float, float]:
    """Train on the training split; return (model in eval mode, test accuracy, seconds)."""
    # A private RNG state: training it in the middle of a GAN run must not shift that run's noise.
    with torch.random.fork_rng(devices=[]):
        return _fit(name, root, recipe)


def _fit(name: str, root: str | os.PathLike, recipe: Recipe) -> tuple[DomainClassifier, float, float]:
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)  # initial weights and dropout
    train_x, train_y = load_split(name, root, train=True)
    test_x, test_y = load_split(name, root, train=False)
    model = DomainClassifier(recipe.channels, recipe.feature_dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_y) / recipe.batch_size)
    # One-cycle schedule: the few epochs this budget allows reach the accuracy of many more at a fixed rate.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        for index in order.split(recipe.batch_size):
            images = to_model_range(train_x[index])
            # A one-pixel random shift: cheap augmentation that lifts test accuracy by a few tenths.
            shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
            images = torch.roll(images, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(images), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log.info("classifier %s: epoch %d/%d, last batch loss %.4f", name, epoch + 1, recipe.epochs, float(loss.detach()))
    accuracy = _accuracy(model, test_x, test_y)
    return model.eval(), accuracy, time.perf_counter() - started


def build_classifier(name: str, root: str | os.PathLike, recipe: Recipe = Recipe()) -> CachedInfo:
    """Train and cache the classifier of data set ``name`` under ``root``; return what was cached."""
    model, accuracy, seconds = fit_classifier(name, root, recipe)
    weights_path, info_path = cache_paths(name, root)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_path.with_suffix(".pt.tmp")
    torch.save(model.state_dict(), tmp)
    info = CachedInfo(
        sha256=file_sha256(tmp),
        train_data_sha256=file_sha256(raw_folder(name, root) / RAW_FILES["train_images"]),
        recipe=asdict(recipe) | {"channels": list(recipe.channels)},
        test_accuracy=accuracy,
        train_seconds=round(seconds, 1),
    )
    os.replace(tmp, weights_path)
    info_path.write_text(json.dumps(asdict(info), indent=2) + "\n")
    log.info("classifier %s: test accuracy %.4f after %.0f s, cached in %s", name, accuracy, seconds, weights_path)
    return info


def _stale_reason(name: str, root: str | os.PathLike, recipe: Recipe) -> str | None:
    weights_path, info_path = cache_paths(name, root)
    if not weights_path.is_file() or not info_path.is_file():
        return "not built yet"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return f"{info_path} is unreadable"
    if info.get("sha256") != file_sha256(weights_path):
        return f"{weights_path} does not match its recorded SHA-256"
    if info.get("recipe") != asdict(recipe) | {"channels": list(recipe.channels)}:
        return "the recipe changed"
    if info.get("train_data_sha256") != file_sha256(raw_folder(name, root) / RAW_FILES["train_images"]):
        return "the training images changed"
    return None


def load_classifier(name: str, root: str | os.PathLike, recipe: Recipe = Recipe(), build: bool = True) -> tuple[DomainClassifier, dict]:
    """The cached classifier of ``name`` (eval mode) and its info, (re)built first when needed.

    Runs started together on a fresh data folder (a parallel sweep) build it under a file lock:
    the first trains and caches the classifier, the others wait and then load it, instead of each
    training its own and writing the same files at once. A valid cache is read without the lock,
    so a read-only data folder works.
    """
    weights_path, info_path = cache_paths(name, root)
    reason = _stale_reason(name, root, recipe)
    if reason is not None:
        if not build:
            raise FileNotFoundError(f"no usable classifier for {name} under {root}: {reason}; run `make classifiers`")
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(weights_path.with_suffix(".lock")):
            reason = _stale_reason(name, root, recipe)  # again: another run may have built it meanwhile
            if reason is not None:
                log.info("training the %s classifier (%s): a few minutes on a CPU, once", name, reason)
                build_classifier(name, root, recipe)
    model = DomainClassifier(recipe.channels, recipe.feature_dim)
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval(), json.loads(info_path.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train (or check) the domain classifiers used by the sample-quality metrics.")
    parser.add_argument("names", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--root", default="data", help="the data folder (default: data)")
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--rebuild", action="store_true", help="retrain even if a valid cached classifier exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = Recipe(epochs=args.epochs)
    for name in args.names:
        if args.rebuild:
            build_classifier(name, args.root, recipe)
        _, info = load_classifier(name, args.root, recipe)
        print(f"{name}: test accuracy {info['test_accuracy']:.4f} ({info['train_seconds']:.0f} s to train), {cache_paths(name, args.root)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
