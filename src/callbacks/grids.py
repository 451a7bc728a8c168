"""The per-epoch sample grid and latent-walk grid: PNGs in the run folder and images in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageDraw, ImageFont
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
