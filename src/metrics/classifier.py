"""The domain classifiers that stand in for Inception: one compact CNN per data set, pinned.

FID and Inception Score need Inception-v3 weights from the internet; on MNIST-like data the
published practice (TF-GAN's MNIST score and Frechet distance) is a small classifier trained on
the real training split, and one *fixed* network: figures from two trainings of the same recipe
are not comparable. So the project ships one trained classifier per data set as package data
(``src/metrics/weights/<name>.pt``) with its SHA-256 pinned below; every metric loads and
verifies it, and no run trains one.

    python -m src.metrics.classifier                      # verify the pinned classifiers, measure their test accuracy
    python -m src.metrics.classifier check mnist --root /scratch/data
    python -m src.metrics.classifier train mnist --output research/mnist_8ep.pt --epochs 8

``train`` is for research on other recipes: it writes where you say (never over the pinned files,
nor over an existing file without ``--force``), and ``callbacks.sample_quality.classifier=PATH``
or ``src.evaluate classifier=PATH`` scores with it. A classifier file holds its data set, recipe
and test accuracy beside the weights. Its penultimate layer is the feature space of FID, KID,
precision/recall and density/coverage; its softmax gives the classifier score, the
predicted-class entropy and the conditional accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from src.data.loaders import to_model_range
from src.data.provision import DATASETS, check_data, dataset_class
from src.errors import ConfigError

log = logging.getLogger(__name__)

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


def load_split(name: str, root: str | os.PathLike, train: bool, key: str = "the data folder") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 1, 28, 28), int64 labels) of one split, read by torchvision from the raw IDX
    files after training's checks of them (``check_data``); ``key`` names the data folder's setting."""
    check_data(name, root, key)
    dataset = dataset_class(name)(str(root), train=train)
    return dataset.data.unsqueeze(1), dataset.targets


def measure_accuracy(model: DomainClassifier, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(to_model_range(images_u8[start : start + batch_size]))
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(len(labels), 1)


def fit_classifier(name: str, root: str | os.PathLike, recipe: Recipe = Recipe()) -> tuple[DomainClassifier, float, float]:
    """Train on the training split; return (model in eval mode, test accuracy, seconds)."""
    # A private RNG state: the caller's random stream is left where it was.
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
    accuracy = measure_accuracy(model, test_x, test_y)
    return model.eval(), accuracy, time.perf_counter() - started


def save_classifier(model: DomainClassifier, name: str, recipe: Recipe, accuracy: float, path: Path) -> str:
    """Write a classifier file atomically (no half-written file on failure); return its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": FORMAT, "data": name, "recipe": recipe.as_dict(), "test_accuracy": accuracy, "state_dict": model.state_dict()}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return file_sha256(path)


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


def train_to(name: str, root: str | os.PathLike, output: Path, recipe: Recipe, force: bool = False) -> dict:
    """The ``train`` command: fit a classifier and write it to ``output`` (never a pinned file)."""
    output = Path(output)
    pinned = {pinned_path(n).resolve() for n in DATASETS}
    if output.resolve() in pinned:
        raise ClassifierError(
            f"{output} is a pinned classifier, which training never replaces: write elsewhere (--output PATH); "
            "to re-pin, copy the new file there and update PINNED_SHA256 in src/metrics/classifier.py"
        )
    from src.outputs import check_output_files  # here: it imports Lightning, which the check command does without

    check_output_files([output], "--output", temporary_suffix=".tmp")  # what save_classifier writes, before minutes of training
    if output.exists() and not force:
        raise ClassifierError(f"{output} exists: choose another --output, or add --force to replace it")
    if output.exists() and not output.is_file():
        raise ClassifierError(f"--output {output} is not a file")
    check_data(name, root, "--root")  # and what it reads
    model, accuracy, seconds = fit_classifier(name, root, recipe)
    digest = save_classifier(model, name, recipe, accuracy, output)
    return {"data": name, "output": str(output), "sha256": digest, "test_accuracy": accuracy, "train_seconds": round(seconds, 1)}


def check(name: str, root: str | os.PathLike, path: str | os.PathLike | None = None) -> dict:
    """The ``check`` command: load (and verify) a classifier and measure its test accuracy on ``root``'s data."""
    model, info = load_classifier(name, path)
    test_x, test_y = load_split(name, root, train=False, key="--root")
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
    check_parser.add_argument("--root", default="data", help="the data folder (default: data)")
    check_parser.add_argument("--weights", default=None, help="a classifier file to check instead of the pinned one (one NAME)")
    train_parser = commands.add_parser("train", help="train a classifier with the pinned recipe (or another) and write it to --output")
    train_parser.add_argument("name", metavar="NAME", help=f"the data set, one of {', '.join(DATASETS)}")
    train_parser.add_argument("--output", required=True, help="the classifier file to write (never a pinned one)")
    train_parser.add_argument("--root", default="data", help="the data folder (default: data)")
    train_parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    for key, default in Recipe().as_dict().items():
        if key != "channels":
            train_parser.add_argument(f"--{key.replace('_', '-')}", type=type(default), default=default, help=f"recipe (default: {default})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors():
        if args.command == "train":
            if args.name not in DATASETS:
                raise ConfigError(f"NAME {args.name!r} is not one of {', '.join(DATASETS)}")
            recipe = Recipe(feature_dim=args.feature_dim, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
            result = train_to(args.name, args.root, Path(args.output), recipe, args.force)
            print(
                f"{result['data']}: test accuracy {result['test_accuracy']:.4f} after {result['train_seconds']:.0f} s, wrote {result['output']} (SHA-256 {result['sha256']})"
            )
            return 0
        names = getattr(args, "names", None) or list(DATASETS)
        unknown = [n for n in names if n not in DATASETS]
        if unknown:
            raise ConfigError(f"NAME {unknown[0]!r} is not one of {', '.join(DATASETS)}")
        weights = getattr(args, "weights", None)
        if weights is not None and len(names) != 1:
            raise ConfigError("--weights checks one classifier file: name its data set, e.g. `check mnist --weights PATH`")
        for name in names:
            result = check(name, getattr(args, "root", "data"), weights)
            print(
                f"{name}: {result['classifier']} classifier, SHA-256 {result['sha256'][:12]}... verified, test accuracy {result['test_accuracy']:.4f} (recorded {result['recorded_test_accuracy']:.4f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
