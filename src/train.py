"""Train a GAN or conditional GAN: Hydra composes ``conf/``, Lightning trains.

python -m src.train                                   # seed GAN on Fashion-MNIST
python -m src.train model=cgan data=mnist             # seed cGAN on MNIST
python -m src.train trainer=cpu trainer.max_epochs=5 data.batch_size=128
python -m src.train --multirun model.lr=1e-4,2e-4,5e-4
tensorboard --logdir outputs --samples_per_plugin images=1000
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing import ProcessRaisedException

from src.callbacks import HParamsSummary, RunPosition
from src.checkpoint import (
    AtomicCheckpointIO,
    CheckpointOnInterrupt,
    StoreModelConfig,
    check_resumable,
    check_same_model,
    newest_checkpoint_callback,
    read_checkpoint,
)
from src.checks import check_output_dir, validate
from src.devices import cpu_threads
from src.errors import ConfigError, NonFiniteLossError, TrainingInterrupted, UserError, release_stderr, root_cause, run_entry_point, user_error
from src.metrics.callback import SampleQuality
from src.run_folder import (
    FolderTaken,
    check_fresh_run_dir,
    clear_run_dir,
    restore_refused_run,
    restore_refused_runs,
    run_folder_in_use,
    run_lock,
)
from src.sweeps import JOB_ERROR, infer_direction, leave_alone, record_job

log = logging.getLogger(__name__)

# Lightning 2.6 itself still builds torch's deprecated LeafSpec on every step; nothing for users to do.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def build(node: DictConfig, key: str, **kwargs):
    """``instantiate(node)``; a class that refuses its arguments (a key it does not take, such as
    ``+trainer.foo=1``, or a wrong value) is one ``error:`` line naming the config key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = root_cause(err)
        # Lightning's MisconfigurationException is its word for a setting it can't honour here.
        if isinstance(cause, UserError) or not isinstance(cause, (TypeError, ValueError, MisconfigurationException)):
            raise
        target = node.get("_target_", "?")
        raise ConfigError(f"{key} ({target}) refuses its settings: {str(cause).strip().splitlines()[0]}") from None


def _instantiate_dict(section: DictConfig | None, group: str) -> list:
    """Instantiate every entry of a config group that holds named objects (callbacks, loggers)."""
    if not section:
        return []
    return [build(entry, f"{group}.{name}") for name, entry in section.items() if entry and "_target_" in entry]


# What a run's HParams row shows besides the config choices, the learning rates, betas and EMA
# (shown as they act) and the job's own overrides: the other values a sweep varies most.
HPARAM_KEYS = (
    "data.batch_size",
    "model.loss",
    "model.n_critic",
    "model.r1_gamma",
    "model.r1_every",
    "model.label_smoothing",
    "model.lr_decay_fraction",
    "model.diffaugment",
    "model.instance_noise",
    "model.generator.init",
    "trainer.max_epochs",
    "seed",
)


def _hparam_value(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value)


