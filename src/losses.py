"""Adversarial losses on D's logits, and the gradient penalties, selected by ``model.loss``.

- ``bce``: the seeds' non-saturating GAN (Goodfellow et al. 2014): D minimises
  BCE(real, 1) + BCE(fake, 0), G minimises BCE(D(G(z)), 1). ``real_target < 1`` is one-sided
  label smoothing (Salimans et al. 2016): only the real target is softened, never the fake one.
- ``hinge``: the SNGAN / BigGAN loss: D minimises relu(1 - D(x)) + relu(1 + D(G(z))), G minimises -D(G(z)).
- ``wgan_gp``: the WGAN critic (Gulrajani et al. 2017): D minimises D(G(z)) - D(x), G minimises
  -D(G(z)); pair it with ``gradient_penalty`` (the module adds it with weight ``model.gp_weight``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LOSSES = ("bce", "hinge", "wgan_gp")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """D's loss, without penalties."""
    if kind == "bce":
        # The sum of the two halves, as the seeds do (not their mean).
        real_labels = torch.ones_like(real_logits) if real_target == 1.0 else torch.full_like(real_logits, real_target)
        return F.binary_cross_entropy_with_logits(real_logits, real_labels) + F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "wgan_gp":
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown loss {kind!r}: use one of {LOSSES}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss: non-saturating for bce, minus the critic's score for hinge and wgan_gp."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind in ("hinge", "wgan_gp"):
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {kind!r}: use one of {LOSSES}")


def gradient_penalty(
    discriminator: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None,
) -> torch.Tensor:
    """WGAN-GP: E[(||grad_x D(x)||_2 - 1)^2] at random points x between real and fake images.

    A conditional critic sees the interpolates with the real images' labels (as PyTorch-StudioGAN
    does): the penalty constrains D's slope in x, for the labels it is trained on.
    The result is differentiable with respect to D's weights (``create_graph=True``).
    """
    alpha = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = torch.lerp(real.detach(), fake.detach(), alpha).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed, labels).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real images; ``real`` must require grad
    and ``real_logits`` be computed from it. Multiply by gamma / 2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.flatten(1).square().sum(1).mean()
