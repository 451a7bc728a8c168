"""Classification accuracy score (CAS; Ravuri & Vinyals 2019): train a fresh classifier on a
conditional generator's class-balanced samples alone, then measure its accuracy on the real test
images. ``cond_acc`` asks whether each sample looks like its class to a classifier trained on real
images; CAS asks whether the samples hold what it takes to learn each class: a generator that
draws one perfect 7 for every z scores ``cond_acc`` 1 and a low CAS.

Written here because no kept library has it for a Lightning module (torchmetrics has no CAS;
PyTorch-StudioGAN's is tied to its own trainer). It reuses the pinned classifiers' recipe and
training (``src.metrics.classifier``), so its ceiling is the pinned classifier's own test accuracy:
the same recipe trained on the real training images.
"""

from __future__ import annotations

import torch

from src.data.loaders import to_uint8
from src.metrics.classifier import measure_accuracy, train_classifier
from src.metrics.extractor import PINNED_RECIPE, Recipe
from src.metrics.quality import fixed_inputs, generate


def class_balanced_samples(model, count: int, seed: int, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` samples of a conditional ``model`` as uint8 (N, 1, 28, 28), the classes in turn
    (balanced), and their labels; the noise from ``seed``, as the quality metrics draw it."""
    noise, labels = fixed_inputs(count, model.latent_dim, model.num_classes, seed)
    images = generate(model, noise, labels, batch_size)
    return to_uint8(images), labels


def classification_accuracy_score(
    model,
    train_size: int,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    seed: int = 0,
    recipe: Recipe = PINNED_RECIPE,
    batch_size: int = 1000,
) -> float:
    """CAS: a classifier trained with ``recipe`` on ``train_size`` samples (as many as the real
    training set has images), its accuracy on the real ``test_images``."""
    images, labels = class_balanced_samples(model, train_size, seed, batch_size)
    classifier = train_classifier(images, labels, recipe, "cas")
    return measure_accuracy(classifier, test_images, test_labels)
