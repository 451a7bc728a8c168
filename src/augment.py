"""What D sees: differentiable augmentation and annealed instance noise, both off by default.

- **DiffAugment** (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
  Training"; the reference code is mit-han-lab/data-efficient-gans, PyTorch-StudioGAN ships the
  same ops): every image D sees, real and fake, in the D step and in the G step, is randomly
  translated and cut out. The ops are differentiable, so G's gradient passes through them, and D
  cannot separate real from fake by anything the augmentation changes. For 28x28 grey images the
  colour op has nothing to act on: the policy takes ``translation`` and ``cutout``.
- **Instance noise** (Sønderby et al. 2017, "Amortised MAP Inference for Image Super-resolution",
  section 3.2; Arjovsky & Bottou 2017): Gaussian noise on every image D sees, its standard
  deviation falling linearly from ``sigma`` to 0 over the run, so the real and the generated
  distributions overlap early on, where D would otherwise separate them perfectly and G's
  gradient vanish.

Both draw from torch's global generator, which the module reseeds every epoch: a run with them
is as reproducible and resumable as one without. Off, they draw nothing: training is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("translation", "cutout")


def translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in each direction, padding with zeros
    (the reference's ``rand_translation``: up to 4 pixels of a 28x28 image)."""
    n, _, height, width = images.shape
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-shift_y, shift_y + 1, (n, 1, 1), device=images.device)
    dx = torch.randint(-shift_x, shift_x + 1, (n, 1, 1), device=images.device)
    batch, rows, cols = torch.meshgrid(
        torch.arange(n, device=images.device),
        torch.arange(height, device=images.device),
        torch.arange(width, device=images.device),
        indexing="ij",
    )
    rows = torch.clamp(rows + dy + 1, 0, height + 1)
    cols = torch.clamp(cols + dx + 1, 0, width + 1)
    padded = F.pad(images, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the image's size at a random place in each image (the
    reference's ``rand_cutout``: 14x14 of a 28x28 image, partly outside it near the border)."""
    n, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    offset_y = torch.randint(0, height + (1 - size_y % 2), (n, 1, 1), device=images.device)
    offset_x = torch.randint(0, width + (1 - size_x % 2), (n, 1, 1), device=images.device)
    batch, rows, cols = torch.meshgrid(
        torch.arange(n, device=images.device),
        torch.arange(size_y, device=images.device),
        torch.arange(size_x, device=images.device),
        indexing="ij",
    )
    rows = torch.clamp(rows + offset_y - size_y // 2, 0, height - 1)
    cols = torch.clamp(cols + offset_x - size_x // 2, 0, width - 1)
    mask = torch.ones(n, height, width, dtype=images.dtype, device=images.device)
    mask[batch, rows, cols] = 0
    return images * mask.unsqueeze(1)


_OPS = {"translation": translation, "cutout": cutout}


def parse_policy(policy: str | Sequence[str] | None) -> tuple[str, ...]:
    """``[translation, cutout]`` (or ``"translation,cutout"``) -> the ops in order; ``None`` -> none.
    An unknown name raises ``ValueError`` naming the known ones."""
    if not policy:
        return ()
    names = tuple(str(name).strip() for name in (policy.split(",") if isinstance(policy, str) else policy))
    unknown = [name for name in names if name not in _OPS]
    if unknown or not names:
        raise ValueError(f"unknown augmentation {unknown[0] if unknown else policy!r}: use a list of {AUGMENTATIONS}")
    return names


def diff_augment(images: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
    """The ops of a parsed policy, applied in order, each with its own random draw per image."""
    for name in ops:
        images = _OPS[name](images)
    return images


def noise_std(sigma: float, progress: float) -> float:
    """Instance noise's standard deviation at ``progress`` (0 at the start of the run, 1 at its
    end): linear from ``sigma`` to 0."""
    return sigma * max(0.0, 1.0 - progress)
