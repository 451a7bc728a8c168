"""MNIST / Fashion-MNIST as a LightningDataModule, through torchvision's dataset classes.

The training split trains; the official test split is the validation set (GANs have no
held-out objective of their own, but checkpoint selection and sample metrics need one).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from src.data.loaders import MEAN, STD, EpochSampler, TensorLoader
from src.data.provision import DEFAULT_SOURCES, check_data, dataset_class, provision

LOADERS = ("tensor", "classic")


def step_counted(trainer_cfg, batches_per_step: int) -> dict[str, int]:
    """The trainer settings Lightning counts in training steps, given in batches as configured
    and divided by ``batches_per_step`` (the preflight has checked that it divides them):
    ``log_every_n_steps`` (Lightning's default 50 where unset) and an integer ``val_check_interval``."""
    if batches_per_step == 1:
        return {}
    every = trainer_cfg.get("log_every_n_steps")
    counted = {"log_every_n_steps": (50 if every is None else every) // batches_per_step}
    interval = trainer_cfg.get("val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool):
        counted["val_check_interval"] = interval // batches_per_step
    return counted


class MNISTDataModule(L.LightningDataModule):
    """``loader="tensor"`` keeps each split on the training device (fast, the default);
    ``loader="classic"`` is the textbook per-sample ``DataLoader`` path, kept for comparison.

    ``batches_per_step=K`` hands each training step K batches (``loaders.BatchGroup``; the tensor
    loader only). Lightning then counts steps of K batches, so the training loader applies an
    integer ``trainer.limit_train_batches`` itself, in batches (``src/preflight/training.py``
    refuses a fraction), and ``src/train.py`` gives Lightning its step-counted settings."""

    num_classes = 10
    img_shape = (1, 28, 28)

    def __init__(
        self,
        name: str = "fashion_mnist",
        data_dir: str = "data",
        batch_size: int = 100,
        val_batch_size: int = 1000,
        loader: str = "tensor",
        num_workers: int = 0,
        seed: int = 0,
        sources: Sequence[str] = DEFAULT_SOURCES,
        batches_per_step: int = 1,
    ) -> None:
        super().__init__()
        dataset_class(name)  # fail early on an unknown name
        self.name, self.data_dir = name, data_dir
        self.batch_size, self.val_batch_size = int(batch_size), int(val_batch_size)
        self.loader, self.num_workers, self.seed = loader, num_workers, seed
        self.sources = tuple(sources)
        self.batches_per_step = int(batches_per_step)
        self.class_names: list[str] = []
        self.train_set = self.val_set = None

    def prepare_data(self) -> None:
        provision(self.name, self.data_dir, self.sources)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        check_data(self.name, self.data_dir, "data_dir", num_classes=self.num_classes)
        dataset = dataset_class(self.name)
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        self.train_set = dataset(self.data_dir, train=True, transform=transform)
        self.val_set = dataset(self.data_dir, train=False, transform=transform)
        self.class_names = list(self.train_set.classes)

    def _tensor_loader(self, dataset, batch_size: int, shuffle: bool, batches_per_step: int = 1) -> TensorLoader:
        trainer = self.trainer
        sampler = EpochSampler(
            len(dataset),
            shuffle=shuffle,
            seed=self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        limit = trainer.limit_train_batches if trainer and batches_per_step > 1 else None
        limit = limit if isinstance(limit, int) else None  # the preflight lets only 1.0 through as a fraction
        return TensorLoader(dataset.data.unsqueeze(1), dataset.targets, batch_size, sampler, device, batches_per_step, limit)

    def _classic_loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self):
        if self.loader == "tensor":
            return self._tensor_loader(self.train_set, self.batch_size, shuffle=True, batches_per_step=self.batches_per_step)
        return self._classic_loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self):
        make = self._tensor_loader if self.loader == "tensor" else self._classic_loader
        return make(self.val_set, self.val_batch_size, shuffle=False)
