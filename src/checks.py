"""Input checks of a training config and of the files a command will write, run before a run
builds or writes anything, so a mistake costs one line. The run folder's own rules (a run there,
its lock, overwrite) are ``src/run_folder.py``'s.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.augment import AUGMENTATIONS, parse_policy
from src.data.datamodule import LOADERS
from src.errors import ConfigError
from src.losses import LOSSES
from src.models.mlp import INITS

MIN_SAMPLES = 10  # the k-NN radii of density/coverage (k = 5) need more than 5 images on each side

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


# The same for the commands that read a checkpoint (conf/generate.yaml, conf/evaluate.yaml).
COMMAND_NUMBERS = (
    ("num_samples", True, False),
    ("batch_size", True, False),
    ("rows", True, False),
    ("steps", True, False),
    ("threads", True, True),
)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _widths(value: Any) -> bool:
    return (OmegaConf.is_list(value) or isinstance(value, list)) and all(
        isinstance(width, int) and not isinstance(width, bool) and width > 0 for width in value
    )


def _augmentation_policy(value: Any) -> bool:
    if value is None or (OmegaConf.is_list(value) and len(value) == 0):
        return True
    if not (isinstance(value, str) or OmegaConf.is_list(value)) or not value:
        return False
    try:
        parse_policy(value)
    except ValueError:
        return False
    return True


# The values a training config accepts beyond "a positive number" (NUMBERS), in one place: the
# constructors take them as given. (key, accepts(value), what it accepts); a missing key is not checked.
RULES = (
    ("model.loss", lambda v: v in LOSSES, f"one of {LOSSES}"),
    ("model.gp_weight", lambda v: _number(v) and v > 0, "a positive number"),
    ("model.r1_gamma", lambda v: _number(v) and v >= 0, "zero (off) or a positive number"),
    ("model.r1_every", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer (R1 on every N-th batch)"),
    ("model.n_critic", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer (D steps per G step)"),
    ("model.label_smoothing", lambda v: _number(v) and 0 <= v < 1, "in [0, 1)"),
    ("model.lr_decay_fraction", lambda v: _number(v) and 0 <= v <= 1, "in [0, 1]: the last share of trainer.max_epochs that decays (0 = constant)"),
    ("model.diffaugment", _augmentation_policy, f"null (off) or a list of {AUGMENTATIONS}, e.g. [translation,cutout]"),
    ("model.instance_noise", lambda v: _number(v) and v >= 0, "zero (off) or a positive standard deviation"),
    ("model.ema_decay", lambda v: v is None or (_number(v) and 0 < v < 1), "in (0, 1), or null (off)"),
    ("model.discriminator.dropout", lambda v: _number(v) and 0 <= v < 1, "in [0, 1) (0 = off)"),
    ("model.generator.hidden_dims", lambda v: _widths(v), "a list of positive integers (the hidden layers' widths)"),
    ("model.discriminator.hidden_dims", lambda v: _widths(v), "a list of positive integers (the hidden layers' widths)"),
    ("model.generator.base_channels", lambda v: _widths([v]), "a positive integer"),
    ("model.discriminator.base_channels", lambda v: _widths([v]), "a positive integer"),
    ("model.generator.init", lambda v: v in INITS, f"one of {INITS}"),
    ("model.discriminator.init", lambda v: v in INITS, f"one of {INITS}"),
    ("data.loader", lambda v: v in LOADERS, f"one of {LOADERS}"),
    (
        "callbacks.sample_quality.num_samples",
        lambda v: isinstance(v, int) and v >= MIN_SAMPLES,
        f"an integer of at least {MIN_SAMPLES} (the k-NN metrics need more than 5 images)",
    ),
    ("callbacks.interpolation_grid.rows", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    (
        "callbacks.interpolation_grid.steps",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2,
        "an integer of at least 2 (a walk has two ends)",
    ),
)


def check_numbers(cfg: DictConfig, numbers: tuple[tuple[str, bool, bool], ...] = NUMBERS) -> None:
    """A wrong type (``model.lr=abc``) or a non-positive size is one clear line, not a traceback later."""
    for key, integer, nullable in numbers:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or (value is None and nullable):
            continue
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
            raise ConfigError(f"{key} must be a positive {'integer' if integer else 'number'}, got {value}")
    seed = OmegaConf.select(cfg, "seed", default=0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")


def validate(cfg: DictConfig) -> None:
    """Every value of a training config, checked before anything is built or written: the one
    place that says what the config accepts (``train()`` runs it; so do the tests of each rule)."""
    check_numbers(cfg)
    for key, accepts, what in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not accepts(value):
            raise ConfigError(f"{key} must be {what}, got {value!r}" if isinstance(value, str) else f"{key} must be {what}, got {value}")
    if OmegaConf.select(cfg, "model.label_smoothing", default=0) and OmegaConf.select(cfg, "model.loss") != "bce":
        raise ConfigError(
            f"model.label_smoothing softens the bce loss's real target; model.loss={OmegaConf.select(cfg, 'model.loss')} has no target to soften"
        )
    if OmegaConf.select(cfg, "model.lr_decay_fraction", default=0) and OmegaConf.select(cfg, "trainer.max_epochs", default=None) is None:
        raise ConfigError(
            "model.lr_decay_fraction decays the learning rate over the last share of trainer.max_epochs, which is null: "
            "set trainer.max_epochs, or model.lr_decay_fraction=0 for a constant rate"
        )
    if OmegaConf.select(cfg, "model.instance_noise", default=0) and OmegaConf.select(cfg, "trainer.max_epochs", default=None) is None:
        raise ConfigError(
            "model.instance_noise is annealed to 0 over trainer.max_epochs, which is null: set trainer.max_epochs, or model.instance_noise=0"
        )
    callbacks = cfg.get("callbacks") or {}
    if callbacks.get("best_checkpoint") and not callbacks.get("sample_quality"):
        raise ConfigError(
            "callbacks.best_checkpoint keeps the lowest val/fid, which callbacks.sample_quality computes: "
            "to train without scoring, remove both (~callbacks.sample_quality ~callbacks.best_checkpoint)"
        )
    check_trainer(cfg)


def check_trainer(cfg: DictConfig) -> None:
    """Trainer settings this module can't honour, refused before Lightning starts (and, for
    several devices, relaunches processes) rather than failing inside ``fit``."""
    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator}: torch sees no GPU on this machine; use trainer=cpu (or trainer.accelerator=auto)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps: this machine has no Apple GPU that torch can use; use trainer=cpu (or trainer.accelerator=auto)")
    strategy = str(trainer.get("strategy", "auto"))
    devices = trainer.get("devices", 1)
    several = (
        (isinstance(devices, int) and not isinstance(devices, bool) and devices not in (0, 1))
        or (isinstance(devices, str) and devices not in ("1", "auto"))
        or (OmegaConf.is_list(devices) and len(devices) > 1)
    )
    if several and not strategy.startswith("ddp"):
        raise ConfigError(
            f"trainer.devices={devices} needs the project's DDP strategy (G and D train in separate backward passes): "
            f"use trainer=ddp trainer.devices={devices} for GPUs, or trainer=ddp_cpu for CPU processes"
        )
    # Lightning refuses both under manual optimization, which this module uses (a D step and a G step per batch).
    clip = trainer.get("gradient_clip_val")
    if clip not in (None, 0, 0.0):
        raise ConfigError(
            f"trainer.gradient_clip_val={clip}: Lightning does not clip gradients under manual optimization (this module's two-optimizer step); "
            "keep D's gradients in check with model.r1_gamma=... or model.discriminator.spectral_norm=true (DCGAN), or the wgan_gp loss"
        )
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate not in (None, 1):
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate}: Lightning does not accumulate under manual optimization (this module's two-optimizer step); "
            "raise data.batch_size instead (or train on more devices)"
        )


def check_output_file(path: str | os.PathLike, key: str = "output") -> None:
    """Fail before the work, not after it, if a command's output file can't be written there."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"{key}={path} can't be written: {folder} is not a writable folder ({err.strerror or err})") from None


