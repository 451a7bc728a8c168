"""Spherical interpolation and the latent walks of the interpolation grids."""

from __future__ import annotations

import math

import pytest
import torch

from src.interpolation import latent_walk, slerp


def test_slerp_walks_the_great_circle_at_equal_angles_from_end_to_end():
    start, end = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = slerp(start, end, 5)
    assert torch.equal(path[0], start) and torch.allclose(path[-1], end, atol=1e-6)
    assert torch.allclose(path.norm(dim=1), torch.ones(5), atol=1e-6)  # on the circle, not the chord
    angles = torch.atan2(path[:, 1], path[:, 0])
    assert torch.allclose(angles, torch.linspace(0, math.pi / 2, 5), atol=1e-6)


def test_slerp_of_parallel_points_is_the_straight_line():
    start = torch.tensor([1.0, 2.0])
    assert torch.allclose(slerp(start, 3 * start, 3), torch.stack([start, 2 * start, 3 * start]))


def test_latent_walks_unconditional_rows_differ_conditional_rows_repeat_one_walk():
    noise, labels = latent_walk(rows=3, steps=4, latent_dim=8, seed=0)
    assert noise.shape == (12, 8) and labels is None
    rows = noise.view(3, 4, 8)
    assert not torch.allclose(rows[0], rows[1])
    assert torch.equal(noise, latent_walk(rows=3, steps=4, latent_dim=8, seed=0)[0])  # fixed by the seed

    noise, labels = latent_walk(rows=8, steps=4, latent_dim=8, num_classes=10, seed=0)
    assert noise.shape == (40, 8) and labels.tolist() == [c for c in range(10) for _ in range(4)]
    rows = noise.view(10, 4, 8)
    assert all(torch.equal(rows[0], row) for row in rows)

    noise, labels = latent_walk(rows=2, steps=3, latent_dim=8, num_classes=10, label=7, seed=0)
    assert noise.shape == (6, 8) and labels.tolist() == [7] * 6


@pytest.mark.parametrize("steps", [2, 10])
def test_every_point_of_a_walk_keeps_a_typical_gaussian_radius(steps):
    noise, _ = latent_walk(rows=50, steps=steps, latent_dim=100, seed=1)
    assert noise.norm(dim=1).min() > 0.8 * math.sqrt(100)  # a straight line would pass near 0.7
