"""TEMPORARY stand-in for the reliability branch's ``src/checkpoint.py`` (same API), so that
``src.generate`` / ``src.evaluate`` and their tests run in this branch. Replace it with theirs.

``load_model(ckpt_path, map_location="cpu") -> GAN`` rebuilds the model from the config stored
in the checkpoint under ``"model_config"`` (by ``StoreModelConfig``, configured in
``conf/callbacks/default.yaml`` here) and loads its weights; any problem is a ``CheckpointError``
with a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not one of this project's."""


class StoreModelConfig(L.Callback):
    """Puts the model's config into every checkpoint, so a checkpoint alone rebuilds the model."""

    def __init__(self, model: DictConfig | dict) -> None:
        self.model_config = OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else dict(model)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["model_config"] = self.model_config


def load_model(ckpt_path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means the same to the user
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a lightning-gan checkpoint (it holds no model config)")
    model = instantiate(checkpoint["model_config"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored model config ({str(err).splitlines()[0]})") from None
    return model.to(map_location).eval()
