"""Successive-halving reranking: spend U-Net passes on the candidates that can still win.

A Discffusion score is a mean over a grid of (timestep, noise level) conditions. Most
candidates of a query are far from the top after a few conditions, so scoring them on the
whole grid is wasted work. Rounds:

1. every candidate is scored on a coarse, evenly spread subset of the grid (1/8 of it, at least two
   conditions: on the demo's 5-condition grid a one-condition first round kept the full-grid top-1
   on only 70–90% of gallery queries, docs/results/eval/score_families.md);
2. while the leader is not settled, the best half survive (never fewer than two) and the
   evaluated subset doubles, the new conditions run for the survivors only;
3. it stops when one candidate is left, the grid is exhausted, or the leader's mean lead over
   the runner-up on the shared conditions is `z` standard errors clear (paired differences,
   so the per-condition offset every candidate shares cancels).

Scores of candidates that left early are estimates of their full-grid score: their mean on the
conditions they saw plus the mean shift that the candidates who stayed showed from that subset
to their final one, and never above anyone who outlasted them, so sorting by score gives
the elimination order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

START_FRACTION = 8      # the first round sees 1/START_FRACTION of the grid
MIN_START = 2           # ... and never fewer than 2 conditions: one condition ranks by its noise draw alone
MIN_SETTLED = 3         # the settled test needs 3 shared conditions: 2 give no usable standard error
SETTLED_Z = 3.0         # leader settled when its mean lead is this many standard errors


@dataclass
class PruneReport:
    """What a pruned ranking cost: U-Net passes run, and what full scoring would have run."""

    passes: int = 0
    full_passes: int = 0
    rounds: list[tuple[int, int]] = field(default_factory=list)  # (candidates, conditions evaluated) per round


def spread_order(n_steps: int, n_levels: int) -> list[tuple[int, int]]:
    """(step index, level index) pairs ordered so every prefix covers the grid evenly.

    Timesteps are taken farthest-point first; level index (position + block) % L rotates so each
    block of n_steps covers every timestep once and each timestep meets every level once overall.
    """
    steps: list[int] = [0] if n_steps else []
    while len(steps) < n_steps:
        rest = [i for i in range(n_steps) if i not in steps]
        steps.append(max(rest, key=lambda i: (min(abs(i - j) for j in steps), -i)))
    return [(s, (pos + block) % n_levels) for block in range(n_levels) for pos, s in enumerate(steps)]


def ordered_conditions(conditions: Sequence[Any]) -> list[Any]:
    """The scorer's grid (step-major, level-minor) reordered coarse-to-fine."""
    step_ids = sorted({c.step_index for c in conditions})
    levels = sorted({c.level for c in conditions})
    by_key = {(c.step_index, c.level): c for c in conditions}
    order = [by_key.get((step_ids[s], levels[l])) for s, l in spread_order(len(step_ids), len(levels))]
    order = [c for c in order if c is not None]
    return order + [c for c in conditions if c not in order]


def _settled(scores: torch.Tensor, leader: int, runner: int, z: float) -> bool:
    """Paired test on the shared conditions: is mean(leader - runner) > z standard errors?"""
    diff = scores[leader] - scores[runner]
    if diff.numel() < MIN_SETTLED:
        return False
    stderr = diff.std(unbiased=True) / math.sqrt(diff.numel())
    return bool(diff.mean() > z * max(float(stderr), 1e-12))


ScoreFn = Callable[[list[int], list[Any]], torch.Tensor]  # (candidate ids, conditions) -> [ids, conditions]


def prune_scores(score: ScoreFn, n: int, conditions: Sequence[Any], z: float = SETTLED_Z,
                 start_fraction: int = START_FRACTION) -> tuple[torch.Tensor, PruneReport]:
    """Successive-halving scores [n] for one query's n candidates, and what it cost.

    `score(ids, conds)` returns the per-condition scores of those candidates (the rerank path passes
    one that runs the U-Net, benchmarks/prune_eval.py one that replays stored scores)."""
    order = ordered_conditions(conditions)
    n_cond = len(order)
    report = PruneReport(full_passes=n * n_cond)
    per_cond = torch.full((n, n_cond), float("nan"))
    alive = list(range(n))
    seen = 0
    k = min(n_cond, max(MIN_START, math.ceil(n_cond / start_fraction)))
    eliminated: list[tuple[list[int], int]] = []  # (candidates dropped, conditions they saw)
    while n:
        new = order[seen:k]
        if new:
            per_cond[torch.tensor(alive), seen:k] = score(alive, new).float().cpu()
            report.passes += len(alive) * len(new)
        seen = k
        report.rounds.append((len(alive), k))
        if len(alive) == 1 or k == n_cond:
            break
        ranked = sorted(alive, key=lambda i: -float(per_cond[i, :k].mean()))
        if _settled(per_cond[:, :k], ranked[0], ranked[1], z):
            break
        keep = max(2, math.ceil(len(ranked) / 2))
        eliminated.append((ranked[keep:], k))
        alive = ranked[:keep]
        k = min(n_cond, 2 * k)
    return _estimates(per_cond, alive, seen, eliminated), report


def _estimates(per_cond: torch.Tensor, alive: list[int], seen: int,
               eliminated: list[tuple[list[int], int]]) -> torch.Tensor:
    """Full-grid score estimates, ordered by how long each candidate lasted (see module doc)."""
    scores = torch.full((per_cond.shape[0],), float("nan"), dtype=torch.float64)
    for i in alive:
        scores[i] = per_cond[i, :seen].double().mean()
    stayed = list(alive)
    for dropped, k in reversed(eliminated):
        if dropped:
            shift = torch.stack([scores[i] - per_cond[i, :k].double().mean() for i in stayed]).mean()
            raw = torch.stack([per_cond[i, :k].double().mean() + shift for i in dropped])
            ceiling = min(float(scores[i]) for i in stayed)
            raw = raw - max(0.0, float(raw.max()) - ceiling + 1e-6)
            for i, value in zip(dropped, raw):
                scores[i] = value
        stayed = stayed + dropped
    return scores
