"""Model families: what the scorer needs to know about one kind of text-to-image denoiser.

The scorer (engine/scorer.py) is written once against `Family` (families/base.py): encode
prompts (the empty prompt as the family defines it), make the noisy input of a (timestep,
level) condition with the family's schedule together with the target the denoiser was trained
to predict, run one denoiser forward, and install the attention processors that read the
text-image attention term. One module per family:

- ``sd``: Stable Diffusion 1.x / 2.x, a UNet2DConditionModel on one CLIP text encoder (DDPM
  noise schedule; ε- or v-prediction, as the scheduler config says).
- ``sdxl``: SDXL, the same U-Net kind with two text encoders and the pooled ``text_embeds`` +
  ``time_ids`` added conditioning.
- ``sd3``: SD3 / SD3.5, an MMDiT SD3Transformer2DModel trained with rectified flow.

Which family a model is comes from its ``model_index.json`` (models.py); Flux and other
pipelines are refused there in one sentence.
"""

from __future__ import annotations

from typing import Any

from discff_cli.engine.families.base import Family

FAMILY_NAMES = ("sd", "sdxl", "sd3")


def family_for(parts: Any) -> Family:
    """The adapter of `parts.family` wrapped around the loaded parts."""
    if parts.family == "sdxl":
        from discff_cli.engine.families.sdxl import SDXLFamily

        return SDXLFamily(parts)
    if parts.family == "sd3":
        from discff_cli.engine.families.sd3 import SD3Family

        return SD3Family(parts)
    from discff_cli.engine.families.sd import SDFamily

    return SDFamily(parts)


__all__ = ["FAMILY_NAMES", "Family", "family_for"]
