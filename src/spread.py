"""A figure's spread over repeats: sample sets of one model (``src.evaluate repeats=K``) or
training runs that differ only in their seed (the sweep summary's per-configuration table)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """The mean, the sample standard deviation (n - 1; NaN for a single value) and the count
    of the finite ``values``; NaN, NaN, 0 if there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan, 0
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else math.nan), len(finite)


def plus_minus(mean: float, std: float) -> str:
    """``32.7 ± 1.3``: four significant digits for the mean, two for the spread; the mean alone without one."""
    if not math.isfinite(mean):
        return ""
    return f"{mean:.4g}" if not math.isfinite(std) else f"{mean:.4g} ± {std:.2g}"
