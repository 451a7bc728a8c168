"""Precision/recall (k = 3) and density/coverage (k = 5): the authors' reference, and cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc

from src.metrics import manifold
from src.metrics.manifold import RealManifold, kth_neighbour_radii


def clusters(centres: torch.Tensor, per_cluster: int, seed: int, spread: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = centres.repeat_interleave(per_cluster, dim=0)
    return points + spread * torch.randn(points.shape, generator=generator, dtype=torch.float64)


CENTRES = torch.stack([20.0 * torch.arange(10.0), torch.zeros(10)], dim=1).double()  # ten modes on a line, far apart


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_figures_are_the_reference_implementations(seed, dtype):
    """``prdc`` (Naeem et al.'s code, which also implements Kynkäänniemi et al.'s precision and
    recall) holds whole distance matrices; ours is chunked: the same figures, to the last count."""
    generator = torch.Generator().manual_seed(seed)
    real = torch.randn(300, 8, generator=generator, dtype=torch.float64)
    fake = 0.8 * torch.randn(250, 8, generator=generator, dtype=torch.float64) + 0.5
    ours = RealManifold(real, chunk_size=64, dtype=dtype).compare(fake)
    reference_pr = compute_prdc(real.numpy(), fake.numpy(), nearest_k=3)
    reference_dc = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    assert ours["precision"] == pytest.approx(reference_pr["precision"], abs=1e-12)
    assert ours["recall"] == pytest.approx(reference_pr["recall"], abs=1e-12)
    assert ours["density"] == pytest.approx(reference_dc["density"], abs=1e-12)
    assert ours["coverage"] == pytest.approx(reference_dc["coverage"], abs=1e-12)
    assert 0.05 < ours["precision"] < 0.95 and 0.05 < ours["recall"] < 0.95  # a case where the figures discriminate


def test_identical_sets_score_one_everywhere():
    real = clusters(CENTRES, 40, seed=0)
    figures = RealManifold(real, chunk_size=50).compare(real)
    assert (figures["precision"], figures["recall"], figures["coverage"]) == (1.0, 1.0, 1.0)  # each point lies in its own ball
    # Each real ball holds k points of the set (itself and k - 1 neighbours): density 1, up to the
    # rounding of the distance to the k-th neighbour, which decides ties at a ball's edge.
    assert figures["density"] == pytest.approx(1.0, abs=0.01)


def test_far_apart_sets_score_zero_everywhere():
    real = clusters(CENTRES, 40, seed=0)
    assert RealManifold(real).compare(real + 1000.0) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_samples_from_half_the_modes_keep_precision_and_lose_half_the_recall_and_coverage():
    real = clusters(CENTRES, 100, seed=0)
    half = clusters(CENTRES[:5], 200, seed=1)  # as many samples, all from five of the ten modes
    figures = RealManifold(real).compare(half)
    assert figures["precision"] > 0.9
    assert figures["recall"] == pytest.approx(0.5, abs=0.05)
    assert figures["coverage"] == pytest.approx(0.5, abs=0.05)
    assert figures["density"] > 0.8  # each sample still sits among real ones


def test_distances_are_computed_in_chunks_never_as_one_matrix(monkeypatch):
    shapes = []
    real_distances = manifold._squared_distances
    monkeypatch.setattr(manifold, "_squared_distances", lambda rows, *rest: shapes.append(len(rows)) or real_distances(rows, *rest))
    real = clusters(CENTRES, 30, seed=0)
    RealManifold(real, chunk_size=64).compare(clusters(CENTRES, 30, seed=1))
    assert shapes and max(shapes) <= 64 and len(shapes) == 4 * 5  # real radii for k = 3 and 5, fake radii, fake-real: 300 rows in 5 chunks each


def test_the_radius_is_the_kth_nearest_other_point():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert kth_neighbour_radii(points, 1).tolist() == [1.0, 1.0, 4.0, 16.0]  # squared distances
    assert kth_neighbour_radii(points, 2).tolist() == [9.0, 4.0, 9.0, 36.0]
    with pytest.raises(ValueError, match="needs more than 3 points"):
        kth_neighbour_radii(points[:3], 3)


def test_the_real_side_is_computed_once(monkeypatch):
    calls = []
    real_radii = manifold.kth_neighbour_radii
    monkeypatch.setattr(manifold, "kth_neighbour_radii", lambda features, k, *rest: calls.append(k) or real_radii(features, k, *rest))
    real = clusters(CENTRES, 20, seed=0)
    metrics = RealManifold(real)
    assert calls == [3, 5]
    for seed in (1, 2, 3):
        metrics.compare(clusters(CENTRES, 20, seed=seed))
    assert calls == [3, 5, 3, 3, 3]  # per comparison only the generated set's own radii
    assert np.isfinite(list(metrics.compare(real).values())).all()
