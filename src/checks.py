"""Input checks that run before a run builds or writes anything, so a mistake costs one line.

Hydra runs :class:`CheckOutputDir` (``conf/hydra/default.yaml``) before it creates the run
folder; ``train()`` runs the others before it instantiates the trainer.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.augment import AUGMENTATIONS, parse_policy
from src.data.datamodule import LOADERS
from src.errors import ConfigError, release_stderr, user_errors
from src.losses import LOSSES

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


def _augmentation_policy(value: Any) -> bool:
    if value is None:
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
    ("model.n_critic", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer (D steps per G step)"),
    ("model.label_smoothing", lambda v: _number(v) and 0 <= v < 1, "in [0, 1)"),
    ("model.lr_decay_fraction", lambda v: _number(v) and 0 <= v <= 1, "in [0, 1]: the last share of trainer.max_epochs that decays (0 = constant)"),
    ("model.diffaugment", _augmentation_policy, f"null (off) or a list of {AUGMENTATIONS}, e.g. [translation,cutout]"),
    ("model.instance_noise", lambda v: _number(v) and v >= 0, "zero (off) or a positive standard deviation"),
    ("model.ema_decay", lambda v: v is None or (_number(v) and 0 < v < 1), "in (0, 1), or null (off)"),
    ("model.discriminator.dropout", lambda v: _number(v) and 0 <= v < 1, "in [0, 1) (0 = off)"),
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


# What shows that a run already wrote into a folder (Hydra's own .hydra/ and train.log don't count).
RUN_FILES = ("checkpoints/*.ckpt", "tensorboard/events.out.tfevents.*", "metrics.json")
# What overwrite=true deletes before a new run writes there.
RUN_OUTPUTS = ("checkpoints", "tensorboard", "samples", "metrics.json", "job_result.json", "error.txt")


def existing_run(folder: str | os.PathLike) -> str | None:
    """The first file in ``folder`` that a run wrote (relative), or None for a fresh folder."""
    folder = Path(folder)
    for pattern in RUN_FILES:
        found = sorted(folder.glob(pattern))
        if found:
            return str(found[0].relative_to(folder))
    return None


def check_fresh_run_dir(folder: str | os.PathLike, ckpt_path: str | None, overwrite: bool) -> None:
    """Refuse to start a run over another run's files, unless resuming it or asked to overwrite.

    A resume in the same folder (``ckpt_path=last``, or a checkpoint inside it) continues that
    run; ``overwrite=true`` deletes its outputs first (``clear_run_dir``).
    """
    found = existing_run(folder)
    if found is None or overwrite:
        return
    if ckpt_path == "last" or (ckpt_path and Path(folder).resolve() in Path(ckpt_path).resolve().parents):
        return
    raise ConfigError(
        f"{folder} already holds a run ({found}): resume it with ckpt_path=last, or start over in another folder "
        "(hydra.run.dir=...) or here with overwrite=true (deletes its checkpoints, TensorBoard logs and samples)"
    )


def clear_run_dir(folder: str | os.PathLike) -> None:
    """``overwrite=true``: delete what an earlier run wrote in ``folder`` (not Hydra's .hydra/)."""
    for name in RUN_OUTPUTS:
        path = Path(folder) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


_HELD_LOCKS: dict[Path, FileLock] = {}


def _owner_file(folder: Path) -> Path:
    return folder / ".run.owner"


def acquire_run_lock(folder: str | os.PathLike) -> bool:
    """Lock the run folder for this process (a no-op if it holds it already); False if it did.

    A second run started into the same folder is refused with a line naming the first one's
    process. The lock is the operating system's (``filelock``): it ends with the process, so a
    killed run leaves no stale lock.
    """
    folder = Path(folder).resolve()
    if folder in _HELD_LOCKS:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".run.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = _owner_file(folder).read_text().strip() if _owner_file(folder).is_file() else "another process"
        raise ConfigError(f"another run is using {folder} ({owner}): wait for it to end, or choose another folder (hydra.run.dir=...)") from None
    _HELD_LOCKS[folder] = lock
    _owner_file(folder).write_text(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return True


def release_run_lock(folder: str | os.PathLike) -> None:
    folder = Path(folder).resolve()
    lock = _HELD_LOCKS.pop(folder, None)
    if lock is not None:  # the lock files go too: a finished run leaves only its own files
        _owner_file(folder).unlink(missing_ok=True)
        Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()


@contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the run folder's lock for the block (unless this process holds it already: then keep it)."""
    acquired = acquire_run_lock(folder)
    try:
        yield
    finally:
        if acquired:
            release_run_lock(folder)


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


class CheckOutputDir(HydraCallback):
    """Hydra creates the run folder and writes its config there before ``main`` runs: check the
    folder first (writable, not another run's, not in use), for a one-line error and nothing
    written. Only on rank zero: the other ranks of a DDP run share rank zero's folder."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()  # the config is composed: Hydra's own errors are behind us
        folder = self._resolve(config, "hydra.run.dir")
        with user_errors():  # the commands' one error boundary: one line, exit status 1
            check_output_dir(folder)
            if rank_zero_only.rank == 0:
                check_fresh_run_dir(folder, config.get("ckpt_path"), bool(config.get("overwrite")))
                acquire_run_lock(folder)  # held to the end of the process

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_lock(self._resolve(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()
        folder = self._resolve(config, "hydra.sweep.dir")
        with user_errors():
            check_output_dir(folder)
            if rank_zero_only.rank == 0 and not config.get("overwrite") and Path(folder).is_dir():
                runs = [job for job in sorted(Path(folder).iterdir()) if job.is_dir() and existing_run(job)]
                if runs:
                    raise ConfigError(
                        f"hydra.sweep.dir {folder} already holds the runs of a sweep ({runs[0].name}, ...): "
                        "choose another hydra.sweep.dir, or add overwrite=true to replace them"
                    )

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
