"""The score families: several readings of the same U-Net passes, combined per (pair, condition).

One U-Net pass on z_t = √ᾱ_t·z + √(1−ᾱ_t)·(s·ε_t) conditioned on text y gives two readings:

- the attention term A(x, y): paper Eq. 4, LogSumExp-pooled cross-attention logits
  (engine/processor.py), mean over heads and the selected layers;
- the noise-prediction error e(x, y) = ‖ε̂_θ(z_t, t, τ(y)) − s·ε_t‖², summed over the latent's
  elements, against the noise actually added.

One more pass per image and condition, under the empty prompt, gives e(x, ∅). It does not depend
on the text, so the engine caches it and `index build --latents` stores it.

The families (higher = better match):

- ``attention``: A(x, y), Eq. 4 alone — what the engine scored before the denoising term existed.
- ``denoise``: (e(x, ∅) − e(x, y)) / D, D = number of latent elements: how much the text lowers
  the mean squared error below the image's own empty-prompt error. The subtraction is DiffusionITM's
  normalisation for image retrieval (Krojer et al. 2023, McGill-NLP/diffusion-itm, `--img_retrieval`):
  without it, images that are easy to denoise win every query whatever it says.
- ``discffusion``: A(x, y) + (‖ε − ε̂_∅‖₂ − ‖ε − ε̂_y‖₂), exactly as the authors' code combines them
  (eric-ai-lab/Discffusion, diffusers/src/diffusers/models/unet_2d_condition.py, end of
  `forward`: ``bias = torch.norm(noise - noise_uncond, p=2, dim=1) - torch.norm(noise - noise_cond,
  p=2, dim=1); dbscore = ascore + bias``, with ``use_bias=True`` the default of its pipeline). Norms,
  not squared norms, as there. Its ``ascore`` averages only the last cross-attention block of each
  of down, mid and up (`--layers ref` selects those layers here); our default keeps `--layers all`.

Every family is a per-condition value, so successive-halving pruning, tuning and the mean over the
grid work the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from discff_cli.engine.config import SCORES

NEEDS_EMPTY = {"attention": False, "denoise": True, "discffusion": True}
NEEDS_ATTENTION = {"attention": True, "denoise": False, "discffusion": True}
PASSES = {  # U-Net passes per pair and condition, and per image and condition (cached), for the README/--help
    "attention": "1 per pair",
    "denoise": "1 per pair + 1 per image (empty prompt, cached)",
    "discffusion": "1 per pair + 1 per image (empty prompt, cached)",
}


@dataclass
class Readings:
    """What one set of U-Net passes measured, each [pairs, conditions] in float32.

    `attention` is None when no requested score needs it (the passes then run on SDPA);
    `empty_error` is None when no requested score needs the empty prompt.
    """

    error: torch.Tensor
    attention: torch.Tensor | None = None
    empty_error: torch.Tensor | None = None
    elements: int = 1  # latent elements per item, D

    def score(self, family: str) -> torch.Tensor:
        """The per-condition score of `family` [pairs, conditions]."""
        check_score(family)
        if family == "attention":
            return _need(self.attention, family, "the attention term")
        empty = _need(self.empty_error, family, "the empty-prompt error")
        if family == "denoise":
            return (empty - self.error) / self.elements
        attention = _need(self.attention, family, "the attention term")
        return attention + (empty.clamp_min(0).sqrt() - self.error.clamp_min(0).sqrt())


def check_score(family: str) -> None:
    if family not in SCORES:
        raise ValueError(f"unknown score '{family}'; expected one of {', '.join(SCORES)}")


def needs(families: tuple[str, ...] | list[str]) -> tuple[bool, bool]:
    """(attention needed, empty prompt needed) for a set of families."""
    for family in families:
        check_score(family)
    return any(NEEDS_ATTENTION[f] for f in families), any(NEEDS_EMPTY[f] for f in families)


def _need(value: torch.Tensor | None, family: str, what: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"score '{family}' needs {what}, which these readings did not compute")
    return value
