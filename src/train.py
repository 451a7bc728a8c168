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

from src import imports_done
from src.callbacks.checkpoints import AtomicCheckpointIO, CheckpointOnInterrupt, RunPosition, StoreModelConfig
from src.callbacks.hparams import HParamsSummary, run_hparams
from src.data.datamodule import step_counted
from src.devices import cpu_threads
from src.errors import (
    ConfigError,
    NonFiniteLossError,
    TrainingInterrupted,
    UserError,
    release_stderr,
    root_cause,
    run_entry_point,
    user_error,
    worker_error,
)
from src.preflight.outputs import check_output_dir
from src.preflight.training import check_config, check_launch, check_run
from src.run_folder import FolderTaken, check_fresh_run_dir, clear_run_dir, restore_refused_runs, run_folder_in_use, run_lock
from src.sweeps import infer_direction, record_interrupted_job, report_failed_job, resume_job

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


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Fit the configured model on the configured data; return the final logged metrics.

    ``extra_callbacks`` join the configured ones (for programmatic use: benchmarks, tests).
    Every input check (config values, output folder, data files, checkpoint) runs before the
    first file of the run is written.
    """
    check_config(cfg)
    check_output_dir(cfg.paths.output_dir)
    with run_lock(cfg.paths.output_dir) if rank_zero_only.rank == 0 else nullcontext():
        return _train(cfg, extra_callbacks)


def _train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback]) -> dict[str, float]:
    rank_zero = rank_zero_only.rank == 0
    if rank_zero:
        check_fresh_run_dir(cfg.paths.output_dir, cfg.get("ckpt_path"), bool(cfg.get("overwrite")))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    interruption, position = CheckpointOnInterrupt(), RunPosition()
    callbacks = [
        position,
        *_instantiate_dict(cfg.get("callbacks"), "callbacks"),
        StoreModelConfig(cfg.model),
        interruption,
        HParamsSummary(run_hparams(cfg)),
        *extra_callbacks,
    ]
    loggers = _instantiate_dict(cfg.get("logger"), "logger")
    # With data.batches_per_step=K, Lightning counts steps of K batches: it gets its step-counted settings divided by K.
    counted = step_counted(cfg.trainer, getattr(datamodule, "batches_per_step", 1))
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()], **counted)
    ckpt_path = check_run(cfg, model, datamodule, trainer, callbacks, rank_zero)
    if rank_zero:
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
        if multirun and cfg.get("ckpt_path") == "last" and (finished := resume_job(cfg)) is not None:
            return finished if math.isfinite(finished) else _worst(hydra_cfg, cfg.get("optimized_metric"))
        metrics = train(cfg)
    except TrainingInterrupted as err:  # the whole sweep stops too: that is what the signal asked for
        report_failed_job(str(err), multirun)
        if multirun:  # Hydra records no job that ends in SystemExit: record this one's row here
            record_interrupted_job(hydra_cfg, cfg.get("optimized_metric"))
        raise SystemExit(err.exit_code) from None
    except Exception as err:
        shown = err if isinstance(err, NonFiniteLossError) else user_error(err)
        if shown is None:
            raise
        report_failed_job(str(shown), multirun, foreign=isinstance(shown, FolderTaken))
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
    imports_done()
    try:
        run_entry_point(main)
    except KeyboardInterrupt:  # Ctrl-C before training started (during it, the run saves and says so)
        restore_refused_runs()  # an existing run folder is left as it was
        print(f"error: {STARTUP_INTERRUPTED}", file=sys.stderr)
        raise SystemExit(130) from None
