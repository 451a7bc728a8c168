"""Generate images from a trained checkpoint: a PNG grid and an ``.npz`` of the images.

    python -m src.generate ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt num_samples=64
    python -m src.generate ckpt_path=... num_samples=100 labels=all     # cGAN: one row per class
    python -m src.generate ckpt_path=... num_samples=16 label=7 seed=1  # cGAN: sixteen 7s
    python -m src.generate ckpt_path=... interpolate=true              # latent walks: 8 rows of 10 (cGAN: one walk, a row per class)

The ``.npz`` holds ``images`` (N x 28 x 28 uint8, 0 = black) and ``labels`` (N int64: the class
each image was asked for; -1 for an unconditional model). Both files go beside the checkpoint
(``<ckpt>_n<N>_<labels>_seed<S>.png/.npz``) unless ``output=<stem>`` says otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torchvision.utils import make_grid, save_image

from src import imports_done
from src.checkpoint import load_model
from src.data.loaders import to_uint8
from src.devices import cpu_threads
from src.errors import release_stderr, run_entry_point, user_errors
from src.interpolation import latent_walk
from src.metrics.quality import generate
from src.preflight.commands import check_generate, check_labels, stem_paths
from src.preflight.outputs import check_output_files


def asked_labels(model, num_samples: int, label: int | None, labels: str | None) -> torch.Tensor | None:
    """The class of each sample: ``label`` for all, or every class in turn, one equal block (a grid row)
    each (``check_labels`` has checked them)."""
    if not model.conditional:
        return None
    if label is not None:
        return torch.full((num_samples,), label, dtype=torch.long)
    return torch.arange(num_samples) * model.num_classes // num_samples


def output_paths(cfg: DictConfig, name: str) -> tuple[Path, Path]:
    """The grid and the images: ``output=<stem>`` + ``.png`` / ``.npz``, or ``<ckpt>_<name>.*`` beside
    the checkpoint, the latter checked now (its name is known only once the model is)."""
    if cfg.output:
        return stem_paths(Path(cfg.output))  # checked before the checkpoint was read
    paths = stem_paths(Path(cfg.ckpt_path).with_name(f"{Path(cfg.ckpt_path).stem}_{name}"))
    check_output_files(paths, None, inputs=[cfg.ckpt_path])
    return paths


def run(cfg: DictConfig) -> tuple[Path, Path]:
    check_generate(cfg)
    model = load_model(cfg.ckpt_path, map_location=cfg.device)
    check_labels(model, cfg)
    if cfg.interpolate:
        return run_interpolation(cfg, model)
    num_samples = cfg.num_samples
    labels = asked_labels(model, num_samples, cfg.label, cfg.labels)
    which = "all" if labels is not None and cfg.label is None else (f"label{cfg.label}" if labels is not None else "uncond")
    paths = output_paths(cfg, f"n{num_samples}_{which}_seed{cfg.seed}")
    noise = torch.randn(num_samples, model.latent_dim, generator=torch.Generator().manual_seed(int(cfg.seed)))
    images = generate(model, noise, labels, cfg.batch_size).cpu()
    # One row per class when every class is asked for; otherwise as square as possible.
    nrow = math.ceil(num_samples / model.num_classes) if which == "all" else math.ceil(math.sqrt(num_samples))
    return write(paths, images, labels, nrow)


def run_interpolation(cfg: DictConfig, model) -> tuple[Path, Path]:
    """``interpolate=true``: ``rows`` latent walks of ``steps`` images (``src/interpolation.py``);
    a conditional model walks once, in every class's row (or ``rows`` walks of ``label=K``)."""
    rows, steps = cfg.rows, cfg.steps
    which = "uncond" if not model.conditional else ("all" if cfg.label is None else f"label{cfg.label}")
    shown_rows = model.num_classes if which == "all" else rows
    paths = output_paths(cfg, f"interp_r{shown_rows}_s{steps}_{which}_seed{cfg.seed}")
    noise, labels = latent_walk(rows, steps, model.latent_dim, model.num_classes, cfg.label, seed=int(cfg.seed))
    images = generate(model, noise, labels, cfg.batch_size).cpu()
    return write(paths, images, labels, steps)


def write(paths: tuple[Path, Path], images: torch.Tensor, labels: torch.Tensor | None, nrow: int) -> tuple[Path, Path]:
    """The grid (``nrow`` images a row) as PNG and the images with their asked labels as ``.npz``."""
    png, npz = paths
    png.parent.mkdir(parents=True, exist_ok=True)  # checked writable before the work (run)
    save_image(make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1)), png)
    asked = labels.numpy() if labels is not None else np.full(len(images), -1, dtype=np.int64)
    np.savez_compressed(npz, images=to_uint8(images).squeeze(1).numpy(), labels=asked)
    return png, npz


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    release_stderr()
    with user_errors("src.generate"), cpu_threads(cfg.get("threads")):
        png, npz = run(cfg)
    print(f"wrote {png} and {npz}")


if __name__ == "__main__":
    imports_done()
    run_entry_point(main)
