"""Dynamic attention-head weighting (paper Eq. 7) during tuning.

Attr_h(A) = A_h ⊙ ∂f/∂A_h. Summed over its elements it is head h's gradient×input attribution:
how much of the matching score's margin (positive minus negative pair) flows through that head,
both directly (its LSE-pooled term) and through its effect on later layers. The gradient is the
one the training loss already computes, captured by a tensor hook on the logits (no extra pass),
and is detached: it only ever acts as a scalar multiplier. A running average of each head's
attribution becomes its weight in the head-weighted mean the scorer pools with, both in the
next training steps and at inference (saved with the deltas as `head_weights.<layer>`).
"""

from __future__ import annotations

from typing import Any

import torch

DECAY = 0.9  # running-average factor of the per-head attribution


def head_attribution(logits: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Σ_ij (A_h ⊙ ∂L/∂A_h)_ij summed over the batch: logits/grad [batch, heads, n, m] -> [heads]."""
    return (logits.float() * grad.float()).sum(dim=(-1, -2)).sum(dim=0)


def weights_from_importance(importance: torch.Tensor) -> torch.Tensor:
    """Positive head weights with mean ~1: 1 + tanh of the standardised importance.

    Bounded in (0, 2) so no head is ever switched off or allowed to dominate a layer, and
    invariant to the overall scale of the gradients (which differs by layer and timestep).
    """
    importance = importance.float()
    if importance.numel() < 2:
        return torch.ones_like(importance)
    centred = importance - importance.mean()
    scale = importance.std(unbiased=False) + 1e-3 * importance.abs().mean() + 1e-12
    return 1.0 + torch.tanh(centred / scale)


class HeadWeighting:
    """Installs logit hooks on the scored layers and turns captured gradients into head weights."""

    def __init__(self, scorer: Any, importance: dict[str, torch.Tensor] | None = None) -> None:
        self.scorer = scorer
        self.layers = list(scorer.selected)
        self.importance: dict[str, torch.Tensor] = dict(importance or {})
        self._step: dict[str, torch.Tensor] = {}

    def install(self) -> None:
        for name in self.layers:
            self.scorer.processors[name].logit_hook = self._hook

    def remove(self) -> None:
        for name in self.layers:
            self.scorer.processors[name].logit_hook = None

    def _hook(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        if logits.requires_grad:  # only in the pass autograd differentiates (also under checkpointing)
            saved = logits.detach()

            def grab(grad: torch.Tensor) -> None:
                attr = head_attribution(saved, grad).cpu()
                self._step[name] = self._step.get(name, 0) + attr

            logits.register_hook(grab)
        return logits

    def update(self) -> None:
        """After backward: fold this step's attribution (of the margin, i.e. −loss) into the weights."""
        step, self._step = self._step, {}
        for name, attr in step.items():
            if not torch.any(attr != 0):
                continue  # every triplet already met the margin: no signal this step
            current = self.scorer.head_weights.get(name)
            margin_attr = -attr / (current if current is not None else 1.0)  # undo the weight's own scaling
            old = self.importance.get(name)
            self.importance[name] = margin_attr if old is None else DECAY * old + (1 - DECAY) * margin_attr
            self.scorer.head_weights[name] = weights_from_importance(self.importance[name])
