"""The adversarial training system: one LightningModule that owns G, D and their two optimizers.

G and D are plain ``nn.Module``s (``src/models``); this module knows nothing of their
architecture beyond ``latent_dim`` and ``num_classes`` (``None`` = unconditional).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.errors import ConfigError, NonFiniteLossError

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def per_rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed seed for one (run, epoch, rank): ranks draw different noise, resumes the same."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class GAN(L.LightningModule):
    """Non-saturating GAN with logits and BCE-with-logits, trained with manual optimization.

    Per batch: draw z (and random labels for a conditional model), generate the fakes once,
    take one D step on ``fake.detach()``, then one G step through the updated D. Each step runs
    inside ``toggled_optimizer``, so the G step computes no gradients for D's weights.
    ``trainer.global_step`` therefore advances by two per batch.
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
    ) -> None:
        super().__init__()
        if generator.num_classes != discriminator.num_classes:
            raise ConfigError(f"model: generator has num_classes={generator.num_classes} but discriminator has {discriminator.num_classes}")
        for name, value in (("lr", lr), ("lr_g", lr_g), ("lr_d", lr_d)):
            if value is not None and not float(value) > 0:
                raise ConfigError(f"model.{name} must be a positive number, got {value}")
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator", "optimizer"], logger=False)
        self.generator = generator
        self.discriminator = discriminator
        self.optimizer_factory = optimizer
        self.latent_dim: int = generator.latent_dim
        self.num_classes: int | None = generator.num_classes
        # Fixed noise for the sample grids, drawn once (after seeding) and kept in checkpoints,
        # so every epoch's grid shows the same z. A conditional grid has one row per class.
        rows = self.num_classes or sample_rows
        self.register_buffer("fixed_noise", torch.randn(rows * sample_cols, self.latent_dim))
        labels = torch.arange(rows).repeat_interleave(sample_cols) if self.num_classes else torch.zeros(0, dtype=torch.long)
        self.register_buffer("fixed_labels", labels)

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels if self.conditional else None)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from ``noise`` (default: the fixed sample noise), G in eval mode."""
        noise = self.fixed_noise if noise is None else noise
        labels = (self.fixed_labels if labels is None else labels) if self.conditional else None
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self(noise, labels)
        finally:
            self.generator.train(was_training)

    def _draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(batch_size, self.latent_dim, device=self.device)
        labels = torch.randint(0, self.num_classes, (batch_size,), device=self.device) if self.conditional else None
        return z, labels

    @staticmethod
    def _bce(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    def _discriminate_real_and_fake(self, real, real_labels, fake, fake_labels) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits on real and on fake images, in one forward pass over both.

        One pass of 2B rows does the same math as two of B rows in fewer, larger kernels. This
        is valid because D has no batch-statistics layers (the MLPs don't); a D with BatchNorm
        would have to see the real and the fake batches apart.
        """
        labels = None if real_labels is None else torch.cat([real_labels, fake_labels])
        logits = self.discriminator(torch.cat([real, fake]), labels)
        return logits[: real.size(0)], logits[real.size(0) :]

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(per_rank_seed(self.hparams.seed, self.current_epoch, self.global_rank))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, real_labels = batch
        real_labels = real_labels if self.conditional else None
        opt_g, opt_d = self.optimizers()
        z, fake_labels = self._draw(real.size(0))
        fake = self(z, fake_labels)

        with self.toggled_optimizer(opt_d):
            d_real_logits, d_fake_logits = self._discriminate_real_and_fake(real, real_labels, fake.detach(), fake_labels)
            # Sum of the two halves, as the seeds do (not their mean).
            d_loss = self._bce(d_real_logits, True) + self._bce(d_fake_logits, False)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            g_loss = self._bce(self.discriminator(fake, fake_labels), True)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()

        # `self.log` costs ~1.5 ms per call on CPU (Lightning moves its result buffers each time),
        # more than a whole step of the seed GAN: log only on the steps the loggers will write.
        if not self.trainer._logger_connector.should_update_logs:
            return
        self._stop_if_nonfinite(d_loss, g_loss, batch_idx)
        self.log_dict(
            {
                "train/d_loss": d_loss.detach(),
                "train/g_loss": g_loss.detach(),
                # The seeds' real_score / fake_score: D's mean probability that an image is real.
                "train/d_real": torch.sigmoid(d_real_logits.detach()).mean(),
                "train/d_fake": torch.sigmoid(d_fake_logits.detach()).mean(),
            },
            prog_bar=True,
            batch_size=real.size(0),
        )

    def _stop_if_nonfinite(self, d_loss: torch.Tensor, g_loss: torch.Tensor, batch_idx: int) -> None:
        """Stop a diverged run. Checked on logging steps only: a check reads the loss back from the
        device, and once a loss is NaN the weights stay NaN, so it is still caught within
        ``log_every_n_steps`` batches and never trained on silently."""
        for name, loss in (("train/d_loss", d_loss), ("train/g_loss", g_loss)):
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} became {value} at batch {batch_idx} (epoch {self.current_epoch}): training diverged; "
                    "lower model.lr or resume from an earlier checkpoint"
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
        self.log_dict(
            {
                "val/d_loss": self._bce(d_real_logits, True) + self._bce(d_fake_logits, False),
                "val/g_loss": self._bce(d_fake_logits, True),
                "val/d_real": torch.sigmoid(d_real_logits).mean(),
                "val/d_fake": torch.sigmoid(d_fake_logits).mean(),
            },
            batch_size=real.size(0),
            sync_dist=True,
        )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        lr = self.hparams.lr
        opt_g = self.optimizer_factory(self.generator.parameters(), lr=self.hparams.lr_g or lr)
        opt_d = self.optimizer_factory(self.discriminator.parameters(), lr=self.hparams.lr_d or lr)
        return [opt_g, opt_d]
