"""Sample-quality metrics in a domain classifier's feature space (see ``classifier.py``).

* ``fid`` / ``kid``: torchmetrics' Frechet and Kernel Inception Distances with the classifier's
  penultimate layer as the feature extractor (lower is better; 0 for identical sets).
* ``classifier_score``: the Inception Score with the classifier's softmax, exp E[KL(p(y|x) || p(y))]
  over all samples (TF-GAN's "MNIST score"; 1 to 10, higher is better).
* ``class_entropy``: the entropy in bits of the classes the classifier predicts for the samples
  (mode coverage: log2(10) = 3.32 when all ten classes are equally frequent).
* ``cond_acc``: for a conditional model, the share of samples classified as the label they were
  generated for.

Real-vs-real figures, the floor of FID/KID and the ceiling of the others for N samples:

    python -m src.metrics.quality --root data --num-samples 10000 mnist fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from src.data.loaders import to_model_range
from src.data.provision import DATASETS
from src.metrics.classifier import ClassifierFeatures, DomainClassifier, Recipe, load_classifier, load_split

METRIC_NAMES = ("fid", "kid", "classifier_score", "class_entropy", "cond_acc")


def class_metrics(logits: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Classifier score, predicted-class entropy (bits) and, given the asked labels, cond_acc."""
    log_probs = logits.double().log_softmax(dim=1)
    probs = log_probs.exp()
    marginal = probs.mean(dim=0)
    kl = (probs * (log_probs - marginal.clamp_min(1e-12).log())).sum(dim=1)
    counts = torch.bincount(logits.argmax(dim=1), minlength=logits.size(1)).double()
    share = counts[counts > 0] / counts.sum()
    metrics = {
        "classifier_score": float(kl.mean().exp()),
        "class_entropy": float(-(share * share.log2()).sum()),
    }
    if labels is not None:
        metrics["cond_acc"] = float((logits.argmax(dim=1) == labels.to(logits.device)).double().mean())
    return metrics


class QualityMetrics:
    """Scores generated images against a fixed set of real ones, all in one classifier's terms.

    The real images' features are extracted once (``reset_real_features=False``); each
    ``compute`` resets the fake side. KID draws random subsets: they come from a private,
    seeded generator state, so the figure is reproducible and the caller's RNG is untouched.
    """

    def __init__(
        self,
        classifier: DomainClassifier,
        real_images: torch.Tensor,
        batch_size: int = 1000,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        self.classifier = classifier.eval().requires_grad_(False)
        self.batch_size = batch_size
        self.seed = seed
        self.num_real = len(real_images)
        features = ClassifierFeatures(self.classifier)
        # sync_on_compute=False: under DDP only rank zero scores (src/metrics/callback.py); syncing
        # would wait forever for ranks that hold no samples.
        self.fid = FrechetInceptionDistance(feature=features, reset_real_features=False, sync_on_compute=False)
        with warnings.catch_warnings():
            # "will save all extracted features in buffer": 10,000 x 128 floats here, 5 MB.
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer", category=UserWarning)
            self.kid = KernelInceptionDistance(feature=features, subsets=kid_subsets, subset_size=min(kid_subset_size, self.num_real), reset_real_features=False, sync_on_compute=False)
        self.device = torch.device("cpu")
        for batch in self._batches(real_images):
            self.fid.update(batch, real=True)
            self.kid.update(batch, real=True)

    def to(self, device: torch.device | str) -> QualityMetrics:
        self.device = torch.device(device)
        self.classifier.to(self.device)
        self.fid.to(self.device)
        self.kid.to(self.device)
        return self

    def _batches(self, images: torch.Tensor):
        """Float batches in [-1, 1] on the metrics' device (uint8 input is converted like the data module does)."""
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device)
            yield to_model_range(batch) if batch.dtype == torch.uint8 else batch.float()

    @torch.no_grad()
    def compute(self, fake_images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """``fake_images``: (N, 1, 28, 28) in [-1, 1] (or uint8); ``labels``: the classes they were asked for."""
        self.fid.reset()
        self.kid.reset()
        logits = []
        for batch in self._batches(fake_images):
            self.fid.update(batch, real=False)
            self.kid.update(batch, real=False)
            logits.append(self.classifier(batch))
        subset_size = min(self.kid.subset_size, len(fake_images), self.num_real)
        self.kid.subset_size = subset_size
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            kid_mean, _ = self.kid.compute()
        metrics = {"fid": float(self.fid.compute()), "kid": float(kid_mean)}
        return metrics | class_metrics(torch.cat(logits), labels)


def fixed_inputs(num_samples: int, latent_dim: int, num_classes: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise from a private generator seeded with ``seed``, and for a conditional model labels
    cycling through the classes (balanced): the same inputs every epoch and in ``src.evaluate``."""
    noise = torch.randn(num_samples, latent_dim, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(num_samples) % num_classes if num_classes else None
    return noise, labels


def generate(model, noise: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 1000) -> torch.Tensor:
    """``model.sample`` over batches, on the model's device: images in [-1, 1]."""
    device = next(model.parameters()).device
    images = []
    for start in range(0, len(noise), batch_size):
        batch_labels = None if labels is None else labels[start : start + batch_size].to(device)
        images.append(model.sample(noise[start : start + batch_size].to(device), batch_labels))
    return torch.cat(images)


def real_vs_real(name: str, root: str | os.PathLike, num_samples: int, recipe: Recipe = Recipe()) -> dict[str, float]:
    """Training images against test images, N of each: what a perfect generator would score."""
    classifier, _ = load_classifier(name, root, recipe)
    test_images, _ = load_split(name, root, train=False)
    train_images, train_labels = load_split(name, root, train=True)
    metrics = QualityMetrics(classifier, test_images[:num_samples])
    return metrics.compute(train_images[:num_samples], train_labels[:num_samples])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Real-vs-real quality figures: N training images scored against N test images.")
    parser.add_argument("names", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--root", default="data")
    parser.add_argument("--num-samples", type=int, default=10_000)
    args = parser.parse_args(argv)
    for name in args.names:
        figures = real_vs_real(name, args.root, args.num_samples)
        print(json.dumps({"data": name, "num_samples": args.num_samples} | {k: round(v, 4) if math.isfinite(v) else v for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
