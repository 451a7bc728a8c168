"""The feature extractor of the sample-quality metrics: one compact CNN per data set, pinned.

FID and Inception Score need Inception-v3 weights from the internet; on MNIST-like data the
published practice (TF-GAN's MNIST score and Frechet distance) is a small classifier trained on
the real training split, and one *fixed* network: figures from two trainings of the same recipe
are not comparable. So the project ships one trained classifier per data set as package data
(``src/metrics/weights/<name>.pt``) with its SHA-256 pinned below; every metric loads and
verifies it, and no run trains one (``python -m src.metrics.classifier`` trains and checks them).

    model, info = load_classifier("mnist")   # the pinned one, verified
    features = model.features(images)        # images in [-1, 1], (N, 1, 28, 28)

Its penultimate layer is the feature space of FID, KID, precision/recall and density/coverage;
its softmax gives the classifier score, the predicted-class entropy and the conditional accuracy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from src.data.provision import dataset_class
from src.errors import ConfigError

# The pinned classifiers, trained once with ``Recipe()`` (``train NAME --output ...``); their test
# accuracy is what ``python -m src.metrics.classifier`` (``make classifiers``) measures (docs/results.md).
PINNED_SHA256 = {
    "mnist": "ab4bcf85927dde33f1721446b7fb168b951562f88ebb1c6e15ee2a13673a7ca1",
    "fashion_mnist": "3086538f61e95e89cd3c10cddc4ccbf12affa925ac62d17e9992c397dc22005d",
}
FORMAT = 1  # of a classifier file, a dict of these keys:
FILE_KEYS = ("format", "data", "recipe", "test_accuracy", "state_dict")


def is_classifier_file(contents: object) -> bool:
    """Whether what ``torch.load`` read is a classifier file (pinned, or written by ``train``): the
    checkpoint readers name it instead of calling it a damaged training checkpoint."""
    return isinstance(contents, dict) and all(key in contents for key in FILE_KEYS)


class ClassifierError(ConfigError):
    """A classifier file is missing, altered, unreadable or for another data set."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights (the pinned ones: the defaults)."""

    channels: tuple[int, ...] = (32, 64)
    feature_dim: int = 128
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    def as_dict(self) -> dict:
        return asdict(self) | {"channels": list(self.channels)}


PINNED_RECIPE = Recipe()  # the recipe of the pinned classifiers


class DomainClassifier(nn.Module):
    """Images in [-1, 1], shape (N, 1, 28, 28) -> class logits; ``features`` is the penultimate layer.

    Stride-2 Conv-BN-ReLU blocks (28 -> 14 -> 7), then one hidden Linear layer whose ReLU output
    (``feature_dim`` values) is the metrics' feature space. Strided convolutions rather than
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


def pinned_path(name: str) -> Path:
    """Where the pinned classifier of ``name`` lies: package data, in a checkout and in an installed copy."""
    dataset_class(name)  # fail early on an unknown name
    return Path(str(resources.files("src.metrics") / "weights" / f"{name}.pt"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_classifier(path: Path, name: str) -> tuple[DomainClassifier, dict]:
    """A classifier file of data set ``name`` (eval mode, gradient-free) and its info (data, recipe, test accuracy)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(saved, dict) and "pytorch-lightning_version" in saved:
            raise ClassifierError(
                f"{path} is a training checkpoint, not a metrics classifier: give it as ckpt_path=; classifier= takes a file that "
                f"`python -m src.metrics.classifier train {name} --output PATH` writes (or leave it out for the pinned one)"
            )
        recipe = Recipe(**saved["recipe"])
        model = DomainClassifier(recipe.channels, recipe.feature_dim)
        model.load_state_dict(saved["state_dict"])
    except FileNotFoundError:
        raise ClassifierError(f"classifier file {path} does not exist") from None
    except ClassifierError:
        raise
    except Exception as err:  # truncated, not a classifier file, other shapes, ...
        raise ClassifierError(
            f"{path} is not a readable classifier file ({type(err).__name__}): train one with `python -m src.metrics.classifier train {name} --output PATH`"
        ) from None
    if saved.get("data") != name:
        raise ClassifierError(f"{path} is the classifier of {saved.get('data')}, not of {name}")
    info = {key: saved[key] for key in ("data", "recipe", "test_accuracy")}
    return model.eval().requires_grad_(False), info


def load_classifier(name: str, path: str | os.PathLike | None = None) -> tuple[DomainClassifier, dict]:
    """The pinned classifier of ``name`` (checked against its SHA-256), or the one in ``path``.

    The returned info holds ``classifier`` ("pinned" or the path) and ``sha256`` beside what the
    file records.
    """
    if path is not None:
        model, info = read_classifier(Path(path), name)
        return model, info | {"classifier": str(path), "sha256": file_sha256(Path(path))}
    weights = pinned_path(name)
    restore = "restore it with `git checkout -- src/metrics/weights/` in a checkout, or reinstall lightning-gan"
    if not weights.is_file():
        raise ClassifierError(f"the pinned {name} classifier {weights} is missing: {restore}")
    digest = file_sha256(weights)
    if digest != PINNED_SHA256[name]:
        raise ClassifierError(
            f"the pinned {name} classifier {weights} has been altered (SHA-256 {digest[:12]}..., pinned {PINNED_SHA256[name][:12]}...): {restore}"
        )
    model, info = read_classifier(weights, name)
    return model, info | {"classifier": "pinned", "sha256": digest}
