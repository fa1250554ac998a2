"""Rank pairs with one or several score families: the pair-level path every command goes through.

Why one module: search, `--queries`, the Ray actors, the service, `eval`, the demo's gallery and the
Python API all need "these pairs, these families, full grid or pruned, and what it cost". Doing that
in one place is what makes `--prune` mean the same everywhere and the pass counts in `--json` true.

Two strategies over the same U-Net readings (engine/scorer.py):

- full: every pair on the whole (timestep, level) grid, once, every family read from those passes;
- pruned (`--prune`): the pairs are one query's candidates; each family runs successive halving
  (engine/prune.py). The families share one memo of (pair, condition) readings, so a condition a
  candidate already ran for one family is never run again for another.

Images that cannot be decoded are learnt from the VAE's own decode and left out (`unreadable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch


@dataclass
class Ranking:
    """What ranking some pairs measured and cost.

    `scores[family]` holds one mean score per *readable* pair (`readable` are their input positions);
    with pruning, candidates that left early carry estimates (engine/prune.py). `unet_passes` counts
    every U-Net item this call ran, empty-prompt passes included; `prune` per family when pruned."""

    scores: dict[str, np.ndarray]
    readable: list[int]
    unreadable: dict[int, Exception] = field(default_factory=dict)
    unet_passes: int = 0
    empty_prompt_passes: int = 0
    full_passes: int = 0  # what the full grid would have run for these pairs (empty prompt not included)
    prune: dict[str, Any] | None = None  # family -> PruneReport

    @property
    def values(self) -> np.ndarray:
        """The first family's scores (the configured score when no family was named)."""
        return next(iter(self.scores.values()))

    def stats(self) -> dict[str, Any]:
        """The JSON-ready cost of this ranking."""
        out: dict[str, Any] = {"unet_passes": self.unet_passes, "empty_prompt_passes": self.empty_prompt_passes,
                               "full_grid_passes": self.full_passes}
        if self.prune is not None:
            out["prune"] = {f: {"passes": r.passes, "rounds": [list(x) for x in r.rounds]} for f, r in self.prune.items()}
        return out


def rank_pairs(scorer: Any, images: Sequence[Any], texts: Sequence[str], families: tuple[str, ...], prune: bool,
               keys: Sequence[str] | None = None, progress: Any = None) -> Ranking:
    """Score pair i = (images[i], texts[i]) with every family, on the full grid or pruned."""
    from discff_cli.engine.scores import check_score

    if len(images) != len(texts):
        raise ValueError("images and texts must have the same length")
    for family in families:
        check_score(family)
    passes, empty = scorer.unet_passes, scorer.empty_passes
    latents, bad = scorer.encode_readable(images, keys)
    readable = [i for i in range(len(images)) if i not in bad]
    text_states, token_mask = scorer.encode_texts([texts[i] for i in readable]) if readable else (None, None)
    n = len(readable)
    with torch.inference_mode():
        if not n:
            scores, reports = {f: np.zeros(0) for f in families}, ({} if prune else None)
        elif prune:
            scores, reports = _pruned(scorer, latents, text_states, token_mask, families)
        else:
            scores, reports = _full(scorer, latents, text_states, token_mask, families, progress), None
    return Ranking(scores, readable, bad, scorer.unet_passes - passes, scorer.empty_passes - empty,
                   n * len(scorer.conditions), reports)


def _full(scorer: Any, latents: torch.Tensor, text_states: torch.Tensor, token_mask: torch.Tensor,
          families: tuple[str, ...], progress: Any) -> dict[str, np.ndarray]:
    readings = scorer.read_conditions(latents, text_states, token_mask, None, families, progress)
    return {f: readings.score(f).mean(dim=1).double().numpy() for f in families}


def _pruned(scorer: Any, latents: torch.Tensor, text_states: torch.Tensor, token_mask: torch.Tensor,
            families: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from discff_cli.engine.prune import prune_scores

    memo = ReadingMemo(scorer, latents, text_states, token_mask, families)
    scores, reports = {}, {}
    for family in families:
        values, reports[family] = prune_scores(lambda ids, conds: memo.score(family, ids, conds),
                                               latents.shape[0], scorer.conditions)
        scores[family] = values.numpy()
    return scores, reports


class ReadingMemo:
    """Per-condition scores of every family for (pair, condition) items, each item run at most once."""

    def __init__(self, scorer: Any, latents: torch.Tensor, text_states: torch.Tensor,
                 token_mask: torch.Tensor | None, families: tuple[str, ...]) -> None:
        self.scorer, self.latents, self.text_states, self.token_mask = scorer, latents, text_states, token_mask
        self.families = families
        self.column = {(c.step_index, c.level): j for j, c in enumerate(scorer.conditions)}
        shape = (latents.shape[0], len(scorer.conditions))
        self.values = {f: torch.full(shape, float("nan")) for f in families}

    def score(self, family: str, ids: list[int], conditions: list[Any]) -> torch.Tensor:
        cols = [self.column[(c.step_index, c.level)] for c in conditions]
        todo = [(p, c) for p in ids for c, j in zip(conditions, cols) if torch.isnan(self.values[family][p, j])]
        if todo:
            readings = self.scorer.read_items(todo, self.latents, self.text_states, self.token_mask, self.families)
            for f in self.families:
                column = readings.score(f)[:, 0].float()
                for (p, c), value in zip(todo, column):
                    self.values[f][p, self.column[(c.step_index, c.level)]] = value
        return self.values[family][torch.tensor(ids)][:, torch.tensor(cols)]