def run_hparams(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The run's hyperparameters for TensorBoard's HParams tab: scalars only, none null."""
    values: dict[str, bool | int | float | str] = {}
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        values |= {group: str(choices[group]) for group in ("model", "data", "trainer", "experiment") if choices.get(group)}
    values["data.name"] = str(cfg.data.name)
    model = cfg.model
    lr = float(model.lr)
    values["model.lr"] = lr
    values["model.lr_g"] = float(model.get("lr_g") or lr)  # null: model.lr
    values["model.lr_d"] = float(model.get("lr_d") or lr)
    betas = OmegaConf.select(cfg, "model.optimizer.betas")
    if betas is not None and len(betas) == 2:
        values["model.beta1"], values["model.beta2"] = float(betas[0]), float(betas[1])
    values["model.ema_decay"] = float(model.get("ema_decay") or 0.0)  # null (off) is decay 0: samples from G itself
    for key in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            values[key] = _hparam_value(value)
    if HydraConfig.initialized():  # and whatever this job's command line set (what a sweep varies)
        for override in HydraConfig.get().overrides.task:
            key = override.split("=", 1)[0].lstrip("+~")
            if key in values or key.startswith("hydra.") or key in ("paths.data_dir", "paths.output_dir", "ckpt_path"):
                continue
            value = OmegaConf.select(cfg, key)
            if value is not None:
                values[key] = _hparam_value(value)
    return values


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


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Fit the configured model on the configured data; return the final logged metrics.

    ``extra_callbacks`` join the configured ones (for programmatic use: benchmarks, tests).
    Every input check (config values, output folder, data files, checkpoint) runs before the
    first file of the run is written.
    """
    validate(cfg)
    check_output_dir(cfg.paths.output_dir)
    with run_lock(cfg.paths.output_dir) if rank_zero_only.rank == 0 else nullcontext():
        return _train(cfg, extra_callbacks)


def _train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback]) -> dict[str, float]:
    if rank_zero_only.rank == 0:
        check_fresh_run_dir(cfg.paths.output_dir, cfg.get("ckpt_path"), bool(cfg.get("overwrite")))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    if model.num_classes not in (None, datamodule.num_classes):
        raise ConfigError(f"the model is conditional on {model.num_classes} classes but {datamodule.name} has {datamodule.num_classes}")
    check_optimizers(model, cfg.model)
    if tuple(model.generator.img_shape) != tuple(datamodule.img_shape):
        raise ConfigError(
            f"model.generator.img_shape is {list(model.generator.img_shape)} but {datamodule.name}'s images are {list(datamodule.img_shape)}"
        )
    if rank_zero_only.rank == 0:
        # Lightning would first create the loggers' files, then read the data: check the data first.
        # Other ranks read it inside fit, after rank zero has provisioned it.
        datamodule.prepare_data()
        datamodule.setup("fit")
    interruption, position = CheckpointOnInterrupt(), RunPosition()
    callbacks = [
        position,
        *_instantiate_dict(cfg.get("callbacks"), "callbacks"),
        StoreModelConfig(cfg.model),
        interruption,
        HParamsSummary(run_hparams(cfg)),
        *extra_callbacks,
    ]
    if rank_zero_only.rank == 0:
        for callback in callbacks:
            if isinstance(callback, SampleQuality):  # the classifier and the real side, before any file
                callback.prepare(datamodule, model)
    loggers = _instantiate_dict(cfg.get("logger"), "logger")
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), trainer, model, cfg.model)
    if rank_zero_only.rank == 0:
        run_folder_in_use(cfg.paths.output_dir)  # every check has passed: the command's config stays
        if cfg.get("overwrite"):  # and now the earlier run's outputs go
            clear_run_dir(cfg.paths.output_dir)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        with cpu_threads(cfg.get("threads")):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except ProcessRaisedException as err:  # a spawned DDP worker's error (trainer=ddp_cpu)
        if (ours := worker_error(err)) is None:
            raise
        raise ours from None
    except (KeyboardInterrupt, SystemExit):  # Lightning ends a Ctrl-C with sys.exit(1), a SIGTERM with SIGTERMException
        if interruption.signal is None:
            raise
        where = position.describe()
        if interruption.diverged:
            saved = (
                f"; not saved: the weights of {' and '.join(interruption.diverged)} had become non-finite (the last end-of-epoch checkpoint stays)"
            )
        else:
            saved = f"; resume with ckpt_path={interruption.saved_path}" if interruption.saved_path else "; no checkpoint was written"
        raise TrainingInterrupted(f"training interrupted by {interruption.signal} {where}{saved}", interruption.signal) from None
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


USER_ERRORS = (UserError,)


def _error_classes(base: type) -> list[type]:
    return [base, *(sub for cls in base.__subclasses__() for sub in _error_classes(cls))]


