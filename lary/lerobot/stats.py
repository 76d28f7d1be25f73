"""Feature statistics as LeRobot keeps them (`src/lerobot/datasets/compute_stats.py`): per episode, and merged over
episodes into `meta/stats.json`.

Per episode, a feature of per-frame shape S gives `min`, `max`, `mean`, `std` and `count` (the number of frames),
over values cast as LeRobot casts them (integers to float64, the rest to at least float32):
- v3.0 reduces every axis but the last (S = (n, D) gives (D,) stats) and adds the quantiles `q01 q10 q50 q90 q99`,
  estimated as LeRobot does: from a 5,000-bin histogram between the minimum and the maximum;
- v2.1 reduces the frame axis only (S = (n, D) gives (n, D) stats), without quantiles.
A per-frame scalar (shape (1,)) gives stats of shape (1,) in both.
"""

from __future__ import annotations

import numpy as np

from .layout import V30

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
BINS = 5000


def _quantiles(values: np.ndarray) -> list[float]:
    """LeRobot's estimate of `QUANTILES` (`RunningQuantileStats` after one batch): for each q, the histogram bin
    where the cumulative count reaches q * count, linearly interpolated inside it (the lowest edge when that is the
    first bin)."""
    edges = np.linspace(values.min() - 1e-10, values.max() + 1e-10, BINS + 1)
    cumulative = np.cumsum(np.histogram(values, bins=edges)[0])
    estimates = []
    for q in QUANTILES.values():
        target = q * len(values)
        bin_ = int(np.searchsorted(cumulative, target))
        if bin_ == 0 or bin_ >= BINS:
            estimates.append(edges[0] if bin_ == 0 else edges[-1])
            continue
        before, inside = cumulative[bin_ - 1], cumulative[bin_] - cumulative[bin_ - 1]
        step = 0 if inside == 0 else (target - before) / inside * (edges[bin_ + 1] - edges[bin_])
        estimates.append(edges[bin_] + step)
    return estimates


def episode_stats(values: np.ndarray, version: str) -> dict[str, np.ndarray]:
    """Stats of one feature over one episode's frames; `values` is (frames, *S) with at least one frame."""
    values = np.asarray(values)
    values = values.astype(np.result_type(values.dtype, np.float32))
    if values.ndim == 1:
        flat = values[:, None]
    elif version == V30:
        flat = values.reshape(-1, values.shape[-1])
    else:
        flat = values
    stats = {
        "min": flat.min(axis=0),
        "max": flat.max(axis=0),
        "mean": flat.mean(axis=0, dtype=np.float64),
        "std": flat.std(axis=0, dtype=np.float64),
        "count": np.array([len(values)]),
    }
    if version == V30:
        # of a single frame, LeRobot takes the mean for every quantile
        many = len(values) > 1
        estimates = np.array([_quantiles(column) for column in flat.T]).T if many else [stats["mean"]] * len(QUANTILES)
        stats |= dict(zip(QUANTILES, estimates))
    return stats


def aggregate_stats(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's stats over several episodes, as LeRobot merges them: min of mins, max of maxes, the
    count-weighted mean, the pooled std, summed counts; quantiles (v3.0) as bounds, the lowest of the episodes'
    for q <= 50 and the highest above (lerobot's main branch; releases up to 0.4.x took their count-weighted mean,
    which is no quantile of the whole either)."""
    counts = np.array([s["count"][0] for s in stats], dtype=np.float64)
    means = np.stack([s["mean"] for s in stats])
    weights = counts.reshape(-1, *([1] * (means.ndim - 1))) / counts.sum()
    mean = (means * weights).sum(axis=0)
    variance = ((np.stack([s["std"] for s in stats]) ** 2 + (means - mean) ** 2) * weights).sum(axis=0)
    merged = {
        "min": np.min([s["min"] for s in stats], axis=0),
        "max": np.max([s["max"] for s in stats], axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(counts.sum())]),
    }
    for name in QUANTILES:
        if all(name in s for s in stats):
            bound = np.min if int(name[1:]) <= 50 else np.max
            merged[name] = bound([s[name] for s in stats], axis=0)
    return merged
