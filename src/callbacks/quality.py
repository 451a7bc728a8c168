"""Callbacks of the quality metrics: ``SampleQuality`` scores samples during validation, ``FinalMetrics`` writes a run's last figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from src.data.provision import load_split
from src.errors import ConfigError
from src.metrics.extractor import load_classifier
from src.metrics.quality import QualityMetrics, fixed_inputs, generate


class SampleQuality(L.Callback):
    """Every ``every_n_epochs`` epochs (and after the last), score ``num_samples`` generated images.

    The images come from ``pl_module.sample(noise, labels)`` with noise drawn once from ``seed``
    and, for a conditional model, labels cycling through the classes (balanced), so epochs are
    comparable. They are scored against the first ``num_samples`` images of the test split in the
    feature space of the data set's pinned classifier (``src/metrics/extractor.py``; or the
    classifier file ``classifier``). Logged as ``val/fid``, ``val/kid``, ``val/precision``,
    ``val/recall``, ``val/density``, ``val/coverage``, ``val/fid_over_coverage``, ``val/classifier_score``,
    ``val/class_entropy`` (bits) and, for a conditional model, ``val/ifid`` and ``val/cond_acc``.
    Everything on the real side is computed once per run (``prepare``), not per epoch.

    Under DDP rank zero computes and broadcasts the figures, so every rank logs (and every
    rank's ``ModelCheckpoint`` compares) the same values, independent of the number of ranks.
    """

    def __init__(
        self, num_samples: int = 10_000, every_n_epochs: int = 1, batch_size: int = 1000, seed: int = 0, classifier: str | os.PathLike | None = None
    ) -> None:
        self.num_samples = int(num_samples)
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.classifier = classifier
        self.metrics: QualityMetrics | None = None

    def prepare(self, datamodule: L.LightningDataModule, pl_module: L.LightningModule) -> None:
        """Load the classifier and compute the real side; ``train()`` calls it before a run writes
        anything, so a missing classifier or too few images per class is a one-line error."""
        if self.metrics is not None:
            return
        classifier, _ = load_classifier(datamodule.name, self.classifier)
        real_images, real_labels = load_split(datamodule.name, datamodule.data_dir, train=False)
        real_images, real_labels = real_images[: self.num_samples], real_labels[: self.num_samples]
        if pl_module.num_classes:
            counts = torch.bincount(real_labels, minlength=pl_module.num_classes)
            if self.num_samples < 2 * pl_module.num_classes or int(counts.min()) < 2:
                raise ConfigError(
                    f"callbacks.sample_quality.num_samples={self.num_samples} leaves fewer than 2 images of some class for the intra-class FID: "
                    f"use at least {2 * pl_module.num_classes} (and a test split with 2 of every class among them)"
                )
        self.metrics = QualityMetrics(
            classifier, real_images, real_labels if pl_module.num_classes else None, batch_size=self.batch_size, seed=self.seed
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:  # only rank zero scores
            self.prepare(trainer.datamodule, pl_module)

    def score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        noise, labels = fixed_inputs(self.num_samples, pl_module.latent_dim, pl_module.num_classes, self.seed)
        images = generate(pl_module, noise, labels, self.batch_size)
        return self.metrics.to(pl_module.device).compute(images, labels)

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch
        return epoch % self.every_n_epochs == 0 or last

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._due(trainer):
            return
        figures = self.score(trainer, pl_module) if trainer.is_global_zero else None
        figures = trainer.strategy.broadcast(figures, src=0)
        # The same values on every rank: the mean over ranks (sync_dist) leaves them unchanged.
        pl_module.log_dict({f"val/{name}": value for name, value in figures.items()}, sync_dist=True)


class FinalMetrics(L.Callback):
    """Writes the run's final logged metrics to ``<path>`` (JSON) when training ends, on rank zero.

    The sweep summary (``src/sweeps.py``) reads it to put every job's figures side by side.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.callback_metrics and self.path.is_file():
            return  # a resumed run with no epoch left to train: keep the figures of the run that trained
        # Not the x-axis that GAN logs with data.batches_per_step > 1 (``step``, ``epoch``): no figures.
        metrics = {name: float(value) for name, value in sorted(trainer.callback_metrics.items()) if name not in ("step", "epoch")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(metrics | {"epochs": trainer.current_epoch}, indent=2) + "\n")
