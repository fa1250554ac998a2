"""Fusing the shortlist's CLIP scores with the rerank scores into the final order.

Why fuse at all: on a collection the diffusion model knows less about than CLIP does, ordering by
the rerank score alone throws away CLIP's evidence and can make search worse than the shortlist it
started from. Both methods work on one query's shortlist, so neither needs the two scores to share
a scale:

- ``zsum``: w·z(rerank) + (1 − w)·z(CLIP), each z-scored over the shortlist;
- ``rrf``: reciprocal-rank fusion, w/(k + rank_rerank) + (1 − w)/(k + rank_CLIP), k = 60
  (Cormack et al. 2009), which uses only the two orders;
- ``none``: the rerank score alone (w is ignored).

The default method and weight were chosen by measurement on the demo gallery (docs/results-history.md,
"Fusion sweep on the demo gallery"); `--fusion` and `--fusion-weight` change them.
"""

from __future__ import annotations

import numpy as np

FUSIONS = ("zsum", "rrf", "none")
DEFAULT_FUSION = "zsum"
DEFAULT_WEIGHT = 0.5
RRF_K = 60.0


def fuse(clip_scores: np.ndarray, rerank_scores: np.ndarray, method: str = DEFAULT_FUSION,
         weight: float = DEFAULT_WEIGHT) -> np.ndarray:
    """Final scores of one query's shortlist (higher = better)."""
    clip_scores = np.asarray(clip_scores, dtype=np.float64)
    rerank_scores = np.asarray(rerank_scores, dtype=np.float64)
    if method == "none":
        return rerank_scores
    if method == "zsum":
        return weight * _z(rerank_scores) + (1 - weight) * _z(clip_scores)
    if method == "rrf":
        return weight / (RRF_K + _ranks(rerank_scores)) + (1 - weight) / (RRF_K + _ranks(clip_scores))
    raise ValueError(f"unknown fusion '{method}'; expected one of {', '.join(FUSIONS)}")


def final_order(clip_scores: np.ndarray, rerank_scores: np.ndarray, method: str = DEFAULT_FUSION,
                weight: float = DEFAULT_WEIGHT) -> list[int]:
    """Shortlist positions, best first; ties keep the shortlist (CLIP) order."""
    fused = fuse(clip_scores, rerank_scores, method, weight)
    return sorted(range(len(fused)), key=lambda i: (-float(fused[i]), i))


def _z(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1 = best; ties broken by position, as the shortlist orders them."""
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks
