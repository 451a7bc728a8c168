"""Seconds per epoch of the project's real training (`train(cfg)`), for any config.

    python bench/epoch_time.py trainer.max_epochs=3                        # default gan, Fashion-MNIST
    python bench/epoch_time.py model=cgan data=mnist trainer=gpu trainer.max_epochs=3
    python bench/epoch_time.py trainer=gpu model.torch_compile=true trainer.max_epochs=3

Arguments are Hydra overrides of `conf/train.yaml`. Per epoch it prints the training time (all
batches, device synchronized) and the time of the validation that follows (D's validation
losses and the sample-quality metrics), then the median training epoch after the first (which
holds one-time costs: CUDA context, torch.compile) and its images/s. The run's files go to a
temporary folder unless `paths.output_dir=...` is given.
"""

from __future__ import annotations

import statistics
import sys
import time

import lightning as L
import torch
from train_config import compose_train_config  # puts the repository on sys.path

from src.data.loaders import step_batches


def _sync(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class EpochTimer(L.Callback):
    """Wall time of each training epoch and of the validation run at its end."""

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.val_s: list[float] = []
        self.images: list[int] = []
        self._start = self._val_start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module)
        self._start, self._val_start, self._images = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += sum(one[0].size(0) for one in step_batches(batch))  # data.batches_per_step: several

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            _sync(pl_module)
            self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            _sync(pl_module)
            self.val_s.append(time.perf_counter() - self._val_start)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning runs the epoch's validation before this hook: the training ended where it began.
        _sync(pl_module)
        end = self._val_start or time.perf_counter()
        self.train_s.append(end - self._start)
        self.images.append(self._images)
        validation = f", validation {self.val_s[-1]:.2f} s" if self._val_start else ""
        print(
            f"epoch {len(self.train_s) - 1}: training {self.train_s[-1]:.2f} s ({self._images / self.train_s[-1]:,.0f} images/s){validation}",
            flush=True,
        )


def main(overrides: list[str]) -> None:
    from src.train import train

    cfg = compose_train_config(overrides, tmp_prefix="epoch-time-")
    timer = EpochTimer()
    train(cfg, extra_callbacks=[timer])
    steady = timer.train_s[1:] or timer.train_s
    median = statistics.median(steady)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"gpu={gpu} torch={torch.__version__} threads={torch.get_num_threads()} overrides={overrides}")
    print(
        f"median training epoch (after the first): {median:.2f} s, {statistics.median(timer.images) / median:,.0f} images/s; "
        f"first epoch {timer.train_s[0]:.2f} s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
