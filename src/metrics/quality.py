"""Sample-quality metrics in a domain classifier's feature space (see ``classifier.py``).

* ``fid`` / ``kid``: torchmetrics' Frechet and Kernel Inception Distances with the classifier's
  penultimate layer as the feature extractor (lower is better; 0 for identical sets).
* ``precision`` / ``recall`` (k = 3) and ``density`` / ``coverage`` (k = 5): the k-NN manifold
  metrics of ``manifold.py`` on the same features (fidelity and diversity apart; 0 to 1, higher
  is better; density can exceed 1).
* ``fid_over_coverage``: FID divided by coverage, the one figure the recipe searches minimize
  (``conf/hparams_search/``): FID alone ranks a sharp generator of a few modes above one that
  covers the data set, and coverage alone ignores how far off the samples are; in the ratio
  halving FID and doubling coverage count the same. A coverage of 0 counts as one real image
  covered, so the figure stays finite.
* ``ifid``: for a conditional model, the intra-class FID: the mean over classes of the FID
  between the samples generated for class c and the real images of class c.
* ``classifier_score``: the Inception Score with the classifier's softmax, exp E[KL(p(y|x) || p(y))]
  over all samples (TF-GAN's "MNIST score"; 1 to 10, higher is better).
* ``class_entropy``: the entropy in bits of the classes the classifier predicts for the samples
  (mode coverage: log2(10) = 3.32 when all ten classes are equally frequent).
* ``cond_acc``: for a conditional model, the share of samples classified as the label they were
  generated for.

Real-vs-real figures, the floor of FID/KID and the ceiling of the others for N samples:

    python -m src.metrics.quality --data-dir data                # both data sets, 10,000 images each
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
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from src import imports_done
from src.data.loaders import to_model_range
from src.data.provision import DATASETS, load_split
from src.errors import UserError, user_errors
from src.metrics.extractor import DomainClassifier, load_classifier
from src.metrics.manifold import RealManifold

# What QualityMetrics.compute returns, in the order the tables show them; ifid and cond_acc only
# for a conditional model.
METRIC_NAMES = (
    "fid",
    "kid",
    "precision",
    "recall",
    "density",
    "coverage",
    "fid_over_coverage",
    "ifid",
    "classifier_score",
    "class_entropy",
    "cond_acc",
)


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


class FeatureInput(nn.Module):
    """Features that are already extracted, passed through: torchmetrics' FID/KID take their
    ``feature=`` module's output as the feature vector, and every metric here shares one pass of
    the classifier (``num_features`` spares torchmetrics its probe with a dummy image)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class NonFiniteSamplesError(UserError):
    """Generated images (or their features) hold NaN or infinity: the weights that made them have diverged."""


