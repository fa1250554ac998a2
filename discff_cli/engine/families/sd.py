"""Stable Diffusion 1.x / 2.x: a UNet2DConditionModel conditioned on one CLIP text encoder.

Schedule (DDPM, read from the model's scheduler config as a DDIMScheduler):
z_t = √ᾱ_t·z + √(1−ᾱ_t)·(s·ε_t). The training target is the noise s·ε_t for ε-prediction
models (SD 1.x, SD 2.x-base) and the velocity √ᾱ_t·(s·ε_t) − √(1−ᾱ_t)·z for v-prediction
ones (SD 2.x at 768), so the error is always the denoiser's own training loss. The empty
prompt is the tokenized "" as the pipelines encode it. Attention term: every attn2
(cross-attention) layer, read by engine/processor.py.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from discff_cli.engine.families.base import Family, tokenize


class SDFamily(Family):
    """SD 1.x / 2.x."""

    name = "sd"

    def timesteps(self, steps: int) -> list[int]:
        self.parts.scheduler.set_timesteps(steps)
        return [int(t) for t in self.parts.scheduler.timesteps]

    def noisy(self, latents: torch.Tensor, timesteps: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alphas = self.parts.scheduler.alphas_cumprod[timesteps].float()
        a = alphas.sqrt().view(-1, 1, 1, 1)
        b = (1 - alphas).sqrt().view(-1, 1, 1, 1)
        latents = latents.to(noise.device)
        target = a * noise - b * latents if self.prediction_type == "v_prediction" else noise
        return a * latents + b * noise, target

    @property
    def prediction_type(self) -> str:
        return str(getattr(self.parts.scheduler.config, "prediction_type", "epsilon"))

    def encode(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        tok = tokenize(self.parts.tokenizer, texts)
        hidden = self.parts.text_encoder(tok.input_ids.to(device))[0]
        return hidden, tok.attention_mask.bool()

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.parts.unet(noisy, timesteps, encoder_hidden_states=states.to(noisy.dtype)).sample

    def attention_layers(self) -> list[str]:
        from discff_cli.engine.layers import cross_attention_layers

        return cross_attention_layers(self.parts.unet)

    def make_processor(self, name: str, sink: Any, lse_lambda: float, record: bool) -> torch.nn.Module:
        from discff_cli.engine.processor import LSECrossAttnProcessor

        return LSECrossAttnProcessor(name, sink, lse_lambda, record=record)

    def fingerprint_modules(self) -> dict[str, Any]:
        return {"unet": self.parts.unet, "text_encoder": self.parts.text_encoder}
