"""What tells a collapsing GAN from a training one, as ``train/*`` scalars on logging steps.

- ``train/d_dead_l{i}``: the share of the i-th activation layer's units of D (ReLU or
  LeakyReLU, counted from the input) that output nothing positive for any image of the batch,
  real or fake. A ReLU unit that never fires passes no gradient back to G: a D whose units die
  gives G a gradient from a few directions only.
- ``train/d_grad_real``, ``train/d_grad_fake``: the mean norm of D's gradient with respect to
  its input, at the real and at the generated images: how steep D is where each lies (R1 keeps
  the first small; a large second with a small first is D pushing G's images around).
- ``train/g_std``: the spread of G's images, the per-pixel standard deviation over the batch,
  averaged over pixels. Near the data's (about 0.6 for MNIST in [-1, 1]) while G covers the
  data; it falls towards 0 as G's images collapse onto a few.

Computed on logging steps only (every ``trainer.log_every_n_steps`` batches), with D in eval
mode, so they draw no random numbers (no dropout) and change nothing that is trained: a run
logs them at the cost of one extra D pass and two input gradients per logging step.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


def _dead_shares(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each activation layer's share of units that fire for no image, and D's logits."""
    fired: list[torch.Tensor] = []

    def record(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
        fired.append((output.detach().flatten(1) > 0).any(dim=0).float().mean())

    handles = [module.register_forward_hook(record) for module in discriminator.modules() if isinstance(module, ACTIVATIONS)]
    try:
        logits = discriminator(images, labels)
    finally:
        for handle in handles:
            handle.remove()
    return [1 - share for share in fired], logits


def _input_grad_norm(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    images = images.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(images, labels).sum(), images)
    return grad.flatten(1).norm(dim=1).mean()


def collapse_diagnostics(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    real_labels: torch.Tensor | None = None,
    fake_labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The scalars above for one batch, as 0-d tensors on the batch's device. D's weights get no
    gradient and its mode is restored."""
    was_training = discriminator.training
    discriminator.eval()
    try:
        with torch.no_grad():
            labels = None if real_labels is None else torch.cat([real_labels, fake_labels])
            dead, _ = _dead_shares(discriminator, torch.cat([real.detach(), fake.detach()]), labels)
        with torch.enable_grad():
            grad_real = _input_grad_norm(discriminator, real, real_labels)
            grad_fake = _input_grad_norm(discriminator, fake, fake_labels)
    finally:
        discriminator.train(was_training)
    metrics = {f"train/d_dead_l{i}": share for i, share in enumerate(dead, start=1)}
    metrics["train/d_grad_real"] = grad_real
    metrics["train/d_grad_fake"] = grad_fake
    metrics["train/g_std"] = fake.detach().flatten(1).std(dim=0).mean()
    return metrics
