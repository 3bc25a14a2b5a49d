"""Small, dependency-free statistics used by the benchmark reports.

Percentiles use linear interpolation between closest ranks (the same rule as
numpy's default and Python's ``statistics.quantiles(method="inclusive")``), so
p50 of an even-sized sample is the mean of the two middle values and p100 is
the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

MIB = 1 << 20


def median(values: Iterable[float]) -> float:
    """Median of a non-empty sample."""
    return percentile(list(values), 50.0)


def percentile(values: Sequence[float], p: float, *, presorted: bool = False) -> float:
    """The p-th percentile (0 <= p <= 100) of a non-empty sample."""
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    data = values if presorted else sorted(values)
    n = len(data)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    if n == 1:
        return float(data[0])
    rank = (n - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    frac = rank - lo
    return float(data[lo]) + (float(data[hi]) - float(data[lo])) * frac


def percentiles(values: Sequence[float], ps: Iterable[float]) -> dict[float, float]:
    """Several percentiles of one sample, sorting it once."""
    data = sorted(values)
    return {p: percentile(data, p, presorted=True) for p in ps}


def rate_mib_s(nbytes: int, seconds: float) -> float:
    """Throughput in MiB per second; 0 for a zero or negative duration."""
    if seconds <= 0:
        return 0.0
    return nbytes / MIB / seconds


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is not positive."""
    if denominator <= 0:
        return None
    return numerator / denominator
