"""Per-condition weights over the (timestep, noise level) grid (Jeong et al., arXiv 2505.17955).

A score's value for a pair is a mean over the grid's conditions. Conditions are not equally
informative: Jeong et al. find that weighting timesteps, learned from a few labelled examples,
closes much of a diffusion classifier's gap on compositional tasks. `discff tune
--timestep-weights` learns one positive weight per condition (training/timestep_weights.py),
normalised to mean 1 over the grid it was learned on, and stores it in the deltas file. Here the
weights act on the per-condition scores, so every consumer's mean over conditions (search, eval,
pruning, tuning) becomes the weighted mean Σ_c w_c·score_c / C without knowing of weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from discff_cli.engine.scores import Readings
from discff_cli.errors import DiscffError

TENSOR = "condition_weights"  # [C] in the deltas file; metadata "condition_grid" = [[t, s], ...]


@dataclass
class WeightedReadings(Readings):
    """Readings whose per-condition scores are multiplied by the condition weights (None = uniform)."""

    weights: torch.Tensor | None = None

    def score(self, family: str) -> torch.Tensor:
        value = super().score(family)
        return value if self.weights is None else value * self.weights.to(value.device, value.dtype)


def weights_for(weights: dict[tuple[int, float], float], conditions: Sequence[Any]) -> torch.Tensor | None:
    """The weight of each condition [C], or None when no weights are set (uniform)."""
    if not weights:
        return None
    return torch.tensor([weights.get((int(c.timestep), float(c.level)), 1.0) for c in conditions],
                        dtype=torch.float32)


def grid_of(scorer: Any) -> list[tuple[int, float]]:
    return [(int(c.timestep), float(c.level)) for c in scorer.conditions]


def install(scorer: Any, weights: torch.Tensor, grid: Sequence[Sequence[float]], path: str = "") -> None:
    """Set `scorer`'s condition weights from a file's tensor and grid; another grid is one sentence."""
    grid = [(int(t), float(s)) for t, s in grid]
    if grid != grid_of(scorer) or len(grid) != int(weights.numel()):
        where = f" in '{path}'" if path else ""
        raise DiscffError(f"The timestep weights{where} were learned on another (timestep, level) grid "
                          f"({len(grid)} conditions) than this run's ({len(scorer.conditions)}); pass the --steps "
                          "and --levels the file was tuned with.")
    scorer.condition_weights = {key: float(w) for key, w in zip(grid, weights.tolist())}


def tensors_and_meta(scorer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What the deltas file stores for the scorer's weights (nothing when uniform)."""
    if not scorer.condition_weights:
        return {}, {}
    grid = grid_of(scorer)
    values = torch.tensor([scorer.condition_weights.get(key, 1.0) for key in grid], dtype=torch.float32)
    return {TENSOR: values}, {"condition_grid": [list(key) for key in grid]}
