"""k-nearest-neighbour manifold metrics of generated samples against real ones, in feature space.

* improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
  for Assessing Generative Models", k = 3): the real manifold is the union of balls around each
  real feature, of radius its distance to its k-th nearest real neighbour; precision is the share
  of generated samples inside it, recall the share of real samples inside the generated
  manifold, built the same way from the generated features.
* density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models", k = 5): density counts, per generated sample, the real balls that hold it,
  divided by k and averaged (1 for matching distributions, can exceed 1); coverage is the share
  of real samples whose ball holds at least one generated sample.

Written here because torchmetrics has none of them, and the implementations that do (the
authors' ``prdc``, torch-fidelity's ``prc``) hold the whole N x N distance matrices (10,000 x
10,000 float64 is 800 MB per matrix) and recompute the real side on every call. Here distances
are computed in chunks of rows, the real side (its k-NN radii) once per run, and the
comparisons are the papers' (strict ``<``, as ``prdc``): ``tests/test_manifold.py`` checks the
figures against ``prdc`` on random sets, and on constructed cases with known answers.
"""

from __future__ import annotations

import torch

PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5


def _squared_distances(rows: torch.Tensor, columns: torch.Tensor, columns_sq: torch.Tensor) -> torch.Tensor:
    """|a - b|^2 for every pair, as |a|^2 + |b|^2 - 2ab: one matrix product, squared since every
    comparison and ranking is the same on squared distances (no sqrt taken). Its rounding error
    grows with the norms, not the distance: the callers centre the features first."""
    squared = torch.addmm(columns_sq, rows, columns.T, beta=1, alpha=-2)
    return squared.add_(rows.square().sum(dim=1, keepdim=True)).clamp_min_(0)


def kth_neighbour_radii(features: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest *other* point of the same set, shape (N,)."""
    if len(features) <= k:
        raise ValueError(f"the k-NN radius with k = {k} needs more than {k} points, got {len(features)}")
    features_sq = features.square().sum(dim=1)
    # k + 1: each point is its own nearest neighbour, at distance 0. (topk: kthvalue was far slower on these rows.)
    radii = [_squared_distances(block, features, features_sq).topk(k + 1, dim=1, largest=False).values[:, -1] for block in features.split(chunk_size)]
    return torch.cat(radii)


class RealManifold:
    """The real side, computed once: the features and their (squared) k-NN radii for both k.

    ``dtype``: of the distance arithmetic. float32 (the default) moves half the memory of float64
    per comparison and, on features centred at the real mean,
    accurate to ~1e-6 of a squared distance: a comparison flips only for a pair within that of a
    ball's edge. The results do not depend on the number of threads or the chunk size.
    """

    def __init__(self, real_features: torch.Tensor, chunk_size: int = 1024, dtype: torch.dtype = torch.float32) -> None:
        self.centre = real_features.double().mean(dim=0)
        self.dtype = dtype
        self.features = (real_features.double() - self.centre).to(dtype)
        self.features_sq = self.features.square().sum(dim=1)
        self.chunk_size = chunk_size
        self.radii_pr = kth_neighbour_radii(self.features, PRECISION_RECALL_K, chunk_size)
        self.radii_dc = kth_neighbour_radii(self.features, DENSITY_COVERAGE_K, chunk_size)

    def compare(self, fake_features: torch.Tensor) -> dict[str, float]:
        """Precision, recall, density and coverage of ``fake_features`` (N, D) against the real set."""
        fake = (fake_features.double() - self.centre).to(self.dtype)
        fake_radii = kth_neighbour_radii(fake, PRECISION_RECALL_K, self.chunk_size)
        num_real = len(self.features)
        in_real_manifold = 0  # generated samples inside some real k=3 ball
        real_balls_holding = 0  # (generated sample, real k=5 ball holding it) pairs
        real_in_fake_manifold = torch.zeros(num_real, dtype=torch.bool)
        nearest_fake = torch.full((num_real,), torch.inf, dtype=self.dtype)
        for start in range(0, len(fake), self.chunk_size):
            block = _squared_distances(fake[start : start + self.chunk_size], self.features, self.features_sq)  # (chunk, num_real)
            in_real_manifold += int((block < self.radii_pr).any(dim=1).sum())
            real_balls_holding += int(torch.count_nonzero(block < self.radii_dc))
            real_in_fake_manifold |= (block < fake_radii[start : start + self.chunk_size, None]).any(dim=0)
            nearest_fake = torch.minimum(nearest_fake, block.min(dim=0).values)
        return {
            "precision": in_real_manifold / len(fake),
            "recall": float(real_in_fake_manifold.double().mean()),
            "density": real_balls_holding / (DENSITY_COVERAGE_K * len(fake)),
            "coverage": float((nearest_fake < self.radii_dc).double().mean()),
        }
