"""A tensor-resident batch loader: the whole split lives on the training device as ``uint8``.

Why not a ``DataLoader``: torchvision's ``MNIST.__getitem__`` builds a PIL image per sample and
``ToTensor``/``Normalize`` run per sample, which costs more than these small models' step.
Here an epoch is one permutation and one gather per batch; normalization is torchvision's
arithmetic applied to the whole batch, so values are bit-identical to the classic path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

MEAN, STD = (0.5,), (0.5,)  # maps [0, 1] to [-1, 1], the generator's Tanh range


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float in [-1, 1], exactly as ``ToTensor()`` then ``Normalize(MEAN, STD)``.

    The same float32 operations as torchvision's (divide by 255, subtract the mean, divide by the
    std), so the values are bit-identical (tests/test_data.py), but with Python scalars: torchvision's
    ``normalize`` copies mean and std to the device and checks ``(std == 0).any()`` on every call,
    a host-device synchronization per batch that stalls a GPU's queue (BENCHMARKS.md).
    """
    (mean,), (std,) = MEAN, STD
    return images_u8.float().div_(255).sub_(mean).div_(std)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (N, 1, H, W) -> uint8 on the CPU, rounded: the inverse of ``to_model_range``
    (what ``src.generate`` saves and what CAS trains on)."""
    return images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


class EpochSampler:
    """Indices of one epoch for one rank, a pure function of (seed, epoch, rank, world size).

    Like ``DistributedSampler``: every rank draws the same permutation, pads it (by repeating its
    head) to a multiple of the world size, and takes every ``world_size``-th index, so each sample
    is seen once per epoch across ranks (padding aside) and every rank has the same batch count.
    Lightning calls ``set_epoch`` before each epoch (the same hook it uses for ``DistributedSampler``),
    which also makes a resumed run draw the same order as an uninterrupted one.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        padding = len(self) * self.world_size - self.size
        if padding:
            order = torch.cat([order, order[:padding]])
        return order[self.rank :: self.world_size]


@dataclass
class BatchGroup:
    """``data.batches_per_step=K``: the K batches one ``training_step`` trains, one after the other
    (Keras' ``steps_per_execution``), so that Lightning's per-batch cost is paid once per K batches.

    ``first`` is the index of the first of them in the epoch and ``epoch_batches`` the epoch's
    batch count, so the step knows where each batch stands without Lightning's counters, which
    count steps. A dataclass, so Lightning moves its tensors to the device like any batch.
    """

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    first: int
    epoch_batches: int


def step_batches(batch) -> list:
    """The batches one training step trained: a :class:`BatchGroup`'s K, or the one batch."""
    return batch.batches if isinstance(batch, BatchGroup) else [batch]


def batches_in(batch) -> int:
    """How many batches one training step trained: K for a :class:`BatchGroup`, else 1."""
    return len(step_batches(batch))


class TensorLoader:
    """Yields ``(images in [-1, 1], labels)`` batches by indexing tensors that stay on ``device``;
    with ``batches_per_step=K > 1``, :class:`BatchGroup`s of K of them (the epoch's last group may
    hold fewer), and ``limit_batches`` (an int) cuts the epoch to that many batches first, as
    ``trainer.limit_train_batches`` cuts it when K is 1."""

    # Mirrors DataLoader's attributes that Lightning inspects: ``sampler`` receives ``set_epoch``.
    batch_sampler = None

    def __init__(
        self,
        images_u8: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        sampler: EpochSampler,
        device: torch.device | str = "cpu",
        batches_per_step: int = 1,
        limit_batches: int | None = None,
    ) -> None:
        self.images = images_u8.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.sampler = sampler
        self.batches_per_step = batches_per_step
        self.limit_batches = limit_batches

    @property
    def batches(self) -> int:
        """Batches per epoch (after ``limit_batches``)."""
        batches = math.ceil(len(self.sampler) / self.batch_size)
        return batches if self.limit_batches is None else min(batches, self.limit_batches)

    def __len__(self) -> int:
        return math.ceil(self.batches / self.batches_per_step)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.sampler.indices().to(self.images.device).split(self.batch_size)
        for index in indices[: self.batches]:
            yield to_model_range(self.images[index]), self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor] | BatchGroup]:
        if self.batches_per_step == 1:
            yield from self._batches()
            return
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        first = 0
        for batch in self._batches():
            group.append(batch)
            if len(group) == self.batches_per_step:
                yield BatchGroup(group, first, self.batches)
                first += len(group)
                group = []
        if group:
            yield BatchGroup(group, first, self.batches)
