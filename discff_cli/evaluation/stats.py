"""The statistics every measurement of discff reports, in one place: `discff eval`, the demo gallery
(`discff demo`), the benchmarks and the demo models' training checks.

Every figure discff reports is a proportion of items (accuracy, R@k, Winoground scores, hit rates),
so its 95% interval is a Wilson score interval; two systems scored on the same items are compared
with the exact McNemar test on the items where they disagree.
"""

from __future__ import annotations

import math

CI_METHOD = "Wilson score interval, 95%"
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion: sensible at 0%, 100% and small n, unlike p +- 2 se.
    (nan, nan) when there are no items."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def wilson_rounded(successes: int, n: int, digits: int = 4) -> tuple[float, float]:
    """The Wilson interval rounded for a record; (0, 1) when there are no items (nothing is known)."""
    if n == 0:
        return (0.0, 1.0)
    lo, hi = wilson(successes, n)
    return (round(lo, digits), round(hi, digits))


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each discordant item is a fair coin.

    Two systems scored on the same items are paired, so this is far more sensitive than comparing
    their two Wilson intervals (which assume independent samples)."""
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def p_value(gained: int, lost: int) -> float:
    """McNemar's p to 3 significant figures, as every report prints it (a tiny p stays > 0)."""
    return float(f"{mcnemar_exact(gained, lost):.3g}")