class QualityMetrics:
    """Scores generated images against a fixed set of real ones, all in one classifier's terms.

    Everything on the real side is computed once, here: the real features (one pass of the
    classifier), FID's and KID's real statistics (``reset_real_features=False``), the k-NN radii
    of precision/recall and density/coverage and, given ``real_labels``, one FID per class for
    the intra-class FID. Each ``compute`` runs the classifier once over the generated images and
    resets the fake side. KID draws random subsets from a private, seeded generator state, so
    the figure is reproducible and the caller's RNG is untouched.
    """

    def __init__(
        self,
        classifier: DomainClassifier,
        real_images: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        batch_size: int = 1000,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        self.classifier = classifier.eval().requires_grad_(False)
        self.batch_size = batch_size
        self.seed = seed
        self.num_real = len(real_images)
        real_features, _ = self.features_and_logits(real_images)
        feature = FeatureInput(classifier.num_features)
        # sync_on_compute=False: under DDP only rank zero scores (src/callbacks/quality.py); syncing
        # would wait forever for ranks that hold no samples.
        self.fid = FrechetInceptionDistance(feature=feature, reset_real_features=False, sync_on_compute=False)
        with warnings.catch_warnings():
            # "will save all extracted features in buffer": 10,000 x 128 floats here, 5 MB.
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer", category=UserWarning)
            self.kid = KernelInceptionDistance(
                feature=feature,
                subsets=kid_subsets,
                subset_size=min(kid_subset_size, self.num_real),
                reset_real_features=False,
                sync_on_compute=False,
            )
        self.fid.update(real_features, real=True)
        self.kid.update(real_features, real=True)
        self.manifold = RealManifold(real_features)
        self.class_fids: dict[int, FrechetInceptionDistance] = {}
        if real_labels is not None:
            for label in real_labels.unique().tolist():
                self.class_fids[label] = FrechetInceptionDistance(feature=feature, reset_real_features=False, sync_on_compute=False)
                self.class_fids[label].update(real_features[real_labels == label], real=True)

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's features and logits of ``images`` ((N, 1, 28, 28) in [-1, 1], or uint8), on the CPU."""
        device = next(self.classifier.parameters()).device
        features, logits = [], []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].to(device)
            batch = to_model_range(batch) if batch.dtype == torch.uint8 else batch.float()
            batch_features = self.classifier.features(batch)
            features.append(batch_features.cpu())
            logits.append(self.classifier.head(batch_features).cpu())
        return torch.cat(features), torch.cat(logits)

    def to(self, device: torch.device | str) -> QualityMetrics:
        """Where the classifier runs; the statistics stay on the CPU (a few MB, float64)."""
        self.classifier.to(device)
        return self

    @torch.no_grad()
    def compute(self, fake_images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """``fake_images``: (N, 1, 28, 28) in [-1, 1] (or uint8); ``labels``: the classes they were asked for."""
        features, logits = self.features_and_logits(fake_images)
        if not (torch.isfinite(features).all() and torch.isfinite(logits).all()):
            raise NonFiniteSamplesError("the generated images hold NaN or infinite values (the generator's weights have diverged): nothing to score")
        self.fid.reset()
        self.kid.reset()
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)
        self.kid.subset_size = min(self.kid.subset_size, len(fake_images), self.num_real)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            kid_mean, _ = self.kid.compute()
        metrics = {"fid": float(self.fid.compute()), "kid": float(kid_mean)}
        metrics |= self.manifold.compare(features)
        metrics["fid_over_coverage"] = metrics["fid"] / max(metrics["coverage"], 1 / self.num_real)
        if labels is not None and self.class_fids:
            metrics["ifid"] = self.intra_class_fid(features, labels.cpu())
        return metrics | class_metrics(logits, labels)

    def intra_class_fid(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """The mean over classes of the FID between class c's samples and the real images of class c."""
        fids = []
        for label, fid in self.class_fids.items():
            fid.reset()
            fid.update(features[labels == label], real=False)
            fids.append(float(fid.compute()))
        return sum(fids) / len(fids)


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


def real_vs_real(name: str, data_dir: str | os.PathLike, num_samples: int, classifier_path: str | None = None) -> dict[str, float]:
    """Training images against test images, N of each: what a perfect generator would score."""
    classifier, _ = load_classifier(name, classifier_path)
    test_images, test_labels = load_split(name, data_dir, train=False, key="--data-dir")
    train_images, train_labels = load_split(name, data_dir, train=True, key="--data-dir")
    metrics = QualityMetrics(classifier, test_images[:num_samples], test_labels[:num_samples])
    return metrics.compute(train_images[:num_samples], train_labels[:num_samples])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Real-vs-real quality figures: N training images scored against N test images.")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"data sets, of {', '.join(DATASETS)} (default: both)")
    parser.add_argument("--data-dir", default="data", help="the data folder (default: data)")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--classifier", default=None, help="a classifier file instead of the pinned one (one NAME)")
    args = parser.parse_args(argv)
    # Imported here: the preflight package imports the training callbacks, which import this module.
    from src.preflight.commands import check_real_vs_real

    with user_errors():
        names = args.names or list(DATASETS)
        check_real_vs_real(names, args.num_samples)
        for name in names:
            figures = real_vs_real(name, args.data_dir, args.num_samples, args.classifier)
            print(
                json.dumps({"data": name, "num_samples": args.num_samples} | {k: round(v, 4) if math.isfinite(v) else v for k, v in figures.items()})
            )
    return 0


if __name__ == "__main__":
    # main's checks (imported inside it: see there), imported here too so that they load, as every
    # other import of the command does, before imports_done lets a Ctrl-C through.
    import src.preflight.commands  # noqa: F401

    imports_done()
    sys.exit(main())
