"""Callbacks of the quality metrics: ``SampleQuality`` scores samples during validation, ``FinalMetrics`` writes a run's last figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from src.errors import ConfigError
from src.metrics.classifier import Recipe, load_classifier, load_split
from src.metrics.quality import QualityMetrics, fixed_inputs, generate


class SampleQuality(L.Callback):
    """Every ``every_n_epochs`` epochs (and after the last), score ``num_samples`` generated images.

    The images come from ``pl_module.sample(noise, labels)`` with noise drawn once from ``seed``
    and, for a conditional model, labels cycling through the classes (balanced), so epochs are
    comparable. They are scored against the first ``num_samples`` images of the test split with
    the data set's domain classifier (``src/metrics/classifier.py``, trained and cached under the
    data folder on first use). Logged as ``val/fid``, ``val/kid``, ``val/classifier_score``,
    ``val/class_entropy`` (bits) and, for a conditional model, ``val/cond_acc``.

    Under DDP rank zero computes and broadcasts the figures, so every rank logs (and every
    rank's ``ModelCheckpoint`` compares) the same values, independent of the number of ranks.
    """

    def __init__(
        self,
        num_samples: int = 10_000,
        every_n_epochs: int = 1,
        batch_size: int = 1000,
        seed: int = 0,
        data_root: str | os.PathLike | None = None,
    ) -> None:
        if int(num_samples) < 2:
            raise ConfigError(f"callbacks.sample_quality.num_samples must be at least 2 (FID needs a covariance), got {num_samples}")
        self.num_samples = int(num_samples)
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.data_root = data_root
        self.recipe = Recipe()
        self.metrics: QualityMetrics | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Here, not in the validation hook: validation runs without autograd, and training the
        # classifier (first use) needs it. Only rank zero scores, so only it loads the classifier.
        if self.metrics is not None or not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        root = self.data_root or datamodule.root
        classifier, _ = load_classifier(datamodule.name, root, self.recipe)
        real_images, _ = load_split(datamodule.name, root, train=False)
        self.metrics = QualityMetrics(classifier, real_images[: self.num_samples], batch_size=self.batch_size, seed=self.seed)

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
        metrics = {name: float(value) for name, value in sorted(trainer.callback_metrics.items())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(metrics | {"epochs": trainer.current_epoch}, indent=2) + "\n")