def check_output_dir(path: str | os.PathLike) -> None:
    """Fail before training, not at the first checkpoint, if the run folder can't be written."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"output folder {path} is not writable ({err.strerror or err})") from None


def check_optuna_storage(url: str | None) -> None:
    """An Optuna ``storage=sqlite:///<file>`` must be an SQLite database, or a new file in a folder
    that can be written: refused in one line before the search opens it (SQLAlchemy's traceback otherwise)."""
    if not url or not str(url).startswith("sqlite:///"):
        return
    path = Path(str(url)[len("sqlite:///") :].split("?", 1)[0])
    key = "hydra.sweeper.storage"
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{key}={url}: {path} is not a file; give the path of an Optuna SQLite file")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as err:
            raise ConfigError(
                f"{key}={url}: {path} is not an SQLite database ({err}); give another file, or delete this one to start a new study"
            ) from None
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{key}={url}: {path} can't be written; give a file the search can write")
        return
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        what = "is not a folder" if folder.exists() else "does not exist"
        if not folder.exists() or folder.is_file():
            what = "is a file, not a folder" if folder.is_file() else what
        else:
            what = "can't be written"
        raise ConfigError(f"{key}={url}: {folder} {what}; give a path in a writable folder (e.g. sqlite:///outputs/search.db)")
