"""Mean and sample standard deviation over seeds: how every benchmark reports a figure."""

from __future__ import annotations

import numpy as np


def mean_std(values: list[float]) -> dict[str, float]:
    """`{"mean", "std"}`; the std of a single run is 0 (there is no spread to measure)."""
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1) if len(values) > 1 else 0.0),
    }
