"""What ``python -m src.train`` accepts, checked before a run builds or writes anything.

    check_config(cfg)                     # the values: types, ranges, combinations, the trainer
    check_launch(cfg, multirun, launcher) # DDP under a sweep
    ckpt_path = check_run(cfg, model, datamodule, trainer, callbacks)   # the built parts agree, the data and the checkpoint read

So a mistake costs one ``error:`` line, and the run folder is left as it was. The run folder's
own rules (another run there, its lock, ``overwrite``) are ``src/run_folder.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from src.augment import AUGMENTATIONS, parse_policy
from src.callbacks.checkpoints import newest_checkpoint_callback
from src.callbacks.quality import SampleQuality
from src.checkpoint import check_resumable, check_same_model, read_checkpoint
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
    ("data.batches_per_step", True, False),
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


def check_config(cfg: DictConfig) -> None:
    """Every value of a training config, checked before anything is built or written: the one
    place that says what the config accepts (``train()`` runs it first; so do the tests of each rule)."""
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
    check_batches_per_step(cfg)


def check_batches_per_step(cfg: DictConfig) -> None:
    """``data.batches_per_step=K > 1``: Lightning then counts steps of K batches, so the trainer's
    settings that count batches must be whole steps (``datamodule.step_counted`` divides them), and
    the epoch's batches come from the tensor loader, which groups them."""
    k = OmegaConf.select(cfg, "data.batches_per_step", default=1)
    if k == 1:
        return
    hint = f"data.batches_per_step={k}"
    if OmegaConf.select(cfg, "data.loader", default="tensor") != "tensor":
        raise ConfigError(
            f"{hint} groups the tensor loader's batches; data.loader={OmegaConf.select(cfg, 'data.loader')} has none to group: use data.loader=tensor"
        )
    trainer = cfg.get("trainer") or {}
    every = trainer.get("log_every_n_steps")
    every = 50 if every is None else every  # Lightning's default
    if every % k:
        raise ConfigError(
            f"trainer.log_every_n_steps={every} is not a whole number of steps of {hint} batches: "
            f"pick a multiple of {k}, e.g. trainer.log_every_n_steps={max(k, every // k * k)}"
        )
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool) and interval % k:
        raise ConfigError(f"trainer.val_check_interval={interval} batches is not a whole number of steps of {hint} batches: pick a multiple of {k}")
    max_steps = trainer.get("max_steps")
    if max_steps not in (None, -1):
        raise ConfigError(
            f"trainer.max_steps={max_steps} counts optimizer steps, which Lightning checks once per step of {hint} batches "
            "(it would stop late): use trainer.max_epochs, or data.batches_per_step=1"
        )
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, float) and limit != 1.0:
        raise ConfigError(
            f"trainer.limit_train_batches={limit}: with {hint}, give the number of batches to train per epoch (an integer), not a fraction"
        )


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
    several = several_devices(devices, unknown=False)
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


def several_devices(devices: Any, unknown: bool) -> bool:
    """Whether ``trainer.devices`` may ask for more than one device (-1, all the machine has, does);
    ``auto`` is ``unknown``: the launch check counts it as several, the trainer check not."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool):
        return devices == -1 or devices > 1
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if isinstance(devices, str) and "," in devices:
        return len([part for part in devices.split(",") if part.strip()]) > 1
    return unknown


def check_launch(cfg: DictConfig, multirun: bool, launcher: str = "") -> None:
    """A DDP strategy that relaunches the script would relaunch the whole sweep in every rank.

    ``launcher`` is the Hydra launcher's ``_target_``: under the submitit SLURM launcher SLURM
    starts one process per device, so Lightning relaunches nothing and DDP is fine.
    """
    strategy = str(cfg.trainer.get("strategy", "auto"))
    devices = cfg.trainer.get("devices", 1)
    several = several_devices(devices, unknown=True) or int(cfg.trainer.get("num_nodes", 1)) > 1
    if "SlurmLauncher" in launcher:
        if not isinstance(devices, int):
            raise ConfigError(
                f"hydra/launcher=slurm starts one task per device and needs trainer.devices as a number of GPUs per node, got {devices!r}"
            )
        return
    if multirun and several and strategy.startswith("ddp") and not strategy.startswith("ddp_spawn"):
        raise ConfigError(
            f"trainer.strategy={strategy} relaunches this script once per device, which would rerun the whole --multirun sweep in every rank: "
            "sweep with trainer.strategy=ddp_spawn_find_unused_parameters_true, on SLURM with hydra/launcher=slurm, "
            "or launch each run on its own (torchrun / srun)"
        )


def check_optimizers(model: L.LightningModule, model_config: DictConfig) -> None:
    """Build the optimizers once, before any file is written: arguments the configured class
    does not take (``model.optimizer._target_=torch.optim.SGD`` keeps Adam's ``betas``) are one line."""
    try:
        model.build_optimizers()
    except (TypeError, ValueError) as err:
        target = OmegaConf.select(model_config, "optimizer._target_")
        given = sorted(k for k in (model_config.get("optimizer") or {}) if not str(k).startswith("_"))
        raise ConfigError(
            f"model.optimizer ({target}) refuses its arguments {given}: {str(err).strip().splitlines()[0]}; "
            "drop the ones it does not take, e.g. ~model.optimizer.betas"
        ) from None


def check_run(
    cfg: DictConfig,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    trainer: L.Trainer,
    callbacks: Sequence[L.Callback],
    rank_zero: bool = True,
) -> str | None:
    """The built parts against each other and against the files they will read, before any is
    written: the model fits the data, its optimizers take their arguments, the data files read
    (on rank zero: other ranks read them inside ``fit``, after rank zero has provisioned them), the
    quality callback's classifier and real side load, and the checkpoint to resume from is this
    model's. Returns that checkpoint's path (``ckpt_path`` resolved)."""
    if model.num_classes not in (None, datamodule.num_classes):
        raise ConfigError(f"the model is conditional on {model.num_classes} classes but {datamodule.name} has {datamodule.num_classes}")
    check_optimizers(model, cfg.model)
    if tuple(model.generator.img_shape) != tuple(datamodule.img_shape):
        raise ConfigError(
            f"model.generator.img_shape is {list(model.generator.img_shape)} but {datamodule.name}'s images are {list(datamodule.img_shape)}"
        )
    if rank_zero:
        # Lightning would first create the loggers' files, then read the data: check the data first.
        datamodule.prepare_data()
        datamodule.setup("fit")
        for callback in callbacks:
            if isinstance(callback, SampleQuality):  # the classifier and the real side, before any file
                callback.prepare(datamodule, model)
    return resume_checkpoint(cfg.get("ckpt_path"), trainer, model, cfg.model)


def resume_checkpoint(ckpt_path: str | None, trainer: L.Trainer, model: L.LightningModule, model_config: DictConfig) -> str | None:
    """The checkpoint to resume from, checked: readable with ``weights_only=True`` and from this model.

    ``last`` means the newest ``last*.ckpt`` of the run's ModelCheckpoint, as in Lightning; with
    none there, training starts from scratch (Lightning warns).
    """
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if ckpt_path == "last":
        callback = newest_checkpoint_callback(trainer)
        folder = Path(callback.dirpath) if callback is not None and callback.dirpath else None
        candidates = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if folder and folder.is_dir() else []
        if not candidates:
            return "last"
        path = candidates[-1]
    checkpoint = read_checkpoint(path)
    check_resumable(checkpoint, path)
    check_same_model(checkpoint, path, model, model_config)
    return str(path)
