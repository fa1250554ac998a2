"""SD3 / SD3.5: an MMDiT SD3Transformer2DModel trained with rectified flow.

Schedule (FlowMatchEulerDiscreteScheduler): σ = t / 1000 and x_t = (1 − σ)·z + σ·(s·ε_t), the
flow-matching interpolation with the same relative noise level s as the DDPM families. The
model predicts the velocity dx_t/dσ, whose true value is v = s·ε_t − z, so the
"noise-prediction error" of the other families becomes e(x, y) = ‖v̂ − v‖², the flow-matching
training loss, and every score family (engine/scores.py) keeps its meaning: `denoise` is how
much the text lowers that error below the empty prompt's. Grid: the integer-rounded timesteps
of the scheduler's own `set_timesteps` (with the model's shift).

Text, as StableDiffusion3Pipeline.encode_prompt builds it: penultimate hidden states of CLIP-L
and CLIP-G concatenated and zero-padded to the T5 width, followed by T5-XXL's 256 token states
(zeros of that shape when the pipeline has no T5, as the pipeline does); pooled = CLIP-L and
CLIP-G pooled vectors concatenated. SD3's empty prompt is the encoded "" (the pipeline has no
forced zeros). Attention term: in every joint-attention block the image queries attend to the
concatenated [image; text] keys; the text→image block of those logits, Q_img·K_textᵀ/√d, is the
cross-attention of the U-Net families and is pooled the same way (families/joint_processor.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from discff_cli.engine.families.base import Family, pack_pooled, tokenize, unpack_pooled

T5_LENGTH = 256  # StableDiffusion3Pipeline's default max_sequence_length


class SD3Family(Family):
    """SD3-medium, SD3.5-medium/large (dual-attention blocks keep their image-only attn2 untouched)."""

    name = "sd3"

    @property
    def hidden_dim(self) -> int:
        return int(self.parts.unet.config.joint_attention_dim)

    @property
    def pooled_dim(self) -> int:
        return int(self.parts.unet.config.pooled_projection_dim)

    def timesteps(self, steps: int) -> list[int]:
        self.parts.scheduler.set_timesteps(steps)
        return [int(round(float(t))) for t in self.parts.scheduler.timesteps]

    def sigmas(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timesteps.float() / float(self.parts.scheduler.config.num_train_timesteps)

    def noisy(self, latents: torch.Tensor, timesteps: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self.sigmas(timesteps).view(-1, 1, 1, 1)
        latents = latents.to(noise.device)
        return (1 - sigma) * latents + sigma * noise, noise - latents

    def encode(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        clip_length = self.parts.tokenizers[0].model_max_length
        hidden, pooled, masks = [], [], []
        for tokenizer, encoder in zip(self.parts.tokenizers[:2], self.parts.text_encoders[:2]):
            tok = tokenize(tokenizer, texts, clip_length)
            out = encoder(tok.input_ids.to(device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled.append(out[0])
            masks.append(tok.attention_mask.bool())
        clip = torch.cat(hidden, dim=-1)
        clip = torch.nn.functional.pad(clip, (0, self.hidden_dim - clip.shape[-1]))
        t5, t5_mask = self._t5(texts, device, clip.dtype)
        states = torch.cat([clip, t5], dim=1)
        return pack_pooled(states, torch.cat(pooled, dim=-1)), torch.cat([masks[0], t5_mask], dim=1)

    def _t5(self, texts: Sequence[str], device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.parts.text_encoders[2] if len(self.parts.text_encoders) > 2 else None
        if encoder is None:
            zeros = torch.zeros(len(texts), T5_LENGTH, self.hidden_dim, device=device, dtype=dtype)
            return zeros, torch.zeros(len(texts), T5_LENGTH, dtype=torch.bool)
        tok = tokenize(self.parts.tokenizers[2], texts, T5_LENGTH)
        return encoder(tok.input_ids.to(device))[0].to(dtype), tok.attention_mask.bool()

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        hidden, pooled = unpack_pooled(states.to(noisy.dtype), self.hidden_dim, self.pooled_dim)
        return self.parts.unet(hidden_states=noisy, timestep=timesteps.to(noisy.dtype), encoder_hidden_states=hidden,
                               pooled_projections=pooled, return_dict=True).sample

    def attention_layers(self) -> list[str]:
        """Every joint-attention module (`transformer_blocks.N.attn`), in block order."""
        names = [name for name, _ in self.parts.unet.named_modules()
                 if name.startswith("transformer_blocks.") and name.endswith(".attn")]
        return sorted(names, key=lambda n: int(n.split(".")[1]))

    def make_processor(self, name: str, sink: Any, lse_lambda: float, record: bool) -> torch.nn.Module:
        from discff_cli.engine.families.joint_processor import JointLSEProcessor

        return JointLSEProcessor(name, sink, lse_lambda, record=record)

    def fingerprint_modules(self) -> dict[str, Any]:
        modules = {"transformer": self.parts.unet}
        for index, encoder in enumerate(self.parts.text_encoders):
            if encoder is not None:
                modules["text_encoder" + (f"_{index + 1}" if index else "")] = encoder
        return modules
