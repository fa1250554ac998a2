"""The score families: several readings of the same U-Net passes, combined per (pair, condition).

One U-Net pass on z_t = √ᾱ_t·z + √(1−ᾱ_t)·(s·ε_t) conditioned on text y gives two readings:

- the attention term A(x, y): paper Eq. 4, LogSumExp-pooled cross-attention logits
  (engine/processor.py), mean over heads and the selected layers;
- the noise-prediction error e(x, y) = ‖ε̂_θ(z_t, t, τ(y)) − s·ε_t‖², summed over the latent's
  elements, against the noise actually added.

One more pass per image and condition, under the empty prompt, gives e(x, ∅) and A(x, ∅). Neither
depends on the text, so the engine caches them and `index build --latents` stores them.

The families (higher = better match), each a per-condition value averaged over the grid:

- ``attention``: A(x, y), Eq. 4 alone.
- ``denoise``: (e(x, ∅) − e(x, y)) / D, D = number of latent elements: how much the text lowers the
  *mean squared* error below the image's own empty-prompt error. Same idea as DiffusionITM's
  normalisation (subtract the image's own difficulty, without which images that are easy to denoise
  win every query), but squared errors averaged over D rather than plain L2 norms: it weighs large
  residuals more, and is on a per-element scale that does not grow with the latent size.
- ``diffusion_itm``: ‖ε − ε̂_∅‖₂ − ‖ε − ε̂_y‖₂, plain norms. Exactly DiffusionITM's `--img_retrieval`
  score (Krojer et al. 2023; McGill-NLP/diffusers, pipeline_stable_diffusion_img2img.py around
  L728–761: ``dist = torch.norm(noise - noise_pred_text, p=2, dim=1)``, ``base_dist = torch.norm(noise -
  noise_pred_uncond, p=2, dim=1)``, ``dists.append(dist - base_dist)``; the retrieval score is
  −mean_t of those dists).
- ``discffusion``: ½(A(x, y) + A(x, ∅)) + (‖ε − ε̂_∅‖₂ − ‖ε − ε̂_y‖₂), the authors' score of one pair
  (eric-ai-lab/Discffusion). Their pipeline (pipeline_dsd.py) runs the U-Net on the batch [∅; y];
  each attention processor returns the per-token LogSumExp (attention_processor.py L412,
  ``logscore = torch.logsumexp(attention_scores, dim=-1)``) and the U-Net's `forward`
  (unet_2d_condition.py around L880–894) takes ``.mean()`` of it over the *whole* batch, heads and
  tokens, then adds ``bias = torch.norm(noise - noise_uncond, p=2, dim=1) - torch.norm(noise -
  noise_cond, p=2, dim=1)`` (``use_bias=True``, its default): at one caption that mean is
  ½(A(x, y) + A(x, ∅)). What is deliberately not copied: with several captions in one batch their
  ``.mean()`` mixes every caption's attention into one shared value, so a pair's score depends on
  what else was batched with it; here A(x, ∅) comes from the image's own empty-prompt pass, so
  every pair is scored alone and equals their batch-of-one score. Their `ascore` averages only the
  last cross-attention block of each of down, mid and up (`--layers ref`); our default keeps
  `--layers all`.

Deviations shared by every family (docs/architecture.md, "The scores"): the DDIM grid × relative noise levels, the
encoder mean (never `sample()`), ε_t seeded per timestep and shared by every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from discff_cli.engine.config import SCORES

NEEDS_EMPTY = {"attention": False, "denoise": True, "diffusion_itm": True, "discffusion": True}
NEEDS_ATTENTION = {"attention": True, "denoise": False, "diffusion_itm": False, "discffusion": True}
NEEDS_EMPTY_ATTENTION = {"attention": False, "denoise": False, "diffusion_itm": False, "discffusion": True}
PASSES = {  # U-Net passes per pair and condition, and per image and condition (cached), for the README/--help
    "attention": "1 per pair",
    "denoise": "1 per pair + 1 per image (empty prompt, cached)",
    "diffusion_itm": "1 per pair + 1 per image (empty prompt, cached)",
    "discffusion": "1 per pair + 1 per image (empty prompt, cached)",
}


@dataclass(frozen=True)
class Needs:
    """Which readings a set of families needs: the attention term of the text pass, the empty-prompt
    pass, and the attention term of the empty-prompt pass."""

    attention: bool
    empty: bool
    empty_attention: bool


@dataclass
class Readings:
    """What one set of U-Net passes measured, each [pairs, conditions] in float32.

    `attention` is None when no requested score needs it (the passes then run on SDPA);
    `empty_error` / `empty_attention` are None when no requested score needs them.
    """

    error: torch.Tensor
    attention: torch.Tensor | None = None
    empty_error: torch.Tensor | None = None
    elements: int = 1  # latent elements per item, D
    empty_attention: torch.Tensor | None = None

    def score(self, family: str) -> torch.Tensor:
        """The per-condition score of `family` [pairs, conditions]."""
        check_score(family)
        if family == "attention":
            return _need(self.attention, family, "the attention term")
        empty = _need(self.empty_error, family, "the empty-prompt error")
        if family == "denoise":
            return (empty - self.error) / self.elements
        gap = empty.clamp_min(0).sqrt() - self.error.clamp_min(0).sqrt()  # ‖ε − ε̂_∅‖₂ − ‖ε − ε̂_y‖₂
        if family == "diffusion_itm":
            return gap
        attention = _need(self.attention, family, "the attention term")
        empty_attention = _need(self.empty_attention, family, "the empty-prompt attention term")
        return 0.5 * (attention + empty_attention) + gap


def check_score(family: str) -> None:
    """A ValueError naming the families when `family` is not one of them."""
    if family not in SCORES:
        raise ValueError(f"unknown score '{family}'; expected one of {', '.join(SCORES)}")


def needs(families: tuple[str, ...] | list[str]) -> Needs:
    """The readings a set of families needs (so no pass computes what nobody reads)."""
    for family in families:
        check_score(family)
    return Needs(any(NEEDS_ATTENTION[f] for f in families), any(NEEDS_EMPTY[f] for f in families),
                 any(NEEDS_EMPTY_ATTENTION[f] for f in families))


def _need(value: torch.Tensor | None, family: str, what: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"score '{family}' needs {what}, which these readings did not compute")
    return value
