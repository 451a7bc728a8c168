"""Lightning callbacks of the project: the per-epoch sample and interpolation grids, the HParams summary and the run's checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageDraw, ImageFont
from torch.utils.tensorboard.summary import hparams
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid, save_image

from src.interpolation import latent_walk


def label_rows(grid: torch.Tensor, names: list[str], row_height: int, padding: int) -> torch.Tensor:
    """Prefix each row of a ``make_grid`` image with its class name.

    Written by hand because torchvision only draws labels on bounding boxes.
    """
    image = to_pil_image(grid)
    font = ImageFont.load_default()
    margin = 8 + max(int(ImageDraw.Draw(image).textlength(name, font=font)) for name in names)
    canvas = Image.new("RGB", (image.width + margin, image.height))
    canvas.paste(image, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for row, name in enumerate(names):
        draw.text((4, padding + row * row_height + row_height // 2 - 6), name, fill="white", font=font)
    return pil_to_tensor(canvas).float().div(255)


class SampleGrid(L.Callback):
    """Once per training epoch, on rank zero: G's images from the module's fixed noise.

    Adds the grid to every TensorBoard logger (tag ``samples``, on the scalars' x-axis: batches
    trained) and writes ``epoch_NNN.png``; at the end of training it
    writes ``final.png``. For a conditional model each row is one class, labelled by name.
    """

    tag = "samples"
    prefix = ""

    def __init__(self, dirpath: str | None = None, every_n_epochs: int = 1, padding: int = 2) -> None:
        self.dirpath = Path(dirpath) if dirpath else None
        self.every_n_epochs = every_n_epochs
        self.padding = padding

    def images(self, pl_module: L.LightningModule) -> tuple[torch.Tensor, int]:
        """The grid's images and its number of columns."""
        return pl_module.sample(), pl_module.hparams.sample_cols

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        images, columns = self.images(pl_module)
        images = images.float().cpu()
        grid = make_grid(images, nrow=columns, padding=self.padding, normalize=True, value_range=(-1, 1))
        if pl_module.conditional:
            datamodule = getattr(trainer, "datamodule", None)
            names = list(getattr(datamodule, "class_names", None) or []) or [str(k) for k in range(pl_module.num_classes)]
            grid = label_rows(grid, names, row_height=images.size(-2) + self.padding, padding=self.padding)
        return grid

    def _write(self, grid: torch.Tensor, filename: str) -> None:
        if self.dirpath is None:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"{self.prefix}{filename}")

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        grid = self.render(trainer, pl_module)
        # Lightning logs scalars against the number of batches trained, not trainer.global_step
        # (two optimizer steps per batch here): put the images on the same axis.
        step = pl_module.batches_trained
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, global_step=step)
        self._write(grid, f"epoch_{trainer.current_epoch:03d}.png")

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(self.render(trainer, pl_module), "final.png")


class InterpolationGrid(SampleGrid):
    """Like ``SampleGrid``, a grid of latent walks (``src/interpolation.py``): ``rows`` rows of
    ``steps`` images, each row a spherical interpolation between two fixed latent points; for a
    conditional model the same walk in every class row. TensorBoard tag ``interpolation``, files
    ``interpolation_epoch_NNN.png`` and ``interpolation_final.png``. Whether G's latent space is
    smooth or collapsed shows here before it shows in the metrics."""

    tag = "interpolation"
    prefix = "interpolation_"

    def __init__(self, dirpath: str | None = None, rows: int = 8, steps: int = 10, seed: int = 1, every_n_epochs: int = 1, padding: int = 2) -> None:
        super().__init__(dirpath, every_n_epochs, padding)
        self.rows, self.steps, self.seed = rows, steps, seed

    def images(self, pl_module: L.LightningModule) -> tuple[torch.Tensor, int]:
        noise, labels = latent_walk(self.rows, self.steps, pl_module.latent_dim, pl_module.num_classes, seed=self.seed)
        labels = None if labels is None else labels.to(pl_module.device)
        return pl_module.sample(noise.to(pl_module.device), labels), self.steps


class HParamsSummary(L.Callback):
    """TensorBoard's HParams tab: the run's hyperparameters with its final figures, one row per run.

    Lightning's ``log_hyperparams`` writes the HParams summaries only together with metric
    values (and with ``default_hp_metric`` off, with none at all): so when training ends (or
    stops on an error) this writes the session summaries with torch's public ``hparams()`` into
    each TensorBoard logger's folder; TensorBoard reads the figures from the run's own scalars.
    ``tensorboard --logdir <sweep>`` then lists one row per job, with its parallel-coordinates view.
    """

    def __init__(self, hparams: dict[str, bool | int | float | str]) -> None:
        self.hparams = hparams
        self.written = False

    @rank_zero_only
    def _write(self, trainer: L.Trainer) -> None:
        if self.written:
            return
        self.written = True
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith(("val/", "train/"))}
        if not metrics:
            return
        # The session's summaries only, not the experiment's: TensorBoard then builds the
        # experiment from all runs under --logdir, lists the hyperparameters whose values differ
        # between them first (what a sweep varied) and takes every scalar tag as a metric.
        _, start, end = hparams(self.hparams, metrics)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # into the run's own event file, beside its scalars
                writer = logger.experiment.file_writer
                writer.add_summary(start)
                writer.add_summary(end)
                writer.flush()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._write(trainer)  # a diverged or interrupted job keeps its row, with the figures it reached


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` quiet about a folder that already holds checkpoints.

    A ranked ModelCheckpoint warns at setup that its folder "exists and is not empty"; resuming
    with ``ckpt_path=last`` in the same run folder (as the README shows) is that case by design,
    and Lightning only learns that it is resuming after this check. It is the only case left: a
    fresh run into a folder that holds another run's checkpoints is refused before this
    (``src.run_folder.check_fresh_run_dir``), and ``overwrite=true`` empties the folder first.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    @property
    def state_key(self) -> str:
        # Lightning reads state_key on every callback hook call (to name a profiler section), ~16
        # times per batch here (two of them, eight hook rounds), and ModelCheckpoint formats it from
        # five settings each time: those settings are fixed at construction, so format it once.
        if "_state_key" not in self.__dict__:
            self.__dict__["_state_key"] = super().state_key
        return self.__dict__["_state_key"]


class RunPosition(L.Callback):
    """Where a run is (which epoch, how many of its batches, training or scoring), for the line an
    interruption prints. Lightning acts on a SIGTERM at the next batch boundary, which for one
    that lands while an epoch is scored is after that epoch: its loop counters then read the next
    epoch beside the last one's batch count ("in epoch 1 after 3 batches" for epoch 0's scoring)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.batches = 0
        self.phase = "starting"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.batches, self.phase = trainer.current_epoch, 0, "training"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.batches += 1

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.epoch is not None:
            self.phase = "scoring"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.phase == "scoring":
            self.phase = "scored"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.phase = "ended"

    def describe(self) -> str:
        """``in epoch 2 after 17 batches``, ``while epoch 0 was scored (its 3 batches trained)``, ..."""
        if self.epoch is None:
            return "before the first batch"
        batches = f"{self.batches} batch{'es' if self.batches != 1 else ''}"
        if self.phase == "scoring":
            return f"while epoch {self.epoch} was scored (its {batches} trained)"
        if self.phase in ("scored", "ended"):
            return f"at the end of epoch {self.epoch} (its {batches} trained)"
        return f"in epoch {self.epoch} after {batches}"
