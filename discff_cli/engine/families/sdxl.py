"""SDXL: the SD U-Net kind with two text encoders and added (pooled text + size) conditioning.

Text: the penultimate hidden states of CLIP ViT-L (`text_encoder`) and OpenCLIP bigG
(`text_encoder_2`, with projection) concatenated per token, and bigG's pooled, projected
vector as ``text_embeds``, exactly as StableDiffusionXLPipeline.encode_prompt builds them;
``time_ids`` = (original size, crop top-left, target size) = (R, R, 0, 0, R, R) at the model's
resolution R, the pipeline's values for an uncropped square image. The empty prompt is SDXL's
unconditional input: all-zero hidden states and pooled vector when the pipeline's
``force_zeros_for_empty_prompt`` is set (the default, and what SDXL base ships), else the
encoded "". The schedule, target and attention term are SD's (families/sd.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from discff_cli.engine.families.base import pack_pooled, tokenize, unpack_pooled
from discff_cli.engine.families.sd import SDFamily


class SDXLFamily(SDFamily):
    """SDXL base (text-to-image; the refiner has no first text encoder and is refused at load)."""

    name = "sdxl"

    @property
    def hidden_dim(self) -> int:
        return int(self.parts.unet.config.cross_attention_dim)

    @property
    def pooled_dim(self) -> int:
        return int(self.parts.text_encoders[1].config.projection_dim)

    def encode(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled, mask = [], None, None
        for tokenizer, encoder in zip(self.parts.tokenizers, self.parts.text_encoders):
            tok = tokenize(tokenizer, texts)
            out = encoder(tok.input_ids.to(device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled, mask = out[0], tok.attention_mask.bool() if mask is None else mask
        return pack_pooled(torch.cat(hidden, dim=-1), pooled), mask

    def encode_empty(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        states, mask = self.encode([""], device)
        if self.parts.pipeline_config.get("force_zeros_for_empty_prompt", True):
            states = torch.zeros_like(states)
        return states, mask

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        hidden, pooled = unpack_pooled(states.to(noisy.dtype), self.hidden_dim, self.pooled_dim)
        size = self.parts.resolution
        time_ids = torch.tensor([size, size, 0, 0, size, size], device=noisy.device, dtype=noisy.dtype)
        added = {"text_embeds": pooled, "time_ids": time_ids.expand(noisy.shape[0], -1)}
        return self.parts.unet(noisy, timesteps, encoder_hidden_states=hidden, added_cond_kwargs=added).sample

    def fingerprint_modules(self) -> dict[str, Any]:
        return {"unet": self.parts.unet, "text_encoder": self.parts.text_encoders[0],
                "text_encoder_2": self.parts.text_encoders[1]}
