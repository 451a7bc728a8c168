"""TensorBoard's HParams row of a run: which values it shows, and the callback that writes it."""

from __future__ import annotations

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

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
            if key in values or key.startswith("hydra.") or key in ("data_dir", "paths.output_dir", "ckpt_path"):
                continue
            value = OmegaConf.select(cfg, key)
            if value is not None:
                values[key] = _hparam_value(value)
    return values


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
