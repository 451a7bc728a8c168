"""The adversarial training system: one LightningModule that owns G, D and their two optimizers.

G and D are plain ``nn.Module``s (``src/models``); this module knows nothing of their
architecture beyond ``latent_dim`` and ``num_classes`` (``None`` = unconditional). The loss
(``src/losses.py``) and the stabilizers are constructor arguments, so every variant is a config
delta on this one class::

    python -m src.train model=dcgan model.loss=hinge model.ema_decay=0.999
    python -m src.train experiment=dcgan_wgan_gp_mnist    # model.loss=wgan_gp model.n_critic=5
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch import nn

from src import losses
from src.augment import diff_augment, noise_std, parse_policy
from src.data.loaders import BatchGroup
from src.devices import skip_nvml_probe_without_gpu
from src.diagnostics import collapse_diagnostics
from src.ema import GeneratorEma
from src.errors import ConfigError, NonFiniteLossError

OptimizerFactory = Callable[..., torch.optim.Optimizer]
# The training figures the progress bar shows; the rest (penalties, src/diagnostics.py) go to the loggers only.
PROGRESS_BAR = ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake")


def decay_epochs(fraction: float, max_epochs: int) -> int:
    """How many of the last epochs decay: ``fraction`` of ``max_epochs``, rounded half up. A share,
    not a count, so a shortened run (``trainer.max_epochs=3``) decays over the same share of itself."""
    return math.floor(fraction * max_epochs + 0.5)


def linear_decay(epoch: int, max_epochs: int, decaying: int) -> float:
    """The learning rate's factor in ``epoch`` (0-based): 1 until the last ``decaying`` epochs of
    ``max_epochs``, then ``decaying / (decaying + 1)``, ... down to ``1 / (decaying + 1)`` in the
    last one (pix2pix / CycleGAN's linear decay, whose last epoch still trains)."""
    return min(1.0, (max_epochs - epoch) / (decaying + 1))


def logs_batch(trainer: L.Trainer, step_number: int) -> bool:
    """Whether the loggers write the ``step_number``-th training step (1-based, counted over
    epochs; a step trains one batch, or ``data.batches_per_step`` of them): Lightning's rule (every
    ``log_every_n_steps``-th step, and the step that stops training), from public attributes, with
    the module's own step count (``GAN.steps_trained``, kept in checkpoints as Lightning keeps its
    loop's). Callbacks ask it in ``on_train_batch_start`` with ``steps_trained + 1``. A
    ``barebones`` Trainer (bench/bench.py's Lightning floor) logs nothing: its
    ``log_every_n_steps`` is 0."""
    every = trainer.log_every_n_steps
    return bool(every) and (step_number % every == 0 or trainer.should_stop)


def per_rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed seed for one (run, epoch, rank): ranks draw different noise, resumes the same."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class GAN(L.LightningModule):
    """A GAN trained with manual optimization; non-saturating BCE on logits by default.

    Per batch: draw z (and random labels for a conditional model), generate the fakes once,
    take one D step on ``fake.detach()``, then, on every ``n_critic``-th batch, one G step
    through the updated D. Each step runs inside ``toggled_optimizer``, so the G step computes
    no gradients for D's weights. ``trainer.global_step`` counts both optimizer steps: two per
    batch when ``n_critic=1``.

    Stabilizers, all off in this constructor's defaults (the seeds' training; the configs turn
    on what was measured to help): ``loss`` (``bce``, ``hinge``,
    ``wgan_gp`` with its gradient penalty weighted ``gp_weight``), ``r1_gamma`` (R1 penalty on
    real images; ``r1_every=N`` computes it on every N-th batch only, scaled by N, StyleGAN2's lazy
    regularization), ``label_smoothing`` (one-sided, bce only), ``ema_decay`` (an exponential moving
    average of G's weights, used by ``sample``), ``lr_g``/``lr_d`` (TTUR), ``lr_decay_fraction``
    (both rates fall linearly over that last share of ``trainer.max_epochs``: :func:`decay_epochs`,
    :func:`linear_decay`), ``diffaugment`` (a DiffAugment policy such as ``["translation", "cutout"]``
    applied to every image D sees) and ``instance_noise`` (the starting standard deviation of
    Gaussian noise on D's inputs, annealed to 0 over ``trainer.max_epochs``; both in
    ``src/augment.py``). ``torch_compile`` compiles G and D with ``torch.compile``.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer: OptimizerFactory,
        lr: float = 2e-4,
        lr_g: float | None = None,
        lr_d: float | None = None,
        seed: int = 0,
        sample_rows: int = 10,
        sample_cols: int = 10,
        loss: str = "bce",
        gp_weight: float = 10.0,
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        n_critic: int = 1,
        label_smoothing: float = 0.0,
        ema_decay: float | None = None,
        lr_decay_fraction: float = 0.0,
        diffaugment: str | list[str] | None = None,
        instance_noise: float = 0.0,
        torch_compile: bool = False,
    ) -> None:
        super().__init__()
        if generator.num_classes != discriminator.num_classes:
            raise ConfigError(f"model: generator has num_classes={generator.num_classes} but discriminator has {discriminator.num_classes}")
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator", "optimizer"], logger=False)
        self.generator = generator
        self.discriminator = discriminator
        self.optimizer_factory = optimizer
        self.augmentations = parse_policy(diffaugment)
        self.latent_dim: int = generator.latent_dim
        self.num_classes: int | None = generator.num_classes
        # One D pass over real and fake together is only exact when no D layer mixes the rows of
        # a batch; a D with batch statistics (BatchNorm) sees the two batches apart.
        self.d_mixes_batch_rows = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules())
        # The EMA of G (src/ema.py, a torch AveragedModel), held as a submodule so that it is
        # saved in checkpoints and moved to the device with G. Lightning's EMAWeightAveraging
        # callback does not fit: it averages the whole LightningModule (D too), counts updates by
        # trainer.global_step (which the D steps advance too) and swaps the average into the
        # trained model for validation and at the end of training, so a resumed run would go on
        # training from the averaged G.
        self.generator_ema = None if ema_decay is None else GeneratorEma(generator, ema_decay)
        # Batches trained over all epochs (saved in checkpoints): G steps on every n_critic-th one.
        self.batches_trained = 0
        # Training steps over all epochs (saved too): one per batch, or per data.batches_per_step
        # batches, as Lightning counts them; the loggers write on every log_every_n_steps-th.
        self.steps_trained = 0
        self._grouped = False  # whether steps train several batches (then the x-axis is logged: _log_axis)
        self._epoch_batches: int | None = None  # the epoch's batch count, where steps count otherwise
        # Fixed noise for the sample grids, drawn once (after seeding) and kept in checkpoints,
        # so every epoch's grid shows the same z. A conditional grid has one row per class.
        rows = self.num_classes or sample_rows
        self.register_buffer("fixed_noise", torch.randn(rows * sample_cols, self.latent_dim))
        labels = torch.arange(rows).repeat_interleave(sample_cols) if self.num_classes else torch.zeros(0, dtype=torch.long)
        self.register_buffer("fixed_labels", labels)

    def setup(self, stage: str) -> None:
        skip_nvml_probe_without_gpu()  # in every process: DDP's workers import Lightning afresh
        # In place (nn.Module.compile), so parameter names and checkpoints stay those of eager G
        # and D. Not mode="reduce-overhead": its CUDA graphs reuse G's output memory while the
        # batch's second step still needs it ("accessing tensor output of CUDAGraphs that has been
        # overwritten"), even with cudagraph_mark_step_begin() per batch (BENCHMARKS.md).
        if self.hparams.torch_compile:
            self.generator.compile()
            self.discriminator.compile()

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels if self.conditional else None)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from ``noise`` (default: the fixed sample noise), G in eval mode.

        With ``ema_decay`` set, the images come from the EMA of G's weights (what evaluation and
        the sample grids should judge); otherwise from G itself.
        """
        noise = self.fixed_noise if noise is None else noise
        labels = (self.fixed_labels if labels is None else labels) if self.conditional else None
        generator = self.generator if self.generator_ema is None else self.generator_ema.module
        was_training = generator.training
        generator.eval()
        try:
            return generator(noise, labels)
        finally:
            generator.train(was_training)

    def _draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(batch_size, self.latent_dim, device=self.device)
        labels = torch.randint(0, self.num_classes, (batch_size,), device=self.device) if self.conditional else None
        return z, labels

    def _d_view(self, images: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The images as D sees them in training: augmented and noised where the recipe asks
        (``src/augment.py``), in the D step and in the G step alike; unchanged by default."""
        if self.augmentations:
            images = diff_augment(images, self.augmentations)
        if self.hparams.instance_noise:
            images = images + self._noise_std(batch_idx) * torch.randn_like(images)
        return images

    def _noise_std(self, batch_idx: int) -> float:
        """Instance noise's standard deviation at this batch: its share of the whole run (by the
        epoch and the batch within it, so a resumed run draws the same)."""
        batches = self._epoch_batches or self.trainer.num_training_batches
        progress = (self.current_epoch + batch_idx / batches) / self.trainer.max_epochs
        return noise_std(self.hparams.instance_noise, progress)

    def _discriminate_real_and_fake(self, real, real_labels, fake, fake_labels, batch_idx: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits on real and on fake images, in one forward pass over both.

        One pass of 2B rows does the same math as two of B rows in fewer, larger kernels. This
        is valid because D has no batch-statistics layers (the MLPs and the DCGAN D don't); a D
        with BatchNorm sees the real and the fake batches apart.
        """
        if self.d_mixes_batch_rows:
            return self.discriminator(self._d_view(real, batch_idx), real_labels), self.discriminator(self._d_view(fake, batch_idx), fake_labels)
        labels = None if real_labels is None else torch.cat([real_labels, fake_labels])
        logits = self.discriminator(self._d_view(torch.cat([real, fake]), batch_idx), labels)
        return logits[: real.size(0)], logits[real.size(0) :]

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        """train/d_real, train/d_fake: D's mean probability of "real" for bce (the seeds'
        real_score / fake_score); for hinge and wgan_gp, whose logits are no probabilities, the
        mean raw score."""
        return torch.sigmoid(logits).mean() if self.hparams.loss == "bce" else logits.mean()

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(per_rank_seed(self.hparams.seed, self.current_epoch, self.global_rank))
        # Manual optimization steps its schedulers itself. Stepping up to this epoch here, rather
        # than once at each epoch's end, keeps a resumed run on schedule whichever hook saved its
        # checkpoint (after validation, or at the epoch's end before or after this module's hook).
        schedulers = self.lr_schedulers() or []
        for scheduler in schedulers:
            while scheduler.last_epoch < self.current_epoch:
                scheduler.step()
        if schedulers:  # the epoch's rates, one point per epoch in TensorBoard
            opt_g, opt_d = self.optimizers()
            rates = {"train/lr_g": opt_g.param_groups[0]["lr"], "train/lr_d": opt_d.param_groups[0]["lr"]}
            # The same on every rank; synced so that Lightning does not warn under DDP.
            self.log_dict(rates, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor] | BatchGroup, batch_idx: int) -> None:
        """One batch, or a :class:`BatchGroup`'s K batches one after the other: the same updates
        in the same order (the same weights), with Lightning's per-step cost paid once. With K, the
        loggers write on the last batch of every ``log_every_n_steps``-th step, against the batch
        count (``src/train.py`` gives Lightning ``log_every_n_steps / K``)."""
        self.steps_trained += 1
        if not isinstance(batch, BatchGroup):
            self._train_batch(batch, batch_idx, log=self._is_logging_step())
            return
        self._grouped, self._epoch_batches = True, batch.epoch_batches
        last = len(batch.batches) - 1
        for offset, one in enumerate(batch.batches):
            log_now = offset == last and self._is_logging_step()
            self._train_batch(one, batch.first + offset, log=log_now)
            if log_now:
                self._log_axis(on_step=True)

    def _log_axis(self, on_step: bool) -> None:
        """With several batches per step, Lightning's own x-axis would count steps: log the one it
        draws with one batch per step (the 0-based index of the last batch trained) as ``step``,
        Lightning's key for the x-axis, and the epoch beside it, as Lightning logs it when it picks
        the step itself. The same on every rank (sync_dist only keeps Lightning from warning)."""
        if self._grouped:
            axis = {"step": float(self.batches_trained - 1), "epoch": float(self.current_epoch)}
            self.log_dict(axis, on_step=on_step, on_epoch=not on_step, batch_size=1, reduce_fx="max", sync_dist=not on_step)

    def _train_batch(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, log: bool) -> None:
        real, real_labels = batch
        real_labels = real_labels if self.conditional else None
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        # n_critic > 1: each D step gets a fresh real batch, as in WGAN-GP's algorithm 1, and G
        # steps after every n_critic-th. The count runs over epochs (an epoch need not be a
        # multiple of n_critic) and is saved in checkpoints, so a resumed run keeps the rhythm.
        g_step = (self.batches_trained + 1) % hp.n_critic == 0
        self.batches_trained += 1
        z, fake_labels = self._draw(real.size(0))
        with torch.set_grad_enabled(g_step):  # a D-only batch needs no graph through G
            fake = self(z, fake_labels)

        # Lazy R1 (StyleGAN2, Karras et al. 2020, "lazy regularization"): on every r1_every-th
        # batch only, counted over epochs like n_critic (the first batch has it), weighted by r1_every.
        r1_now = bool(hp.r1_gamma) and (self.batches_trained - 1) % hp.r1_every == 0
        with self.toggled_optimizer(opt_d):
            if r1_now:
                real = real.detach().requires_grad_(True)
            d_real_logits, d_fake_logits = self._discriminate_real_and_fake(real, real_labels, fake.detach(), fake_labels, batch_idx)
            d_loss = losses.d_loss(hp.loss, d_real_logits, d_fake_logits, real_target=1.0 - hp.label_smoothing)
            penalties = {}
            if hp.loss == "wgan_gp":
                penalties["train/gp"] = losses.gradient_penalty(self.discriminator, real, fake, real_labels)
            if r1_now:
                penalties["train/r1"] = losses.r1_penalty(d_real_logits, real)
            d_total = d_loss
            if "train/gp" in penalties:
                d_total = d_total + hp.gp_weight * penalties["train/gp"]
            if "train/r1" in penalties:
                d_total = d_total + hp.r1_gamma / 2 * hp.r1_every * penalties["train/r1"]
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_total)
            opt_d.step()

        g_loss = None
        if g_step:
            with self.toggled_optimizer(opt_g):
                g_loss = losses.g_loss(hp.loss, self.discriminator(self._d_view(fake, batch_idx), fake_labels))
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g_loss)
                opt_g.step()
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)

        # `self.log` costs more per call on CPU than a whole step of the seed GAN (Lightning moves
        # its result buffers each time; BENCHMARKS.md): log only on the steps the loggers will write.
        if not log:
            return
        metrics = {
            "train/d_loss": d_loss,
            "train/d_real": self._scores(d_real_logits.detach()),
            "train/d_fake": self._scores(d_fake_logits.detach()),
            **penalties,
        }
        # With n_critic > 1, g_loss exists on the batches that took a G step: on every logging
        # step when log_every_n_steps is a multiple of n_critic.
        if g_loss is not None:
            metrics["train/g_loss"] = g_loss
        # The losses are checked for a divergence; the diagnostics, read after the steps, only logged
        # (a diverged step's weights are caught by the next loss, or at the epoch's end).
        checked = tuple(metrics)
        metrics |= collapse_diagnostics(self.discriminator, real, fake, real_labels, fake_labels)
        if hp.instance_noise:
            metrics["train/instance_noise"] = torch.tensor(self._noise_std(batch_idx), device=self.device)
        # One read from the device for all of them, and Lightning is given host tensors: it
        # converts the progress bar's values with .item() after every batch, not only on logging
        # steps, and each .item() of a GPU tensor waits until the GPU has run all queued work
        # (Lightning-AI/pytorch-lightning#20995). Lightning keeps a logged tensor on its device
        # (#17334); these are per-rank values, never sync_dist-reduced (NCCL reduces no CPU tensor).
        values = torch.stack([value.detach().float() for value in metrics.values()]).cpu()
        host_metrics = dict(zip(metrics, values.unbind(), strict=True))
        self._stop_if_nonfinite({name: host_metrics[name] for name in checked}, batch_idx)
        shown = {name: value for name, value in host_metrics.items() if name in PROGRESS_BAR}
        self.log_dict(shown, prog_bar=True, batch_size=real.size(0))
        self.log_dict({name: value for name, value in host_metrics.items() if name not in shown}, batch_size=real.size(0))

    def _is_logging_step(self) -> bool:
        return logs_batch(self.trainer, self.steps_trained)

    def _stop_if_nonfinite(self, host_metrics: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Stop a diverged run. Checked on logging steps only, on the values read back for logging:
        once a loss is NaN the weights stay NaN, so it is still caught within
        ``log_every_n_steps`` batches and never trained on silently."""
        for name, value in host_metrics.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} became {float(value)} at batch {batch_idx} (epoch {self.current_epoch}): training diverged; "
                    "lower model.lr or resume from an earlier checkpoint"
                )

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._stop_if_weights_nonfinite()

    def on_train_epoch_end(self) -> None:
        # Lightning calls this before the checkpoint callbacks' own epoch-end hook: a diverged
        # epoch stops here and last.ckpt keeps the last good epoch.
        self._stop_if_weights_nonfinite()
        if self.lr_schedulers():  # the epoch's rates are this hook's only figures (on_train_epoch_start)
            self._log_axis(on_step=False)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._log_axis(on_step=False)

    def diverged_nets(self) -> list[str]:
        """``"G"``, ``"D"``: the nets with a NaN or infinite weight (one read from the device)."""
        nets = {"G": self.generator, "D": self.discriminator}
        finite = torch.stack([torch.stack([torch.isfinite(p).all() for p in net.parameters()]).all() for net in nets.values()])
        return [name for name, ok in zip(nets, finite.tolist(), strict=True) if not ok]

    def _stop_if_weights_nonfinite(self) -> None:
        """Stop a run whose weights are NaN or infinite before they are scored or saved.

        The loss check runs on logging steps only, so weights that diverge after the epoch's last
        logging step would otherwise be validated and written over the last good ``last.ckpt``.
        One read from the device per epoch (and per validation).
        """
        if not (diverged := self.diverged_nets()):
            return
        raise NonFiniteLossError(
            f"the weights of {' and '.join(diverged)} became non-finite in epoch {self.current_epoch}: training diverged; "
            "lower model.lr and resume from the last good checkpoint (checkpoints/last.ckpt) or start again"
        )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, labels = batch
        labels = labels if self.conditional else None
        # Fixed per-batch noise so validation figures are comparable across epochs.
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        z = torch.randn(real.size(0), self.latent_dim, device=self.device, generator=generator)
        fake = self(z, labels)
        d_real_logits = self.discriminator(real, labels)
        d_fake_logits = self.discriminator(fake, labels)
        loss = self.hparams.loss
        self.log_dict(
            {
                # The adversarial losses without penalties (no smoothing either: the plain game).
                "val/d_loss": losses.d_loss(loss, d_real_logits, d_fake_logits),
                "val/g_loss": losses.g_loss(loss, d_fake_logits),
                "val/d_real": self._scores(d_real_logits),
                "val/d_fake": self._scores(d_fake_logits),
            },
            batch_size=real.size(0),
            sync_dist=True,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["batches_trained"] = self.batches_trained
        checkpoint["steps_trained"] = self.steps_trained

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.batches_trained = checkpoint.get("batches_trained", 0)
        # Checkpoints from before steps were counted trained one batch per step.
        self.steps_trained = checkpoint.get("steps_trained", self.batches_trained)

    def build_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """G's and D's optimizers, without a trainer (``src/train.py`` checks the config with them)."""
        lr = self.hparams.lr
        opt_g = self.optimizer_factory(self.generator.parameters(), lr=self.hparams.lr_g or lr)
        opt_d = self.optimizer_factory(self.discriminator.parameters(), lr=self.hparams.lr_d or lr)
        if self.hparams.r1_gamma and self.hparams.r1_every > 1:
            # StyleGAN2's correction for lazy R1 (its training_loop.py): D's optimizer sees the
            # penalty's steps as part of its own, so its rate and Adam's betas go to the power
            # r1_every / (r1_every + 1), as if each step took that share of a step's time.
            # Without R1 (r1_gamma 0) there is nothing lazy, and D's optimizer stays as configured.
            ratio = self.hparams.r1_every / (self.hparams.r1_every + 1)
            for group in opt_d.param_groups:
                group["lr"] = group["lr"] * ratio
                if "betas" in group:
                    group["betas"] = tuple(beta**ratio for beta in group["betas"])
        return opt_g, opt_d

    def configure_optimizers(self):
        optimizers = list(self.build_optimizers())
        max_epochs = self.trainer.max_epochs
        decaying = decay_epochs(self.hparams.lr_decay_fraction, max_epochs)
        if not decaying:
            return optimizers
        # Returned to Lightning, the schedulers are saved in checkpoints and restored on resume.
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: linear_decay(epoch, max_epochs, decaying)) for opt in optimizers]
        return optimizers, schedulers
