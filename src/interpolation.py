"""Latent walks: rows of images that go from one latent point to another (spherical interpolation).

A smooth walk (each image a small change from the one before, all of them plausible) says G's
latent space is well used; abrupt jumps or one image repeated along the row say it has
collapsed. Used by the ``InterpolationGrid`` callback (TensorBoard tag ``interpolation``) and by
``python -m src.generate ... interpolate=true``.
"""

from __future__ import annotations

import torch


def slerp(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points from ``start`` to ``end`` (both (D,)) along the great circle, their norms
    interpolated linearly: for Gaussian latents every point stays at a typical radius, which a
    straight line through the low-density centre does not (White, "Sampling Generative Networks", 2016)."""
    t = torch.linspace(0, 1, steps, dtype=start.dtype).unsqueeze(1)
    cos = torch.dot(start / start.norm(), end / end.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if float(omega.sin()) < 1e-6:  # (anti)parallel: the great circle is not defined, walk straight
        return (1 - t) * start + t * end
    return (torch.sin((1 - t) * omega) * start + torch.sin(t * omega) * end) / omega.sin()


def latent_walk(
    rows: int, steps: int, latent_dim: int, num_classes: int | None = None, label: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise (rows * steps, latent_dim) and labels for a grid of walks, ``steps`` images a row.

    Unconditional (or one ``label`` for every row): each row walks between its own pair of
    points. Conditional with every class: one walk, repeated in each class's row (``rows`` is the
    number of classes), so the rows show the same latent change applied to every class.
    """
    generator = torch.Generator().manual_seed(seed)
    if num_classes is not None and label is None:
        start, end = torch.randn(2, latent_dim, generator=generator)
        noise = slerp(start, end, steps).repeat(num_classes, 1)
        return noise, torch.arange(num_classes).repeat_interleave(steps)
    points = torch.randn(rows, 2, latent_dim, generator=generator)
    noise = torch.cat([slerp(start, end, steps) for start, end in points])
    labels = None if num_classes is None else torch.full((rows * steps,), label, dtype=torch.long)
    return noise, labels
