"""Input checks that run before a run builds or writes anything, so a mistake costs one line.

Hydra runs :class:`CheckOutputDir` (``conf/hydra/default.yaml``) before it creates the run
folder; ``train()`` runs the others before it instantiates the trainer.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError

# Numbers a user types on the command line, checked before anything is built or written:
# (key, integer?, may be null). Each must be positive; a missing key is not checked.
NUMBERS = (
    ("data.batch_size", True, False),
    ("data.val_batch_size", True, False),
    ("trainer.max_epochs", True, True),  # null: Lightning's default
    ("trainer.log_every_n_steps", True, True),
    ("model.lr", False, False),
    ("model.lr_g", False, True),
    ("model.lr_d", False, True),
    ("model.generator.latent_dim", True, False),
    ("model.sample_rows", True, False),
    ("model.sample_cols", True, False),
    ("callbacks.sample_quality.num_samples", True, False),
    ("callbacks.sample_quality.every_n_epochs", True, False),
    ("callbacks.sample_quality.batch_size", True, False),
    ("callbacks.sample_grid.every_n_epochs", True, False),
    ("threads", True, True),  # null: torch's default
)

_ABSENT = object()


def check_numbers(cfg: DictConfig) -> None:
    """A wrong type (``model.lr=abc``) or a non-positive size is one clear line, not a traceback later."""
    for key, integer, nullable in NUMBERS:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or (value is None and nullable):
            continue
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
            raise ConfigError(f"{key} must be a positive {'integer' if integer else 'number'}, got {value}")
    seed = OmegaConf.select(cfg, "seed", default=0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    callbacks = cfg.get("callbacks") or {}
    if callbacks.get("best_checkpoint") and not callbacks.get("sample_quality"):
        raise ConfigError(
            "callbacks.best_checkpoint keeps the lowest val/fid, which callbacks.sample_quality computes: "
            "to train without scoring, remove both (~callbacks.sample_quality ~callbacks.best_checkpoint)"
        )


def check_output_dir(path: str | os.PathLike) -> None:
    """Fail before training, not at the first checkpoint, if the run folder can't be written."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"output folder {path} is not writable ({err.strerror or err})") from None


class CheckOutputDir(HydraCallback):
    """Hydra creates the run folder before ``main`` runs: check it first, for a one-line error."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(self._resolve(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(self._resolve(config, "hydra.sweep.dir"))

    @staticmethod
    def _resolve(config: DictConfig, key: str) -> str:
        """The folder's path. Its ``${hydra:runtime.choices.model}`` needs Hydra's HydraConfig, which
        Hydra sets only as the job starts, after this callback: set it from the same config as
        Hydra's own ``show_cfg`` does (writable afterwards). Resolving on that same object also
        caches its ``${now:...}``, so the folder checked is the folder Hydra then creates."""
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
            OmegaConf.set_readonly(config.hydra, None)
        return str(OmegaConf.select(config, key))

    @staticmethod
    def _check(path: str) -> None:
        try:
            check_output_dir(path)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
