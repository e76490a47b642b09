"""Mean ± standard error over seeds, and differences between starts with a 95 % interval.

A difference is called larger than its noise when its 95 % confidence interval excludes 0:
Student's t with ``n - 1`` degrees of freedom for paired values, Welch's t (Welch-Satterthwaite
degrees of freedom) for unpaired ones. With one value there is no noise estimate: the standard
error and interval are NaN and nothing is called significant.
"""

import math
from typing import Dict, Sequence

from scipy import stats

__all__ = ["mean_se", "paired_difference", "unpaired_difference"]


def mean_se(values: Sequence[float]) -> Dict[str, float]:
    """{"mean", "se" (sample standard deviation / sqrt(n); NaN for n = 1), "n"}."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_se: no values")
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan
    return {"mean": mean, "se": se, "n": n}


def _interval(mean: float, se: float, dof: float) -> Dict[str, object]:
    if not dof > 0 or math.isnan(se):
        return {"ci95": [math.nan, math.nan], "exceeds_noise": False}
    half = stats.t.ppf(0.975, dof) * se
    low, high = mean - half, mean + half
    return {"ci95": [low, high], "exceeds_noise": bool(low > 0 or high < 0)}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Dict[str, object]:
    """a[i] - b[i] over pairs (e.g. two starts fine-tuned with the same seed i): {"mean", "se",
    "n", "ci95": [low, high], "exceeds_noise"}."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} values against {len(b)}")
    result = mean_se([x - y for x, y in zip(a, b)])
    return {**result, **_interval(result["mean"], result["se"], result["n"] - 1)}


def unpaired_difference(a: Sequence[float], b: Sequence[float]) -> Dict[str, object]:
    """mean(a) - mean(b) for independent groups (Welch): se = sqrt(se_a^2 + se_b^2), degrees of
    freedom (se_a^2 + se_b^2)^2 / (se_a^4 / (n_a - 1) + se_b^4 / (n_b - 1)); same keys as
    :func:`paired_difference` ("n": the smaller group's size) plus "dof"."""
    sa, sb = mean_se(a), mean_se(b)
    va, vb = sa["se"] ** 2, sb["se"] ** 2
    mean, se, n = sa["mean"] - sb["mean"], math.sqrt(va + vb), min(sa["n"], sb["n"])
    dof = (va + vb) ** 2 / (va ** 2 / (sa["n"] - 1) + vb ** 2 / (sb["n"] - 1)) if n > 1 and va + vb > 0 else math.nan
    return {"mean": mean, "se": se, "n": n, "dof": dof, **_interval(mean, se, dof)}