def worker_error(err: ProcessRaisedException) -> Exception | None:
    """The project's error that a spawned worker raised, rebuilt in the parent; None for others.

    torch sends only the worker's formatted traceback across the process boundary, whose last
    line is ``module.Class: message``: so a diverged ``trainer=ddp_cpu`` run ends in the same
    one-line error as a single-process one, and a sweep goes on past it.
    """
    known = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in (NonFiniteLossError, *_error_classes(UserError))}
    lines = str(err).strip().splitlines()
    name, _, message = (lines[-1] if lines else "").partition(": ")
    return known[name](message) if name in known else None


def check_launch(cfg: DictConfig, multirun: bool, launcher: str = "") -> None:
    """A DDP strategy that relaunches the script would relaunch the whole sweep in every rank.

    ``launcher`` is the Hydra launcher's ``_target_``: under the submitit SLURM launcher SLURM
    starts one process per device, so Lightning relaunches nothing and DDP is fine.
    """
    strategy = str(cfg.trainer.get("strategy", "auto"))
    devices = cfg.trainer.get("devices", 1)
    several = devices not in (1, "1") or int(cfg.trainer.get("num_nodes", 1)) > 1
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


def _fail_job(message: str, multirun: bool, foreign: bool = False) -> None:
    """Print the one-line error; in a sweep also leave it in the job folder for its summary row,
    unless the folder is another run's (``foreign``): then nothing is written there."""
    print(f"error: {message}", file=sys.stderr)
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    if not multirun:
        restore_refused_run(job_dir)  # a refused command leaves the run folder as it was
        return
    if foreign:
        leave_alone(job_dir)
        return
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / JOB_ERROR).write_text(message + "\n")


def _worst(hydra_cfg: DictConfig, metric: str | None) -> float:
    """What a failed or diverged job returns to the sweeper: the worst value, not NaN.

    Hydra's Optuna sweeper (1.3.0) ends the whole search in a traceback on a NaN: Optuna refuses
    it, and the sweeper's retry as a failed trial passes the value again, which Optuna refuses
    too (hydra-ecosystem/hydra#2237; the fix, #3451, is in no release yet). An infinite value is
    a completed trial that ranks last. The summary row still says failed or diverged, and why.
    """
    direction = OmegaConf.select(hydra_cfg, "sweeper.direction") or infer_direction(metric)
    return -math.inf if str(direction).lower().endswith("maximize") else math.inf


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The entry point. In a ``--multirun`` a job that diverges or gets a bad value fails alone:
    it returns the worst value (``_worst``) to the sweeper, its summary row says why, the sweep goes on."""
    release_stderr()
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check_launch(cfg, multirun=multirun, launcher=str(hydra_cfg.launcher.get("_target_", "")))
        metrics = train(cfg)
    except TrainingInterrupted as err:  # the whole sweep stops too: that is what the signal asked for
        _fail_job(str(err), multirun)
        if multirun:  # Hydra records no job that ends in SystemExit: record this one's row here
            direction = OmegaConf.select(hydra_cfg, "callbacks.sweep_summary.direction") or infer_direction(cfg.get("optimized_metric"))
            record_job(hydra_cfg, cfg.get("optimized_metric"), "interrupted", math.nan, list(hydra_cfg.overrides.task), direction)
        raise SystemExit(err.exit_code) from None
    except Exception as err:
        shown = err if isinstance(err, NonFiniteLossError) else user_error(err)
        if shown is None:
            raise
        _fail_job(str(shown), multirun, foreign=isinstance(shown, FolderTaken))
        if multirun:
            return _worst(hydra_cfg, cfg.get("optimized_metric"))
        raise SystemExit(1) from None
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = metrics.get(name, math.nan)
    log.info("%s = %s", name, value)
    return value if math.isfinite(value) else _worst(hydra_cfg, name)


STARTUP_INTERRUPTED = "interrupted by Ctrl-C while starting, before the first batch: nothing was trained or saved"


if __name__ == "__main__":
    try:
        run_entry_point(main)
    except KeyboardInterrupt:  # Ctrl-C before training started (during it, the run saves and says so)
        restore_refused_runs()  # an existing run folder is left as it was
        print(f"error: {STARTUP_INTERRUPTED}", file=sys.stderr)
        raise SystemExit(130) from None
