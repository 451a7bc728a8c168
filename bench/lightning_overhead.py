"""Where Lightning's per-batch time goes in the project's training, in one process.

    python bench/lightning_overhead.py                          # default gan, Fashion-MNIST, CPU
    python bench/lightning_overhead.py model=cgan
    python bench/lightning_overhead.py --nvml-probe             # with torch's per-step NVML probe back on

Arguments other than ``--nvml-probe`` are Hydra overrides of `conf/train.yaml`. It prints:

- the project's ``training_step`` against the same step as a plain PyTorch function (``plain_step``
  of bench/bench.py) on the same G, D, optimizers and batch, alternating blocks of 200
  steps inside the running Trainer: the cost of ``manual_backward``, the optimizer wrappers and
  their hooks;
- the time to fetch a batch from the train loader alone (the plain loop does that too);
- the cost of one round of callback hooks (Lightning calls every callback for every hook) and
  of one LightningModule hook;
- then, over the real training loop, the median time per batch around ``training_step`` (the
  batch-start and batch-end hooks) and between batches (fetching the next batch, Lightning's
  bookkeeping);
- after the first logging step, what Lightning does with the logged values after every batch
  (its ``metrics`` pass, the progress bar's ``get_metrics``), and the time spent in Python's
  garbage collector per batch.

``--nvml-probe`` sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` again after ``GAN.setup`` (what
importing Lightning does; see src/devices.py), to measure what torch's probe costs per step.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time

import lightning as L
import torch
from lightning.pytorch.trainer import call
from train_config import compose_train_config  # puts the repository on sys.path


def _median_ms(step, blocks: int = 5, steps: int = 200) -> float:
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(times)


class Overhead(L.Callback):
    def __init__(self, nvml_probe: bool, batches_to_skip: int = 50) -> None:
        self.nvml_probe = nvml_probe
        self.skip = batches_to_skip
        self.around: list[float] = []
        self.between: list[float] = []
        self._start = self._end = 0.0
        self.gc_seconds, self.gc_collections, self._gc_start = 0.0, 0, 0.0

    def _time_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_seconds += time.perf_counter() - self._gc_start
            self.gc_collections += 1

    def on_train_start(self, trainer, gan) -> None:
        from bench import plain_step as bare_step

        if self.nvml_probe:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
        batch = next(iter(trainer.datamodule.train_dataloader()))
        step = bare_step(gan, *trainer.optimizers)  # the torch optimizers (self.optimizers() wraps them)

        def plain_step() -> None:
            step(batch)
            gan.discriminator.requires_grad_(True)  # as Lightning's toggling expects to find it

        def lightning_step() -> None:
            gan.training_step(batch, 1)

        for _ in range(20):
            plain_step()
            lightning_step()
        plain, lightning = [], []
        for _ in range(3):
            plain.append(_median_ms(plain_step))
            lightning.append(_median_ms(lightning_step))
        plain_ms, lightning_ms = statistics.median(plain), statistics.median(lightning)
        print(f"step: plain {plain_ms:.3f} ms, training_step {lightning_ms:.3f} ms (+{lightning_ms - plain_ms:.3f} ms)")
        loss = torch.zeros(())
        rounds = 2000
        start = time.perf_counter()
        for _ in range(rounds):
            call._call_callback_hooks(trainer, "on_before_backward", loss)
        per_round = (time.perf_counter() - start) / rounds * 1e6
        start = time.perf_counter()
        for _ in range(rounds):
            call._call_lightning_module_hook(trainer, "on_before_backward", loss)
        per_module_hook = (time.perf_counter() - start) / rounds * 1e6
        start, batches = time.perf_counter(), 0
        for _ in trainer.datamodule.train_dataloader():  # the fetch alone, which the plain loop also does
            batches += 1
        print(f"fetching a batch from the train loader alone: {(time.perf_counter() - start) / batches * 1e3:.3f} ms")
        names = ", ".join(type(callback).__name__ for callback in trainer.callbacks)
        print(
            f"one round of callback hooks: {per_round:.1f} µs over {len(trainer.callbacks)} callbacks ({names}); one LightningModule hook: {per_module_hook:.1f} µs"
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.skip:
            gc.callbacks.append(self._time_gc)
        self._start = time.perf_counter()
        if batch_idx > self.skip:
            self.between.append(self._start - self._end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._end = time.perf_counter()
        if batch_idx >= self.skip:
            self.around.append(self._end - self._start)
        if batch_idx == trainer.log_every_n_steps + 10:  # values logged: what Lightning does with them each batch
            bar, calls = trainer.progress_bar_callback, 2000
            for name, work in (
                ("its metrics pass", lambda: trainer.callback_metrics),  # the public property runs the logger connector's pass
                ("the progress bar's get_metrics", lambda: bar.get_metrics(trainer, pl_module)),
            ):
                if name.startswith("the progress") and bar is None:
                    continue
                start = time.perf_counter()
                for _ in range(calls):
                    work()
                print(f"Lightning's per-batch work on the logged values, {name}: {(time.perf_counter() - start) / calls * 1e6:.1f} µs")
            self._end = time.perf_counter()  # the timing above is not between-batch time

    def on_train_end(self, trainer, pl_module) -> None:
        if self._time_gc in gc.callbacks:
            gc.callbacks.remove(self._time_gc)


def main(argv: list[str]) -> None:
    from src.train import train

    nvml_probe = "--nvml-probe" in argv
    overrides = [arg for arg in argv if arg != "--nvml-probe"]
    defaults = ("trainer.max_epochs=1", "+trainer.limit_train_batches=500", "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0")
    cfg = compose_train_config(overrides, defaults, tmp_prefix="lightning-overhead-")
    overhead = Overhead(nvml_probe)
    train(cfg, extra_callbacks=[overhead])
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} nvml_probe={nvml_probe} overrides={overrides}")
    print(
        f"per batch of the training loop: {statistics.median(overhead.around) * 1e3:.3f} ms from batch start to batch end "
        f"(training_step and its hooks), {statistics.median(overhead.between) * 1e3:.3f} ms between batches (fetch, bookkeeping)"
    )
    batches = len(overhead.around)
    print(f"garbage collector: {overhead.gc_collections} collections in {batches} batches, {overhead.gc_seconds / batches * 1e6:.1f} µs per batch")


if __name__ == "__main__":
    main(sys.argv[1:])
