"""The progress bar, counting batches where a training step trains several (``data.batches_per_step``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from src.data.loaders import BatchGroup


class BatchProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, whose training bar counts batches, not steps: with
    ``data.batches_per_step=K`` it shows the epoch's batches and moves K at a time. With one batch
    per step it is Lightning's bar unchanged."""

    @property
    def total_train_batches(self) -> int | float:
        loader = self.trainer.train_dataloader
        if getattr(loader, "batches_per_step", 1) > 1:
            return loader.batches
        return super().total_train_batches

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if isinstance(batch, BatchGroup):  # the index of the group's last batch in the epoch
            batch_idx = batch.first + len(batch.batches) - 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
