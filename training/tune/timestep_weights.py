"""Learned per-condition weights over the (timestep, noise level) grid (Jeong et al., arXiv 2505.17955).

Jeong et al. ("Diffusion Classifiers Understand Compositionality, but Conditions Apply", NeurIPS
2025 D&B) find that which timesteps a diffusion classifier averages over matters as much as the
model, and that a weighting learned from a few labelled examples recovers much of the gap. Here
the grid has C = steps × levels conditions and the weights are w = C·softmax(θ): positive, mean 1,
C parameters. The model stays frozen, so every labelled pair is scored once per condition and the
weights are fitted on those [pairs, C] scores alone (seconds, no U-Net pass per step):

    f(x, y) = (1/C) Σ_c w_c · score_c(x, y),  loss = mean softplus(−(f(pos) − f(neg)) / τ) + λ‖θ‖²

τ is the spread of the uniform-weight margins, so the loss does not depend on the score's units
(the denoising score is ~1e-3, the attention term ~1); λ keeps the weights near uniform where
the few examples say little. The step kept is the last one with the best held-out accuracy (the
tuner's validation split): uniform weights (step 0) are kept only if every fitted step is worse
on held-out triplets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

STEPS = 300
LR = 0.05
L2 = 1e-2
CHECK_EVERY = 10


@dataclass
class WeightFit:
    """The fitted weights [C] and the accuracies before and after, on train and held-out triplets."""

    weights: torch.Tensor
    train_uniform: float
    train_learned: float
    val_uniform: float | None
    val_learned: float | None
    best_step: int

    def report(self, grid: list[tuple[int, float]]) -> dict[str, Any]:
        return {"grid": [list(g) for g in grid], "weights": [round(float(w), 4) for w in self.weights],
                "train_accuracy_uniform": self.train_uniform, "train_accuracy_learned": self.train_learned,
                "val_accuracy_uniform": self.val_uniform, "val_accuracy_learned": self.val_learned,
                "best_step": self.best_step}


def condition_margins(scorer: Any, cache: Any, triplets: list) -> torch.Tensor:
    """score_c(pos) − score_c(neg) of every triplet under every condition, uniform weights: [T, C]."""
    pairs = sorted({(t.image, t.text) for t in triplets} | {t.negative_pair for t in triplets})
    saved, scorer.condition_weights = scorer.condition_weights, {}
    try:
        latents, states, mask = cache.pairs(pairs)
        with torch.inference_mode():
            per = scorer.score_conditions(latents, states, mask).double()
    finally:
        scorer.condition_weights = saved
    row = {pair: i for i, pair in enumerate(pairs)}
    pos = torch.stack([per[row[(t.image, t.text)]] for t in triplets])
    neg = torch.stack([per[row[t.negative_pair]] for t in triplets])
    return pos - neg


def _accuracy(margins: torch.Tensor, weights: torch.Tensor) -> float:
    return float(((margins @ weights) > 0).double().mean())


def fit_weights(train: torch.Tensor, val: torch.Tensor | None, steps: int = STEPS) -> WeightFit:
    """Fit w = C·softmax(θ) on train margins [T, C]; keep the step with the best held-out accuracy."""
    n_cond = train.shape[1]
    uniform = torch.ones(n_cond, dtype=torch.float64)
    tau = float((train @ uniform / n_cond).std()) + 1e-12 if len(train) > 1 else float(train.abs().mean()) + 1e-12
    theta = torch.zeros(n_cond, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=LR)
    judge = val if val is not None and len(val) else train
    best = (_accuracy(judge, uniform), 0, uniform.clone())
    for step in range(1, steps + 1):
        weights = n_cond * torch.softmax(theta, dim=0)
        loss = torch.nn.functional.softplus(-(train @ weights) / n_cond / tau).mean() + L2 * theta.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % CHECK_EVERY == 0:
            current = (n_cond * torch.softmax(theta.detach(), dim=0))
            accuracy = _accuracy(judge, current)
            if accuracy >= best[0]:  # a tie goes to the later, better-fitted step
                best = (accuracy, step, current.clone())
    weights = best[2]
    has_val = val is not None and len(val) > 0
    return WeightFit(weights.float(), _accuracy(train, uniform), _accuracy(train, weights),
                     _accuracy(val, uniform) if has_val else None, _accuracy(val, weights) if has_val else None,
                     best[1])


def tune_condition_weights(scorer: Any, cache: Any, train: list, val: list) -> dict[str, Any]:
    """Fit weights on the tuner's triplets under its current deltas, set them on `scorer`, report."""
    from discff_cli.engine.condition_weights import grid_of

    fit = fit_weights(condition_margins(scorer, cache, train), condition_margins(scorer, cache, val) if val else None)
    grid = grid_of(scorer)
    scorer.condition_weights = {key: float(w) for key, w in zip(grid, fit.weights.tolist())}
    return fit.report(grid)
