"""Reads of tensor values back to the host per training batch, in the project's real training.

    python bench/host_reads.py                                  # default gan, Fashion-MNIST, 200 batches
    python bench/host_reads.py model=cgan trainer=gpu           # on a GPU: each device read is a sync

Arguments are Hydra overrides of `conf/train.yaml`. On a GPU, every `.item()`, `bool(t)`,
`float(t)`, `.cpu()`, `.tolist()` of a device tensor waits until the GPU has run all the work
queued before it, so the CPU stops running ahead. This counts those calls from the start of
each training batch to the start of the next (the training step, the callbacks, Lightning's
bookkeeping), split into logging and other batches, and names where they come from and whether
the tensor was on the GPU (a sync) or on the host (free). On a CPU run every tensor is a host
tensor: the count still shows where reads happen, and which of them a GPU would wait on follows
from where the tensor lives there (the step's losses, weights and EMA count live on the GPU).
"""

from __future__ import annotations

import collections
import sys
import traceback
from pathlib import Path

import lightning as L
import torch
from train_config import compose_train_config  # puts the repository on sys.path

from src.gan_module import logs_batch

METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostReadCounter(L.Callback):
    """Counts host reads per training batch; wraps the tensor methods while training runs."""

    def __init__(self) -> None:
        self.batches = {True: 0, False: 0}  # logging batch? -> batches seen
        self.reads = collections.Counter()  # (logging batch?, on host?, where) -> reads
        self._logging: bool | None = None
        self.device = "?"
        self._originals = {name: getattr(torch.Tensor, name) for name in METHODS}

    def _wrap(self, name: str):
        original = self._originals[name]

        def counted(tensor, *args, **kwargs):
            if self._logging is not None:
                frames = [f for f in traceback.extract_stack(limit=12)[:-1] if "/torch/" not in f.filename and "apply_func" not in f.filename]
                where = f"{name} <- {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else name
                self.reads[(self._logging, tensor.device.type == "cpu", where)] += 1
            return original(tensor, *args, **kwargs)

        return counted

    def on_train_start(self, trainer, pl_module) -> None:
        self.device = str(pl_module.device)
        for name in METHODS:
            setattr(torch.Tensor, name, self._wrap(name))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._logging = logs_batch(trainer, pl_module.steps_trained + 1)
        self.batches[self._logging] += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        self._logging = None  # validation and the sample-quality metrics are not a training batch

    def on_train_end(self, trainer, pl_module) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)

    def report(self) -> None:
        for logging, label in ((False, "other batches"), (True, "logging batches")):
            batches = self.batches[logging]
            rows = [(where, on_host, n) for (lg, on_host, where), n in self.reads.items() if lg == logging]
            device_reads = sum(n for _, on_host, n in rows if not on_host)
            host_reads = sum(n for _, on_host, n in rows if on_host)
            print(
                f"{label}: {batches}; reads per batch: {device_reads / max(batches, 1):.2f} of GPU tensors, {host_reads / max(batches, 1):.2f} of host tensors"
            )
            for where, on_host, n in sorted(rows, key=lambda row: -row[2]):
                print(f"  {n / max(batches, 1):6.2f}  {'host' if on_host else 'GPU '}  {where}")


def main(overrides: list[str]) -> None:
    from src.train import train

    defaults = ("trainer.max_epochs=1", "+trainer.limit_train_batches=200", "+trainer.limit_val_batches=2")
    cfg = compose_train_config(overrides, defaults, tmp_prefix="host-reads-")
    counter = HostReadCounter()
    train(cfg, extra_callbacks=[counter])
    print(f"device={counter.device} torch={torch.__version__} overrides={overrides}")
    counter.report()


if __name__ == "__main__":
    main(sys.argv[1:])
